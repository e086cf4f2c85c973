"""Settings: environment variables, admin overrides in the store, validation, precedence and audit."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import PASSWORD
from core import audit, auth, clock, settings, users
from core.config import SETTINGS, SETTINGS_BY_KEY, Config
from core.errors import PermissionDenied, ValidationError
from core.migrations import MIGRATIONS
from core.principal import Principal
from core.settings import open_store
from core.store import Store


def env_for(home: Path, **values: str) -> dict[str, str]:
    return {"DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "4", **values}


def described(store: Store, admin: Principal) -> dict[str, dict]:
    return {row["key"]: row for row in settings.describe(store, admin, store.config)}


def test_every_setting_has_an_env_name_default_and_help() -> None:
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:
        assert s.env == "DOCETL_WB_" + s.key.upper()
        assert s.help.strip()
        assert s.parse(s.default) == s.default


def test_environment_values_are_parsed(home: Path) -> None:
    config = Config.from_env(env_for(home, DOCETL_WB_LOGIN_MAX_FAILURES="9", DOCETL_WB_ALLOW_REGISTRATION="on",
                                     DOCETL_WB_COOKIE_EXPIRY_DAYS="0.5"))
    assert config["login_max_failures"] == 9
    assert config["allow_registration"] is True
    assert config["cookie_expiry_days"] == 0.5
    assert config["password_min_length"] == 8
    assert config.home == home.resolve()
    assert config.db_path == home.resolve() / ".docetl" / "_platform" / "platform.duckdb"


@pytest.mark.parametrize("var, value, key", [
    ("DOCETL_WB_LOGIN_MAX_FAILURES", "five", "error.setting_type"),
    ("DOCETL_WB_LOGIN_MAX_FAILURES", "-1", "error.setting_negative"),
    ("DOCETL_WB_ALLOW_REGISTRATION", "maybe", "error.setting_type"),
    ("DOCETL_WB_COOKIE_EXPIRY_DAYS", "inf", "error.setting_type"),
    ("DOCETL_WB_COOKIE_EXPIRY_DAYS", "nan", "error.setting_type"),
    ("DOCETL_WB_DEFAULT_LANGUAGE", "fr", "error.setting_choice"),
    ("DOCETL_WB_DEFAULT_TIMEZONE", "Asia/Atlantis", "error.timezone"),
])
def test_bad_environment_values_are_a_clear_error(home: Path, var: str, value: str, key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Config.from_env(env_for(home, **{var: value}))
    assert caught.value.key == key
    assert value in str(caught.value)


@pytest.mark.parametrize("raw, expected", [("1", True), ("TRUE", True), ("yes", True), (" on ", True),
                                           ("0", False), ("false", False), ("No", False), ("off", False),
                                           (True, True), (False, False)])
def test_boolean_spellings(raw, expected) -> None:
    assert SETTINGS_BY_KEY["allow_registration"].parse(raw) is expected


def test_describe_shows_default_environment_override_and_effective(home: Path) -> None:
    base = Config.from_env(env_for(home, DOCETL_WB_LOGIN_MAX_FAILURES="9"))
    store = open_store(base)
    auth.create_first_admin(store, "admin", PASSWORD)
    admin = auth.authenticate(store, "admin", PASSWORD).principal
    row = described(store, admin)["login_max_failures"]
    assert (row["env"], row["default"], row["environment"], row["override"], row["effective"]) == (
        "DOCETL_WB_LOGIN_MAX_FAILURES", 5, 9, None, 9)
    assert set(described(store, admin)) == {s.key for s in SETTINGS}
    settings.update(store, admin, "login_max_failures", "4")
    row = described(store, admin)["login_max_failures"]
    assert (row["environment"], row["override"], row["effective"]) == (9, 4, 4)
    assert open_store(base).config["login_max_failures"] == 4
    settings.reset(store, admin, "login_max_failures")
    assert described(store, admin)["login_max_failures"]["effective"] == 9
    assert open_store(base).config["login_max_failures"] == 9


def test_update_returns_the_parsed_value_and_is_audited(store: Store, admin: Principal) -> None:
    assert settings.update(store, admin, "allow_registration", "yes") is True
    assert settings.update(store, admin, "password_min_length", "10") == 10
    assert settings.update(store, admin, "password_min_length", 12) == 12
    row = audit.query(store, admin, action="settings.update")[0]
    assert (row["actor_username"], row["resource_id"]) == ("admin", "password_min_length")
    assert json.loads(row["detail"]) == {"before": 10, "after": 12}
    stored = store.execute("SELECT updated_by FROM settings WHERE key = 'password_min_length'")[0]
    assert stored["updated_by"] == "admin"
    settings.reset(store, admin, "password_min_length")
    row = audit.query(store, admin, action="settings.reset")[0]
    assert json.loads(row["detail"]) == {"before": 12}
    assert "password_min_length" not in settings.overrides(store)


@pytest.mark.parametrize("key, value, error", [
    ("login_max_failures", "many", "error.setting_type"),
    ("login_max_failures", -3, "error.setting_negative"),
    ("allow_registration", "maybe", "error.setting_type"),
    ("cookie_expiry_days", "inf", "error.setting_type"),
    ("default_language", "de", "error.setting_choice"),
    ("default_timezone", "Not/AZone", "error.timezone"),
    ("bcrypt_rounds", 4, "settings.error.unknown"),            # environment only
    ("store_lock_timeout_seconds", 1, "settings.error.unknown"),  # environment only
    ("no_such_setting", 1, "settings.error.unknown"),
])
def test_invalid_updates_are_refused_and_change_nothing(store: Store, admin: Principal, key, value, error) -> None:
    settings.update(store, admin, "login_lockout_minutes", 30)
    before = (store.execute("SELECT * FROM settings ORDER BY key"), len(audit.query(store, admin)))
    with pytest.raises(ValidationError) as caught:
        settings.update(store, admin, key, value)
    assert caught.value.key == error
    assert (store.execute("SELECT * FROM settings ORDER BY key"), len(audit.query(store, admin))) == before


def test_reset_refuses_unknown_keys(store: Store, admin: Principal) -> None:
    count = len(audit.query(store, admin))
    with pytest.raises(ValidationError) as caught:
        settings.reset(store, admin, "no_such_setting")
    assert caught.value.key == "settings.error.unknown"
    assert len(audit.query(store, admin)) == count


def test_only_admin_settings_are_taken_from_the_store(store: Store, config: Config, admin: Principal) -> None:
    """A row for an environment-only setting (written by hand or an old version) is ignored."""
    with store.transaction() as tx:
        tx.execute_write("INSERT INTO settings (key, value) VALUES ('bcrypt_rounds', '15'), ('gone_key', '1')")
    assert open_store(config).config["bcrypt_rounds"] == 4
    assert "gone_key" not in settings.overrides(store)


def test_valid_timezone_override(store: Store, config: Config, admin: Principal) -> None:
    settings.update(store, admin, "default_timezone", "Europe/Berlin")
    assert open_store(config).config["default_timezone"] == "Europe/Berlin"


def test_resetting_the_cookie_lifetime_ends_sessions(store: Store, config: Config, admin: Principal) -> None:
    key = auth.cookie_key(config)
    settings.update(store, admin, "cookie_expiry_days", 3, now=clock.utcnow() - timedelta(days=20))
    users.create(store, admin, "carol", PASSWORD, now=clock.utcnow() - timedelta(days=20))
    three_days = open_store(config)
    token = auth.issue_cookie("carol", key, 3, now=clock.utcnow() - timedelta(hours=1))
    assert auth.resume_from_cookie(three_days, token, key) is not None
    settings.reset(store, admin, "cookie_expiry_days", now=clock.utcnow() - timedelta(minutes=30))
    assert auth.resume_from_cookie(open_store(config), token, key) is None


def test_system_info_for_admins(store: Store, team) -> None:
    info = settings.system_info(store, team["platform_admin"])
    assert (info["users"], info["namespaces"], info["schema_version"]) == (5, 2, MIGRATIONS[-1][0])
    assert info["store_path"] == str(store.path) and info["store_bytes"] > 0
    with pytest.raises(PermissionDenied):
        settings.system_info(store, team["nsadmin"])


def test_a_stored_override_that_no_longer_parses_is_ignored(store: Store, config: Config) -> None:
    """A broken row must not lock everyone out: the environment/default applies until an admin fixes it."""
    with store.transaction() as tx:
        tx.execute_write("INSERT INTO settings (key, value) VALUES ('login_max_failures', '\"lots\"')")
        tx.execute_write("INSERT INTO settings (key, value) VALUES ('password_min_length', '12')")
    tuned = open_store(config)
    assert tuned.config["login_max_failures"] == 5
    assert tuned.config["password_min_length"] == 12


@pytest.mark.parametrize("key, value", [("login_failure_window_minutes", 10**12), ("cookie_expiry_days", 0),
                                        ("cookie_expiry_days", 3_000_000), ("password_min_length", 100),
                                        ("login_lockout_minutes", 0)])
def test_values_that_would_lock_everyone_out_are_refused(store: Store, admin: Principal, key: str, value) -> None:
    with pytest.raises(ValidationError) as caught:
        settings.update(store, admin, key, value)
    assert caught.value.key == "error.setting_range"
    assert key in str(caught.value) and "range" in str(caught.value)
    assert settings.overrides(store) == {}
