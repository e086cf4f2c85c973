"""Home.py: first-admin bootstrap, login, lockout, logout, language, navigation by permission."""
from __future__ import annotations

from datetime import timedelta

from core import auth, namespaces, users
from core.config import Config
from core.settings import open_store
from tests.app.conftest import EN, ZH, login, new_app, texts
from tests.conftest import PASSWORD


def _nav_paths(at) -> set[str]:
    """The url paths of the pages the navigation offers (what the sidebar shows)."""
    return {p.url_path or "(default)" for section in at.session_state["_wb_nav"].values() for p in section}


def test_first_start_offers_bootstrap_then_signs_in(home):
    at = new_app()
    assert ZH["bootstrap.title"] in texts(at)
    at.text_input(key="boot_username").input("chief")
    at.text_input(key="boot_pw1").input(PASSWORD)
    at.text_input(key="boot_pw2").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert ZH["overview.title"].format(name="chief") in texts(at)
    store = open_store(Config.from_env())
    assert users.count(store) == 1
    # a second browser now gets the login page, not the bootstrap form
    assert ZH["login.title"] in texts(new_app())


def test_bootstrap_mismatch_creates_nobody(home):
    at = new_app()
    at.text_input(key="boot_pw1").input(PASSWORD)
    at.text_input(key="boot_pw2").input(PASSWORD + "x")
    at.button[0].click().run()
    assert ZH["account.mismatch"] in texts(at)
    assert users.count(open_store(Config.from_env())) == 0


def test_login_failure_then_success(store, admin):
    at = login(new_app(), "admin", "wrong-password")
    assert ZH["auth.error.bad_credentials"] in texts(at)
    assert at.session_state["_wb_ctx"].principal is None
    login(at, "admin", PASSWORD)
    assert ZH["overview.title"].format(name="admin") in texts(at)
    assert at.session_state["_wb_ctx"].principal.username == "admin"


def test_lockout_is_shown_in_words_and_admin_unlock_lifts_it(store, admin, team):
    at = new_app()
    for _ in range(4):
        login(at, "editor", "nope")
        assert ZH["auth.error.bad_credentials"] in texts(at)
    login(at, "editor", "nope")
    assert "15" in texts(at) and ZH["auth.error.locked"].split("，")[0] in texts(at)
    login(at, "editor", PASSWORD)  # the right password is refused while locked
    assert at.session_state["_wb_ctx"].principal is None
    assert ZH["auth.error.locked"].format(minutes=15) in texts(at)

    boss = login(new_app(), "admin", PASSWORD)
    boss.switch_page("pages/users.py").run()
    boss.selectbox(key="mu_user").select("editor").run()
    assert ZH["users.locked_until"].split("{")[0] in texts(boss)
    boss.button(key="mu_unlock").click().run()
    assert not boss.exception

    login(at, "editor", PASSWORD)
    assert at.session_state["_wb_ctx"].principal.username == "editor"


def test_lock_expires_by_itself(store, admin, team):
    """The lock is temporary: 15 minutes after the last failure the user may log in again."""
    for _ in range(5):
        try:
            auth.authenticate(store, "viewer", "nope")
        except Exception:
            pass
    assert auth.lock_status(store, "viewer") is not None
    later = auth.lock_status(store, "viewer") + timedelta(seconds=1)
    assert auth.lock_status(store, "viewer", now=later) is None
    assert auth.authenticate(store, "viewer", PASSWORD, now=later).principal.username == "viewer"


def test_logout_ends_session_and_invalidates_cookie(store, admin):
    at = login(new_app(), "admin", PASSWORD)
    key = auth.cookie_key(store.config)
    cookie = auth.issue_cookie("admin", key, store.config["cookie_expiry_days"])
    assert auth.resume_from_cookie(store, cookie, key) is not None
    at.sidebar.button(key="wb_logout").click().run()
    assert ZH["login.title"] in texts(at)
    assert at.session_state["_wb_ctx"].principal is None
    assert auth.resume_from_cookie(store, cookie, key) is None
    assert store.execute("SELECT count(*) AS n FROM audit_logs WHERE action = 'auth.logout'")[0]["n"] == 1


def test_disabled_user_is_signed_out_on_next_render(store, admin, team):
    at = login(new_app(), "editor", PASSWORD)
    assert at.session_state["_wb_ctx"].principal.username == "editor"
    users.set_active(store, admin, "editor", False)
    at.run()
    assert at.session_state["_wb_ctx"].principal is None
    assert ZH["login.title"] in texts(at)


def test_language_switch_is_remembered(store, admin):
    at = login(new_app(), "admin", PASSWORD)
    at.sidebar.selectbox(key="wb_lang_picker").select("English").run()
    assert EN["overview.title"].format(name="admin") in texts(at)
    assert users.get(store, admin, "admin")["language"] == "en"
    again = login(new_app(), "admin", PASSWORD)  # a new session starts in English
    assert EN["overview.title"].format(name="admin") in texts(again)


def test_admin_sees_every_settings_page(store, admin):
    at = login(new_app(), "admin", PASSWORD)
    assert {"(default)", "me", "spaces", "people", "audit-log", "system-settings"} <= _nav_paths(at)


def test_viewer_sees_no_admin_pages_and_core_refuses_admin_actions(store, admin, team):
    at = login(new_app(), "viewer", PASSWORD)
    paths = _nav_paths(at)
    assert "people" not in paths and "system-settings" not in paths and "audit-log" not in paths
    assert {"(default)", "me", "spaces"} <= paths
    # whatever a crafted request tries, core refuses it
    viewer = at.session_state["_wb_ctx"].principal
    import pytest

    from core.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        users.create(store, viewer, "sneaky", PASSWORD, is_platform_admin=True)
    with pytest.raises(PermissionDenied):
        namespaces.add_member(store, viewer, "alpha", "viewer", "namespace_admin")
    assert namespaces.list_members(store, admin, "alpha")[-1]["role"] == "viewer"


def test_namespace_admin_sees_audit_but_not_users(store, admin, team):
    at = login(new_app(), "nsadmin", PASSWORD)
    paths = _nav_paths(at)
    assert "audit-log" in paths and "people" not in paths and "system-settings" not in paths


def test_must_change_password_allows_only_the_account_page(store, admin, team):
    temporary = users.reset_password(store, admin, "editor")
    at = login(new_app(), "editor", temporary)
    assert _nav_paths(at) == {"(default)"}  # the account page only
    assert ZH["account.must_change"] in texts(at)
    at.text_input(key="pw_current").input(temporary)
    at.text_input(key="pw_new").input("brand-new-pass-1")
    at.text_input(key="pw_confirm").input("brand-new-pass-1")
    at.button(key="FormSubmitter:password_form-" + ZH["account.change_password"]).click().run()
    assert not at.exception
    assert {"(default)", "me"} <= _nav_paths(at)
    assert auth.authenticate(store, "editor", "brand-new-pass-1").principal.username == "editor"


def test_a_busy_store_is_said_in_words_not_a_traceback(store, admin, monkeypatch):
    """Another process holds the store: the page says 'metadata store busy' and what to do."""
    import threading

    at = login(new_app(), "admin", PASSWORD)
    monkeypatch.setenv("DOCETL_WB_STORE_LOCK_TIMEOUT_SECONDS", "0.3")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        holding.wait(10)
        at.run()
    finally:
        release.set()
        holder.join()
    assert not at.exception
    assert ZH["error.store_busy"].split("：")[0] in texts(at)
    at.run()  # once the store is free again the page is back
    assert ZH["overview.title"].format(name="admin") in texts(at)
