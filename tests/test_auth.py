"""Login, temporary lockouts, throttling per client address, cookies and their invalidation,
the cookie signing key, first-admin bootstrap and self-registration.

Time is passed as `now=`: lockouts are checked minute by minute without waiting.
"""
from __future__ import annotations

import json
import os
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
import jwt
import pytest

from conftest import PASSWORD
from core import audit, auth, clock, namespaces, settings, users
from core.config import Config
from core.errors import AuthenticationFailed, LockedOut, PermissionDenied, ValidationError
from core.permissions import Action, can
from core.principal import Principal
from core.settings import open_store
from core.store import Store

T0 = datetime(2031, 5, 4, 8, 0, tzinfo=timezone.utc)
WRONG = "wrong-password"


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def client(ip: str | None = None) -> Principal:
    return Principal.anonymous(ip=ip, user_agent="pytest-agent")


def fail(store: Store, name: str, when: datetime, ip: str | None = None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate(store, name, WRONG, client=client(ip), now=when)
    return caught.value


def locked(store: Store, name: str, password: str, when: datetime, ip: str | None = None) -> LockedOut:
    with pytest.raises(LockedOut) as caught:
        auth.authenticate(store, name, password, client=client(ip), now=when)
    return caught.value


def audit_rows(store: Store, action: str = "auth.*") -> list[dict]:
    return list(reversed(audit.query(store, Principal.operator(), action=action)))


# -- lockout ---------------------------------------------------------------------------------------
def test_fifth_failure_locks_and_even_the_right_password_is_refused(store: Store, team) -> None:
    for i in range(4):
        fail(store, "viewer", at(i))
    fifth = locked(store, "viewer", WRONG, at(4))
    assert fifth.params["minutes"] == 15
    assert fifth.params["until"] == at(4 + 15)
    later = locked(store, "viewer", PASSWORD, at(5))
    assert later.params["minutes"] == 14
    assert "14" in later.message("en") and "14" in later.message("zh_CN")
    assert later.message("en") != later.message("zh_CN")
    assert auth.lock_status(store, "viewer", now=at(5)) == at(19)
    # other users are not affected
    assert auth.authenticate(store, "editor", PASSWORD, now=at(5)).principal.username == "editor"


def test_lock_lifts_after_the_lockout_period(store: Store, team) -> None:
    for i in range(5):
        with pytest.raises((AuthenticationFailed, LockedOut)):
            auth.authenticate(store, "viewer", WRONG, now=at(i))
    locked(store, "viewer", PASSWORD, at(18, 59))
    assert auth.lock_status(store, "viewer", now=at(18, 59)) is not None
    assert auth.lock_status(store, "viewer", now=at(19, 1)) is None
    result = auth.authenticate(store, "viewer", PASSWORD, now=at(19, 1))
    assert result.principal.username == "viewer"


def test_attempts_while_locked_do_not_extend_the_lock(store: Store, team) -> None:
    for i in range(5):
        with pytest.raises((AuthenticationFailed, LockedOut)):
            auth.authenticate(store, "viewer", WRONG, now=at(i))
    for minute in (6, 10, 18):
        locked(store, "viewer", WRONG, at(minute))
    assert auth.authenticate(store, "viewer", PASSWORD, now=at(19, 1)).principal.username == "viewer"


def test_admin_unlock_lifts_the_lock_early(store: Store, team) -> None:
    admin = team["platform_admin"]
    for i in range(5):
        with pytest.raises((AuthenticationFailed, LockedOut)):
            auth.authenticate(store, "viewer", WRONG, now=at(i))
    auth.unlock(store, admin, "viewer", now=at(6))
    assert auth.lock_status(store, "viewer", now=at(6, 30)) is None
    # the count starts again from the unlock: four failures do not lock
    for i in range(4):
        fail(store, "viewer", at(7 + i))
    assert auth.authenticate(store, "viewer", PASSWORD, now=at(12)).principal.username == "viewer"
    row = audit_rows(store, "auth.unlock")[-1]
    assert (row["actor_username"], row["resource_id"], row["success"]) == ("admin", "viewer", True)


def test_success_resets_the_failure_count(store: Store, team) -> None:
    for i in range(4):
        fail(store, "viewer", at(i))
    auth.authenticate(store, "viewer", PASSWORD, now=at(4))
    for i in range(4):
        fail(store, "viewer", at(5 + i))
    locked(store, "viewer", WRONG, at(9))


def test_failures_spread_over_more_than_the_window_do_not_lock(store: Store, team) -> None:
    for minute in (0, 4, 8, 12, 16):  # never five within 15 minutes
        fail(store, "viewer", at(minute))
    assert auth.lock_status(store, "viewer", now=at(16, 30)) is None
    assert auth.authenticate(store, "viewer", PASSWORD, now=at(17)).principal.username == "viewer"


def test_unknown_usernames_lock_too(store: Store, admin) -> None:
    for i in range(4):
        fail(store, "ghost", at(i))
    locked(store, "ghost", WRONG, at(4))


def test_per_address_throttle_across_usernames(store: Store, team) -> None:
    """20 failures from one address lock that address, even though each username failed once."""
    for i in range(19):
        fail(store, f"guess{i}", at(0, i), ip="203.0.113.7")
    locked(store, "guess19", WRONG, at(0, 19), ip="203.0.113.7")
    # a real user from the throttled address is refused, from another address welcome
    locked(store, "editor", PASSWORD, at(1), ip="203.0.113.7")
    assert auth.authenticate(store, "editor", PASSWORD, client=client("198.51.100.2"), now=at(1)).principal
    assert auth.lock_status(store, "editor", now=at(1)) is None
    assert auth.lock_status(store, "editor", ip="203.0.113.7", now=at(1)) is not None
    assert auth.lock_status(store, "editor", ip="203.0.113.7", now=at(16)) is None


def test_settings_change_the_limits(store: Store, config: Config, team) -> None:
    admin = team["platform_admin"]
    settings.update(store, admin, "login_max_failures", 3)
    settings.update(store, admin, "login_lockout_minutes", 2)
    settings.update(store, admin, "login_max_failures_per_address", 4)
    tuned = open_store(config)
    fail(tuned, "viewer", at(0))
    fail(tuned, "viewer", at(0, 10))
    err = locked(tuned, "viewer", WRONG, at(0, 20))
    assert err.params["minutes"] == 2
    locked(tuned, "viewer", PASSWORD, at(2, 10))
    assert auth.authenticate(tuned, "viewer", PASSWORD, now=at(2, 21)).principal.username == "viewer"
    for i in range(3):
        fail(tuned, f"other{i}", at(10, i), ip="192.0.2.1")
    locked(tuned, "other3", WRONG, at(10, 3), ip="192.0.2.1")


def test_window_setting(store: Store, config: Config, team) -> None:
    settings.update(store, team["platform_admin"], "login_failure_window_minutes", 1)
    tuned = open_store(config)
    for i in range(5):  # 40 s apart: never five within one minute
        fail(tuned, "viewer", at(0, 40 * i))
    assert auth.lock_status(tuned, "viewer", now=at(3)) is None
    for i in range(4):
        fail(tuned, "editor", at(0, 5 * i))
    locked(tuned, "editor", WRONG, at(0, 20))


def test_every_attempt_is_audited_with_outcome_and_reason(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.set_active(store, admin, "viewer", False)
    ip = "192.0.2.44"
    auth.authenticate(store, "editor", PASSWORD, client=client(ip), now=at(0))
    fail(store, "editor", at(1), ip=ip)
    fail(store, "nobody-here", at(2), ip=ip)
    with pytest.raises(AuthenticationFailed):  # disabled, right password
        auth.authenticate(store, "viewer", PASSWORD, client=client(ip), now=at(3))
    for i in range(3):
        fail(store, "editor", at(4 + i), ip=ip)
    locked(store, "editor", WRONG, at(8), ip=ip)
    locked(store, "editor", PASSWORD, at(9), ip=ip)
    rows = [r for r in audit_rows(store) if r["occurred_at"] >= T0]
    seen = [(r["action"], r["resource_id"], r["success"], json.loads(r["detail"] or "{}").get("reason"))
            for r in rows]
    assert seen == [
        ("auth.login", "editor", True, None),
        ("auth.login_failed", "editor", False, "bad_password"),
        ("auth.login_failed", auth._unknown("nobody-here"), False, "unknown_user"),
        ("auth.login_failed", "viewer", False, "disabled"),
        ("auth.login_failed", "editor", False, "bad_password"),
        ("auth.login_failed", "editor", False, "bad_password"),
        ("auth.login_failed", "editor", False, "bad_password"),
        ("auth.login_failed", "editor", False, "bad_password"),
        ("auth.lockout", "editor", False, None),
        ("auth.login_failed", "editor", False, "locked"),
    ]
    assert {(r["ip"], r["user_agent"]) for r in rows} == {(ip, "pytest-agent")}
    # what was typed as an unknown username may be a password: it is never stored as typed
    assert "nobody-here" not in json.dumps([list(r.values()) for r in rows], default=str)
    lockout = next(r for r in rows if r["action"] == "auth.lockout")
    assert json.loads(lockout["detail"])["locked_until"] == at(8 + 15).isoformat()
    assert rows[0]["actor_user_id"] is not None  # the successful login names the user
    assert not audit.query(store, Principal.operator(), action="auth.*", success=True, since=at(1))


def test_unknown_username_gets_the_same_answer_as_a_bad_password(store: Store, team) -> None:
    bad = fail(store, "editor", at(0))
    unknown = fail(store, "no-such-user", at(0))
    assert type(bad) is type(unknown)
    for lang in ("en", "zh_CN"):
        assert bad.message(lang) == unknown.message(lang)


def test_disabled_user_cannot_log_in(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.set_active(store, admin, "editor", False)
    err = fail(store, "editor", at(0))
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate(store, "editor", PASSWORD, now=at(1))
    assert str(caught.value) == str(err)
    users.set_active(store, admin, "editor", True)
    assert auth.authenticate(store, "editor", PASSWORD, now=at(2)).principal.username == "editor"


def test_login_is_case_insensitive_and_returns_roles_and_preferences(store: Store, team) -> None:
    users.set_preferences(store, team["editor"], language="en", timezone="Europe/Paris")
    result = auth.authenticate(store, "  Editor ", PASSWORD, now=at(0))
    assert result.principal.username == "editor"
    assert result.principal.role_in("alpha").value == "editor"
    assert (result.language, result.timezone, result.must_change_password) == ("en", "Europe/Paris", False)
    assert users.get(store, result.principal, "editor")["last_login_at"] == at(0)


def test_unknown_username_costs_a_real_bcrypt_check(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing must not reveal which usernames exist: an unknown name is checked against a real hash
    of the configured cost, not rejected instantly."""
    store = open_store(Config.from_env({"DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "5"}))
    auth.create_first_admin(store, "admin", PASSWORD)
    calls = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        try:
            result = real(password, hashed)
        except ValueError as exc:
            calls.append((hashed[:7], repr(exc)))
            raise
        calls.append((hashed[:7], result))
        return result

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    fail(store, "admin", at(0))
    fail(store, "not-a-user", at(0))
    assert calls == [(b"$2b$05$", False), (b"$2b$05$", False)]


# -- sessions and cookies ----------------------------------------------------------------------------
@pytest.fixture
def key(config: Config) -> str:
    return auth.cookie_key(config)


@pytest.fixture
def carol(store: Store, admin: Principal) -> Principal:
    """A user created a month ago, editor in `alpha`, logged in."""
    month_ago = clock.utcnow() - timedelta(days=30)
    namespaces.create(store, admin, "alpha")
    users.create(store, admin, "carol", PASSWORD, now=month_ago)
    namespaces.add_member(store, admin, "alpha", "carol", "editor")
    return auth.authenticate(store, "carol", PASSWORD).principal


def ago(**kw: float) -> datetime:
    return clock.utcnow() - timedelta(**kw)


def cookie(key: str, issued: datetime, username: str = "carol", days: float = 7.0) -> str:
    return auth.issue_cookie(username, key, days, now=issued)


def test_cookie_restores_the_login(store: Store, carol: Principal, key: str) -> None:
    result = auth.resume_from_cookie(store, cookie(key, ago(hours=1)), key, client=client("192.0.2.9"))
    assert result is not None
    assert result.principal.username == "carol"
    assert result.principal.user_id == carol.user_id
    assert result.principal.role_in("alpha").value == "editor"
    assert result.principal.ip == "192.0.2.9"


def test_cookie_rejected_after_logout(store: Store, carol: Principal, key: str) -> None:
    old = cookie(key, ago(hours=1))
    auth.logout(store, carol, now=ago(minutes=30))
    assert auth.resume_from_cookie(store, old, key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(minutes=10)), key) is not None
    row = audit_rows(store, "auth.logout")[-1]
    assert (row["actor_username"], row["success"]) == ("carol", True)


def test_cookie_rejected_after_password_change(store: Store, carol: Principal, key: str) -> None:
    old = cookie(key, ago(hours=1))
    users.change_password(store, carol, PASSWORD, "a-new-password-2", now=ago(minutes=30))
    assert auth.resume_from_cookie(store, old, key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(minutes=10)), key) is not None


def test_cookie_rejected_after_admin_reset(store: Store, carol: Principal, admin: Principal, key: str) -> None:
    old = cookie(key, ago(hours=1))
    users.reset_password(store, admin, "carol", now=ago(minutes=30))
    assert auth.resume_from_cookie(store, old, key) is None


def test_cookie_rejected_while_disabled_and_old_ones_stay_dead(store: Store, carol: Principal, admin: Principal,
                                                               key: str) -> None:
    old = cookie(key, ago(hours=1))
    users.set_active(store, admin, "carol", False, now=ago(minutes=30))
    assert auth.resume_from_cookie(store, old, key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(minutes=20)), key) is None
    users.set_active(store, admin, "carol", True, now=ago(minutes=15))
    assert auth.resume_from_cookie(store, old, key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(minutes=10)), key) is not None


def test_cookie_with_wrong_key_or_tampered_is_rejected(store: Store, carol: Principal, key: str) -> None:
    good = cookie(key, ago(hours=1))
    assert auth.resume_from_cookie(store, good, "x" * 64) is None
    assert auth.resume_from_cookie(store, cookie("y" * 64, ago(hours=1)), key) is None
    forged = jwt.encode({"username": "admin", "exp_date": (clock.utcnow() + timedelta(days=1)).timestamp()},
                        key="guessed-key-guessed-key-guessed-key", algorithm="HS256")
    assert auth.resume_from_cookie(store, forged, key) is None
    unsigned = jwt.encode({"username": "carol", "exp_date": 4e9}, key=None, algorithm="none")
    assert auth.resume_from_cookie(store, unsigned, key) is None
    assert auth.resume_from_cookie(store, "not-a-jwt", key) is None
    assert auth.resume_from_cookie(store, jwt.encode({"user": "carol"}, key, algorithm="HS256"), key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(hours=1), username="nobody"), key) is None


def test_expired_cookie_is_rejected(store: Store, carol: Principal, key: str) -> None:
    assert auth.resume_from_cookie(store, cookie(key, ago(days=7, minutes=1)), key) is None
    assert auth.resume_from_cookie(store, cookie(key, ago(days=6, hours=23)), key) is not None


def test_changing_cookie_lifetime_ends_sessions(store: Store, config: Config, carol: Principal, key: str) -> None:
    old = cookie(key, ago(hours=1))
    settings.update(store, Principal.operator(), "cookie_expiry_days", 2, now=ago(minutes=30))
    tuned = open_store(config)
    assert auth.resume_from_cookie(tuned, old, key) is None
    assert auth.resume_from_cookie(tuned, cookie(key, ago(minutes=10), days=2), key) is not None
    assert auth.resume_from_cookie(tuned, cookie(key, ago(days=2, minutes=1), days=2), key) is None


def test_resume_checks_the_session_epoch(store: Store, carol: Principal) -> None:
    login = auth.authenticate(store, "carol", PASSWORD)
    assert auth.resume(store, "carol", login.login_at).principal.username == "carol"
    auth.logout(store, carol)
    assert auth.resume(store, "carol", login.login_at) is None


# -- the cookie signing key ------------------------------------------------------------------------
def test_cookie_key_is_generated_once_owner_only(config: Config) -> None:
    path = config.secrets_dir / "cookie_key"
    assert not path.exists()
    first = auth.cookie_key(config)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert auth.cookie_key(config) == first
    assert auth.cookie_key(Config.from_env({"DOCETL_HOME_DIR": str(config.home)})) == first
    other_home = config.home.parent / "other-home"
    assert auth.cookie_key(Config(home=other_home)) != first


def test_cookie_key_dir_is_tightened(config: Config) -> None:
    config.secrets_dir.mkdir(parents=True)
    os.chmod(config.secrets_dir, 0o755)
    auth.cookie_key(config)
    assert stat.S_IMODE(config.secrets_dir.stat().st_mode) == 0o700


def test_cookie_key_first_use_from_many_threads_gets_one_key(tmp_path: Path) -> None:
    """Streamlit serves sessions from threads: the first start must not hand out an empty or second key."""
    for attempt in range(30):
        cfg = Config(home=tmp_path / f"h{attempt}")
        barrier = threading.Barrier(8)
        keys, errors = [], []

        def first_use() -> None:
            barrier.wait()
            try:
                keys.append(auth.cookie_key(cfg))
            except Exception as exc:  # noqa: BLE001 - any error is the failure we look for
                errors.append(exc)

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(set(keys)) == 1 and len(keys[0]) >= 32
        assert (cfg.secrets_dir / "cookie_key").read_text().strip() == keys[0]


def test_cookie_key_from_secrets_must_be_long(config: Config) -> None:
    with pytest.raises(ValidationError) as caught:
        auth.cookie_key(config, override="short-key")
    assert caught.value.key == "auth.error.weak_cookie_key"
    with pytest.raises(ValidationError):
        auth.cookie_key(config, override="x" * 31)
    strong = "k" * 32
    assert auth.cookie_key(config, override=strong) == strong
    assert not (config.secrets_dir / "cookie_key").exists()


def test_empty_key_file_is_a_clear_error(config: Config) -> None:
    config.secrets_dir.mkdir(parents=True)
    (config.secrets_dir / "cookie_key").write_text("")
    with pytest.raises(ValidationError) as caught:
        auth.cookie_key(config)
    assert caught.value.key == "auth.error.secret_empty"


# -- first administrator and registration ----------------------------------------------------------
def test_first_admin_bootstrap_only_when_no_user_exists(store: Store) -> None:
    assert auth.needs_bootstrap(store)
    user = auth.create_first_admin(store, "Root", PASSWORD, email="root@example.com",
                                   client=client("192.0.2.5"))
    assert (user["username"], user["is_platform_admin"], user["active"]) == ("root", True, True)
    assert not auth.needs_bootstrap(store)
    with pytest.raises(ValidationError) as caught:
        auth.create_first_admin(store, "second", PASSWORD)
    assert caught.value.key == "auth.error.already_bootstrapped"
    assert users.count(store) == 1
    assert auth.authenticate(store, "root", PASSWORD).principal.is_platform_admin
    row = audit_rows(store, "user.bootstrap_admin")[-1]
    assert (row["actor_username"], row["resource_id"], row["ip"]) == ("root", "root", "192.0.2.5")


def test_bootstrap_is_refused_once_any_user_exists(store: Store) -> None:
    with store.transaction() as tx:
        users.insert(tx, "plain", users.new_password_hash(PASSWORD, store.config))
    with pytest.raises(ValidationError):
        auth.create_first_admin(store, "sneaky", PASSWORD)
    assert users.count(store) == 1


def test_bootstrap_validates_like_any_account(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        auth.create_first_admin(store, "root", "short")
    assert caught.value.key == "user.error.password_short"
    assert auth.needs_bootstrap(store)


def test_registration_is_closed_by_default(store: Store, admin: Principal) -> None:
    with pytest.raises(ValidationError) as caught:
        auth.register(store, "newcomer", PASSWORD)
    assert caught.value.key == "auth.error.registration_closed"
    assert users.count(store) == 1


def test_registration_when_an_admin_opens_it(store: Store, config: Config, team) -> None:
    settings.update(store, team["platform_admin"], "allow_registration", True)
    opened = open_store(config)
    user = auth.register(opened, "Newcomer", PASSWORD, email="new@example.com", client=client("192.0.2.8"))
    assert (user["username"], user["is_platform_admin"]) == ("newcomer", False)
    me = auth.authenticate(opened, "newcomer", PASSWORD).principal
    assert me.memberships == {}
    assert namespaces.list_visible(opened, me) == []
    assert not can(me, Action.VIEW, "alpha")
    row = audit_rows(opened, "user.register")[-1]
    assert (row["actor_username"], row["ip"], row["success"]) == ("newcomer", "192.0.2.8", True)
    with pytest.raises(ValidationError) as caught:
        auth.register(opened, "newcomer", PASSWORD)
    assert caught.value.key == "user.error.exists"
    with pytest.raises(ValidationError):
        auth.register(opened, "weakling", "short")
    settings.update(opened, team["platform_admin"], "allow_registration", False)
    with pytest.raises(ValidationError):
        auth.register(open_store(config), "latecomer", PASSWORD)


def test_registration_from_the_environment(home: Path, admin: Principal) -> None:
    env = {"DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "4", "DOCETL_WB_ALLOW_REGISTRATION": "true"}
    assert auth.register(open_store(Config.from_env(env)), "viaenv", PASSWORD)["username"] == "viaenv"


def test_authenticator_credentials_only_for_an_active_user(store: Store, team) -> None:
    creds = auth.authenticator_credentials(store, "Editor")["usernames"]
    assert list(creds) == ["editor"]
    assert users.check_password(PASSWORD, creds["editor"]["password"])
    users.set_active(store, team["platform_admin"], "editor", False)
    assert auth.authenticator_credentials(store, "editor") == {"usernames": {}}
    assert auth.authenticator_credentials(store, "nobody") == {"usernames": {}}


def test_cookie_without_issue_time_or_from_the_future_is_refused(store: Store, carol: Principal, key: str) -> None:
    exp = (clock.utcnow() + timedelta(days=1)).timestamp()
    bare = jwt.encode({"username": "carol", "exp_date": exp}, key, algorithm="HS256")  # no iat
    assert auth.resume_from_cookie(store, bare, key) is None
    future = auth.issue_cookie("carol", key, 7, now=clock.utcnow() + timedelta(hours=1))
    assert auth.resume_from_cookie(store, future, key) is None


def test_a_good_login_does_not_reset_an_address_throttle(store: Store, config: Config, carol: Principal) -> None:
    """An attacker with one real account must not clear the address's failures by logging in with it."""
    settings.update(store, Principal.operator(), "login_max_failures_per_address", 3)
    tuned = open_store(config)
    attacker = client("198.51.100.7")
    for name in ("u1", "u2"):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(tuned, name, "guess", attacker)
    assert auth.authenticate(tuned, "carol", PASSWORD, attacker).principal.username == "carol"
    with pytest.raises(LockedOut):  # the third failure from the address locks it despite the success
        auth.authenticate(tuned, "u3", "guess", attacker)
    with pytest.raises(LockedOut):
        auth.authenticate(tuned, "carol", PASSWORD, attacker)
    assert auth.authenticate(tuned, "carol", PASSWORD, client("203.0.113.5")).principal.username == "carol"


def test_an_address_throttle_says_so_and_an_admin_can_lift_it(store: Store, config: Config, carol: Principal) -> None:
    settings.update(store, Principal.operator(), "login_max_failures_per_address", 2)
    tuned = open_store(config)
    office = client("198.51.100.20")
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(tuned, "u1", "guess", office)
    with pytest.raises(LockedOut) as caught:
        auth.authenticate(tuned, "u2", "guess", office)
    assert caught.value.key == "auth.error.address_locked"
    with pytest.raises(LockedOut):
        auth.authenticate(tuned, "carol", PASSWORD, office)
    with pytest.raises(PermissionDenied):
        auth.unlock_address(tuned, carol, "198.51.100.20")
    auth.unlock_address(tuned, Principal.operator(), "198.51.100.20")
    assert auth.authenticate(tuned, "carol", PASSWORD, office).principal.username == "carol"
    assert audit_rows(tuned, "auth.unlock_address")[-1]["resource_id"] == "198.51.100.20"


def test_only_admins_read_another_users_lock(store: Store, team) -> None:
    for _ in range(5):
        with pytest.raises((AuthenticationFailed, LockedOut)):
            auth.authenticate(store, "viewer", "nope")
    assert auth.locked_until(store, team["platform_admin"], "viewer") is not None
    with pytest.raises(PermissionDenied):
        auth.locked_until(store, team["nsadmin"], "viewer")
