"""Every page renders for every role, and the settings pages do what they say."""
from __future__ import annotations

import pytest

from core import auth, users
from core.config import Config
from core.settings import open_store
from tests.app.conftest import ZH, login, new_app, texts
from tests.conftest import PASSWORD

WORKBENCH = {"pages/data_center.py", "pages/execute.py", "pages/runs.py"}  # everyone with VIEW somewhere
PAGES = ["pages/overview.py", "pages/account.py", "pages/namespaces.py", "pages/users.py", "pages/audit.py",
         "pages/system.py", *sorted(WORKBENCH)]
ALLOWED = {
    "platform_admin": set(PAGES),
    "nsadmin": {"pages/overview.py", "pages/account.py", "pages/namespaces.py", "pages/audit.py", *WORKBENCH},
    "editor": {"pages/overview.py", "pages/account.py", "pages/namespaces.py", *WORKBENCH},
    "viewer": {"pages/overview.py", "pages/account.py", "pages/namespaces.py", *WORKBENCH},
}


@pytest.mark.parametrize("who", list(ALLOWED))
def test_every_allowed_page_renders_without_error(store, team, who):
    username = "admin" if who == "platform_admin" else who
    at = login(new_app(), username, PASSWORD)
    for page in sorted(ALLOWED[who]):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert at.title, page
    for page in sorted(set(PAGES) - ALLOWED[who]):
        with pytest.raises(ValueError):  # not in this user's navigation at all
            at.switch_page(page)


def _admin_on(page: str):
    at = login(new_app(), "admin", PASSWORD)
    return at.switch_page(page).run()


def test_create_user_with_generated_password_shows_it_once(store, admin):
    at = _admin_on("pages/users.py")
    at.text_input(key="cu_username").input("newbie")
    at.button(key="FormSubmitter:create_user-" + ZH["users.create"]).click().run()
    assert not at.exception
    shown = [c.value for c in at.code]
    assert len(shown) == 1
    login_result = auth.authenticate(store, "newbie", shown[0])
    assert login_result.must_change_password
    at.run()
    assert not at.code  # shown once only


def test_disable_needs_confirmation(store, admin, team):
    at = _admin_on("pages/users.py")
    at.selectbox(key="mu_user").select("editor").run()
    at.button(key="mu_active").click().run()
    assert users.get(store, admin, "editor")["active"]  # nothing happened yet: a confirmation is asked
    assert ZH["users.confirm_active"].format(user="editor", action=ZH["users.disable"]) in texts(at)
    at.button(key="mu_active_yes").click().run()
    assert not users.get(store, admin, "editor")["active"]


def test_reset_password_cancel_changes_nothing(store, admin, team):
    at = _admin_on("pages/users.py")
    at.selectbox(key="mu_user").select("viewer").run()
    at.button(key="mu_reset").click().run()
    at.button(key="mu_reset_no").click().run()
    assert auth.authenticate(store, "viewer", PASSWORD).principal.username == "viewer"


def test_namespace_admin_grants_and_removes_members(store, admin, team):
    at = login(new_app(), "nsadmin", PASSWORD)
    at.switch_page("pages/namespaces.py").run()
    at.selectbox(key="ns_members_of").select("alpha").run()
    at.selectbox(key="gm_user").select("outsider")  # form widgets: values travel with the submit
    at.selectbox(key="gm_role").select(ZH["role.editor"])
    at.button(key="FormSubmitter:grant_member-" + ZH["namespaces.grant"]).click().run()
    assert not at.exception
    from core import namespaces

    assert {"outsider": "editor"}.items() <= {m["username"]: m["role"] for m in
                                              namespaces.list_members(store, admin, "alpha")}.items()
    at.selectbox(key="rm_user").select("outsider").run()
    at.button(key="rm_member").click().run()
    at.button(key="rm_member_yes").click().run()
    assert "outsider" not in {m["username"] for m in namespaces.list_members(store, admin, "alpha")}


def test_viewer_cannot_grant_from_the_page(store, team):
    at = login(new_app(), "viewer", PASSWORD)
    at.switch_page("pages/namespaces.py").run()
    assert not [f for f in at.button if "grant_member" in (f.key or "")]


def test_create_namespace_with_bad_name_says_why(store, admin):
    at = _admin_on("pages/namespaces.py")
    at.text_input(key="ns_name").input("Bad Name!")
    at.button(key="FormSubmitter:create_ns-" + ZH["namespaces.create"]).click().run()
    assert ZH["namespace.error.name"].format(name="Bad Name!") in texts(at)
    assert not (store.config.docetl_dir / "Bad Name!").exists()


def test_audit_page_filters_and_exports(store, admin, team):
    at = _admin_on("pages/audit.py")
    at.text_input(key="au_action").input("member.*").run()
    table = at.dataframe[0].value
    assert len(table) == 4 and set(table.iloc[:, 2]) == {"member.grant"}
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [ZH["audit.export_csv"], ZH["audit.export_json"]]


def test_namespace_admin_audit_is_limited_to_own_namespace(store, admin, team):
    at = login(new_app(), "nsadmin", PASSWORD)
    at.switch_page("pages/audit.py").run()
    namespaces_seen = set(at.dataframe[0].value.iloc[:, 4])
    assert namespaces_seen == {"alpha"}


def test_system_page_rejects_bad_value_and_saves_good_one(store, admin):
    at = _admin_on("pages/system.py")
    at.selectbox(key="set_key").select("login_max_failures — " + ZH["setting.login_max_failures"])
    at.text_input(key="set_value").input("many")
    at.button(key="FormSubmitter:edit_setting-" + ZH["common.save"]).click().run()
    assert "login_max_failures" in texts(at) and "many" in texts(at)
    at.text_input(key="set_value").input("3")
    at.button(key="FormSubmitter:edit_setting-" + ZH["common.save"]).click().run()
    assert open_store(Config.from_env()).config["login_max_failures"] == 3


def test_self_registration_only_when_allowed_and_without_namespace(store, admin):
    from core import namespaces, settings

    assert not [e for e in new_app().expander if ZH["register.title"] in e.label]  # off by default
    settings.update(store, admin, "allow_registration", True)
    at = new_app()
    at.text_input(key="reg_username").input("newcomer")
    at.text_input(key="reg_pw1").input(PASSWORD)
    at.text_input(key="reg_pw2").input(PASSWORD)
    at.button(key="FormSubmitter:register_form-" + ZH["register.submit"]).click().run()
    assert ZH["register.done"] in texts(at)
    login(at, "newcomer", PASSWORD)
    assert ZH["overview.no_namespace"] in texts(at)
    assert namespaces.list_visible(store, at.session_state["_wb_ctx"].principal) == []
