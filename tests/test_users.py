"""Accounts: usernames, password rules, change and reset, activation, admins, preferences, and the
promise that no password or hash ever reaches the audit log."""
from __future__ import annotations

import json

import pytest

from conftest import PASSWORD
from core import audit, auth, namespaces, settings, users
from core.config import Config
from core.errors import AuthenticationFailed, NotFound, PermissionDenied, ValidationError
from core.principal import Principal
from core.settings import open_store
from core.store import Store


def login(store: Store, name: str, password: str) -> auth.LoginResult:
    return auth.authenticate(store, name, password)


def refused_login(store: Store, name: str, password: str) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(store, name, password)


def row_of(store: Store, name: str) -> dict:
    with store.read() as tx:
        return users.get_row(tx, name)


def error_key(call, *args, **kwargs) -> str:
    with pytest.raises((ValidationError, NotFound)) as caught:
        call(*args, **kwargs)
    return caught.value.key


# -- usernames and profile fields ---------------------------------------------------------------------
def test_usernames_are_normalized_and_unique(store: Store, admin: Principal) -> None:
    user = users.create(store, admin, "  Alice.Smith@Corp ", PASSWORD, email="alice@example.com")
    assert user["username"] == "alice.smith@corp"
    assert user["display_name"] == "alice.smith@corp"
    assert error_key(users.create, store, admin, "ALICE.SMITH@CORP", PASSWORD) == "user.error.exists"
    assert login(store, "Alice.Smith@corp", PASSWORD).principal.username == "alice.smith@corp"


@pytest.mark.parametrize("name", ["", "a", "-lead", ".dot", "has space", "semi;colon", "x" * 65, "名字", "a/b"])
def test_invalid_usernames_are_refused(store: Store, admin: Principal, name: str) -> None:
    assert error_key(users.create, store, admin, name, PASSWORD) == "user.error.username"
    assert users.count(store) == 1


def test_operator_name_is_reserved(store: Store, admin: Principal) -> None:
    """Audit rows of the CLI and notebooks carry `local-operator`: no account may share it."""
    assert error_key(users.create, store, admin, "Local-Operator", PASSWORD) == "user.error.reserved"
    assert users.count(store) == 1


def test_email_is_validated(store: Store, admin: Principal) -> None:
    assert error_key(users.create, store, admin, "bob", PASSWORD, email="not-an-email") == "user.error.email"
    assert row_of(store, "bob") is None


def test_list_all_never_exposes_hashes(store: Store, team) -> None:
    rows = users.list_all(store, team["platform_admin"])
    assert [r["username"] for r in rows] == ["admin", "editor", "nsadmin", "outsider", "viewer"]
    assert all("password_hash" not in r for r in rows)
    assert all(not str(v).startswith("$2") for r in rows for v in r.values())


def test_get_own_account_or_any_as_admin(store: Store, team) -> None:
    assert users.get(store, team["viewer"], "viewer")["username"] == "viewer"
    with pytest.raises(PermissionDenied):
        users.get(store, team["viewer"], "editor")
    assert users.get(store, team["platform_admin"], "editor")["username"] == "editor"
    with pytest.raises(NotFound):
        users.get(store, team["platform_admin"], "nobody")


def test_directory_for_member_managers_only(store: Store, team) -> None:
    users.set_active(store, team["platform_admin"], "outsider", False)
    names = [r["username"] for r in users.directory(store, team["nsadmin"])]
    assert names == ["admin", "editor", "nsadmin", "viewer"]
    with pytest.raises(PermissionDenied):
        users.directory(store, team["editor"])


# -- password rules ------------------------------------------------------------------------------------
def test_password_minimum_length(store: Store, admin: Principal) -> None:
    with pytest.raises(ValidationError) as caught:
        users.create(store, admin, "bob", "seven77")
    assert caught.value.key == "user.error.password_short"
    assert "8" in caught.value.message("en") and "8" in caught.value.message("zh_CN")
    users.create(store, admin, "bob", "eight888")
    assert login(store, "bob", "eight888")


def test_password_minimum_length_is_a_setting(store: Store, config: Config, admin: Principal) -> None:
    settings.update(store, admin, "password_min_length", 12)
    strict = open_store(config)
    with pytest.raises(ValidationError) as caught:
        users.create(strict, admin, "bob", "elevenchars")
    assert caught.value.params["min"] == 12
    users.create(strict, admin, "bob", "twelve-chars")
    bob = login(strict, "bob", "twelve-chars").principal
    assert error_key(users.change_password, strict, bob, "twelve-chars", "short-again") == "user.error.password_short"


def test_passwords_over_72_bytes_are_refused_not_cut(store: Store, admin: Principal) -> None:
    """bcrypt reads 72 bytes: a longer password would silently accept any suffix."""
    assert error_key(users.create, store, admin, "bob", "x" * 73) == "user.error.password_long"
    assert error_key(users.create, store, admin, "bob", "密" * 25) == "user.error.password_long"  # 75 bytes
    users.create(store, admin, "bob", "密" * 24)  # exactly 72 bytes
    assert login(store, "bob", "密" * 24)
    refused_login(store, "bob", "密" * 24 + "x")
    refused_login(store, "bob", "x" * 500)


def test_change_password_needs_the_current_one(store: Store, team) -> None:
    editor = team["editor"]
    assert error_key(users.change_password, store, editor, "not-my-password", "brand-new-pw") == \
        "user.error.current_password"
    assert error_key(users.change_password, store, editor, PASSWORD, PASSWORD) == "user.error.same_password"
    assert login(store, "editor", PASSWORD)
    refused_login(store, "editor", "brand-new-pw")
    users.change_password(store, editor, PASSWORD, "brand-new-pw")
    assert login(store, "editor", "brand-new-pw")
    refused_login(store, "editor", PASSWORD)
    row = audit.query(store, Principal.operator(), action="user.change_password")[0]
    assert (row["actor_username"], row["resource_id"]) == ("editor", "editor")


def test_change_password_clears_must_change(store: Store, admin: Principal) -> None:
    users.create(store, admin, "bob", PASSWORD, must_change_password=True)
    first = login(store, "bob", PASSWORD)
    assert first.must_change_password
    users.change_password(store, first.principal, PASSWORD, "my-own-password")
    assert login(store, "bob", "my-own-password").must_change_password is False


def test_admin_reset_gives_a_temporary_password(store: Store, team) -> None:
    temporary = users.reset_password(store, team["platform_admin"], "editor")
    assert len(temporary) >= 12
    refused_login(store, "editor", PASSWORD)
    first = login(store, "editor", temporary)
    assert first.must_change_password
    users.change_password(store, first.principal, temporary, "chosen-by-me")
    refused_login(store, "editor", temporary)
    again = login(store, "editor", "chosen-by-me")
    assert again.must_change_password is False
    assert users.reset_password(store, team["platform_admin"], "editor") != temporary


def test_temporary_password_meets_the_minimum_length(store: Store, config: Config, admin: Principal) -> None:
    users.create(store, admin, "bob", PASSWORD * 2)
    settings.update(store, admin, "password_min_length", 24)
    strict = open_store(config)
    temporary = users.reset_password(strict, admin, "bob")
    users.validate_password(temporary, strict.config)
    assert login(strict, "bob", temporary).must_change_password


def test_reset_unknown_user(store: Store, admin: Principal) -> None:
    assert error_key(users.reset_password, store, admin, "ghost") == "user.error.not_found"


# -- activation and administrators ------------------------------------------------------------------
def test_disable_and_enable(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.set_active(store, admin, "editor", False)
    assert row_of(store, "editor")["active"] is False
    refused_login(store, "editor", PASSWORD)
    users.set_active(store, admin, "editor", True)
    assert login(store, "editor", PASSWORD)
    actions = [r["action"] for r in audit.query(store, admin, actor="admin", action="user.*able")]
    assert actions == ["user.enable", "user.disable"]


def test_cannot_disable_yourself(store: Store, admin: Principal) -> None:
    users.create(store, admin, "second", PASSWORD, is_platform_admin=True)
    assert error_key(users.set_active, store, admin, "admin", False) == "user.error.disable_self"
    assert row_of(store, "admin")["active"] is True


def test_last_admin_cannot_be_disabled_or_demoted(store: Store, admin: Principal) -> None:
    operator = Principal.operator()
    assert error_key(users.set_active, store, operator, "admin", False) == "user.error.last_admin"
    assert error_key(users.set_platform_admin, store, operator, "admin", False) == "user.error.last_admin"
    assert row_of(store, "admin")["is_platform_admin"] is True and row_of(store, "admin")["active"] is True
    users.create(store, admin, "second", PASSWORD)
    users.set_platform_admin(store, admin, "second", True)
    assert login(store, "second", PASSWORD).principal.is_platform_admin
    users.set_active(store, operator, "admin", False)
    # a disabled admin does not count: `second` is now the last one
    assert error_key(users.set_platform_admin, store, operator, "second", False) == "user.error.last_admin"
    assert error_key(users.set_active, store, operator, "second", False) == "user.error.last_admin"
    row = audit.query(store, operator, action="user.set_admin")[0]
    assert json.loads(row["detail"]) == {"before": False, "after": True}


def test_demoted_admin_loses_platform_rights(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.set_platform_admin(store, admin, "editor", True)
    users.set_platform_admin(store, admin, "editor", False)
    editor = login(store, "editor", PASSWORD).principal
    assert not editor.is_platform_admin
    with pytest.raises(PermissionDenied):
        users.list_all(store, editor)


# -- preferences -------------------------------------------------------------------------------------
def test_preferences_are_validated(store: Store, team) -> None:
    viewer = team["viewer"]
    before = row_of(store, "viewer")
    assert error_key(users.set_preferences, store, viewer, language="fr") == "user.error.language"
    assert error_key(users.set_preferences, store, viewer, timezone="Mars/Olympus_Mons") == "error.timezone"
    assert error_key(users.set_preferences, store, viewer, timezone="../../etc/passwd") == "error.timezone"
    assert error_key(users.set_preferences, store, viewer, email="nope") == "user.error.email"
    assert row_of(store, "viewer") == before


def test_preferences_are_stored_and_come_back_at_login(store: Store, team) -> None:
    users.set_preferences(store, team["viewer"], language="en", timezone="America/New_York",
                          display_name="Vera Viewer", email="vera@example.com")
    result = login(store, "viewer", PASSWORD)
    assert (result.language, result.timezone, result.display_name) == ("en", "America/New_York", "Vera Viewer")
    assert users.get(store, team["viewer"], "viewer")["email"] == "vera@example.com"
    row = audit.query(store, Principal.operator(), action="user.preferences")[0]
    assert json.loads(row["detail"])["language"] == {"before": None, "after": "en"}


def test_new_accounts_have_no_namespace(store: Store, admin: Principal) -> None:
    namespaces.create(store, admin, "alpha")
    users.create(store, admin, "bob", PASSWORD)
    bob = login(store, "bob", PASSWORD).principal
    assert bob.memberships == {} and not bob.is_platform_admin
    assert namespaces.list_visible(store, bob) == []


# -- secrets stay out of the audit log ------------------------------------------------------------
def test_no_password_or_hash_ever_reaches_the_audit_log(store: Store, config: Config) -> None:
    secrets_used = ["first-admin-pw-1", "bobs-password-1", "bobs-new-password", "guessing-wrong-1",
                    "registered-pw-1", "carols-password"]
    auth.create_first_admin(store, "admin", secrets_used[0])
    admin = login(store, "admin", secrets_used[0]).principal
    users.create(store, admin, "bob", secrets_used[1], must_change_password=True)
    bob = login(store, "bob", secrets_used[1]).principal
    users.change_password(store, bob, secrets_used[1], secrets_used[2])
    refused_login(store, "bob", secrets_used[3])
    refused_login(store, "nobody", secrets_used[3])
    temporary = users.reset_password(store, admin, "bob")
    secrets_used.append(temporary)
    new_bob = login(store, "bob", temporary).principal
    users.change_password(store, new_bob, temporary, "bobs-third-password")
    secrets_used.append("bobs-third-password")
    settings.update(store, admin, "allow_registration", True)
    auth.register(open_store(config), "reggie", secrets_used[4])
    users.create(store, admin, "carol", secrets_used[5])
    with store.read() as tx:
        hashes = [r["password_hash"] for r in tx.execute("SELECT password_hash FROM users")]
        audit_text = json.dumps(tx.execute("SELECT * FROM audit_logs"), default=str)
        attempts_text = json.dumps(tx.execute("SELECT * FROM login_attempts"), default=str)
    assert len(hashes) == 4
    assert audit_text.count('"action"') >= 12
    for secret in [*secrets_used, *hashes]:
        assert secret not in audit_text
        assert secret not in attempts_text
    assert "$2b$" not in audit_text
