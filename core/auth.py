"""Authentication: password login with temporary lockouts, first-admin bootstrap, registration,
login cookies and their invalidation.

Login cookies are HS256 JWTs with streamlit-authenticator's claims (`username`, `exp_date`) plus the
issue time `iat`; the app writes them through streamlit-authenticator's cookie manager. A cookie is
honoured only when it was issued after the user's `sessions_valid_after`, which logout, a password
change, an admin reset and disabling all move to "now": that invalidates every earlier cookie.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import bcrypt
import jwt

from core import audit, clock, users
from core.config import Config
from core.errors import AuthenticationFailed, LockedOut, ValidationError
from core.namespaces import memberships_of
from core.principal import Principal
from core.store import Store, Tx

COOKIE_NAME = "docetl_wb_auth"
_CLOCK_SKEW_SECONDS = 60


@lru_cache(maxsize=None)
def _dummy_hash(rounds: int) -> str:
    """A real hash at the configured cost, checked when the username is unknown, to keep timing flat."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=rounds)).decode()


@dataclass(frozen=True)
class LoginResult:
    principal: Principal
    display_name: str
    must_change_password: bool
    language: str | None
    timezone: str | None
    login_at: datetime


def principal_for(tx: Tx, row: dict[str, Any], client: Principal | None = None) -> Principal:
    return Principal(user_id=row["id"], username=row["username"], is_platform_admin=bool(row["is_platform_admin"]),
                     memberships=memberships_of(tx, row["id"]),
                     must_change_password=bool(row["must_change_password"]),
                     ip=client.ip if client else None, user_agent=client.user_agent if client else None,
                     request_id=client.request_id if client else None)


# -- lockout ----------------------------------------------------------------------------------
def _locked_until(tx: Tx, column: str, value: str, limit: int, config: Config, now: datetime) -> datetime | None:
    """When `limit` failures (since the last unlock, or for a username its last success) fall within the
    window: their lock's end. A success does not clear an address: one good account must not reopen it."""
    resets = "('success', 'reset')" if column == "username" else "('reset')"
    reset = tx.scalar(f"SELECT max(attempted_at) FROM login_attempts WHERE {column} = ?"
                      f" AND outcome IN {resets}", [value])
    window = timedelta(minutes=int(config["login_failure_window_minutes"]))
    rows = tx.execute(f"SELECT attempted_at FROM login_attempts WHERE {column} = ? AND outcome = 'failure'"
                      " AND attempted_at > ? AND attempted_at > ? ORDER BY attempted_at DESC LIMIT ?",
                      [value, reset or datetime(1970, 1, 1, tzinfo=now.tzinfo), now - window - _lockout(config),
                       limit])
    if limit <= 0 or len(rows) < limit or rows[0]["attempted_at"] - rows[-1]["attempted_at"] > window:
        return None
    until = rows[0]["attempted_at"] + _lockout(config)
    return until if until > now else None


def _lockout(config: Config) -> timedelta:
    return timedelta(minutes=int(config["login_lockout_minutes"]))


def lock_status(store: Store, username: str, ip: str | None = None, now: datetime | None = None) -> datetime | None:
    """The time a username (or the client address) is locked until, or None."""
    now = clock.resolve(now)
    with store.read() as tx:
        return _lock_of(tx, store.config, username.strip().lower(), ip, now)


def locked_until(store: Store, principal: Principal, username: str, now: datetime | None = None) -> datetime | None:
    """For the admin's Users page: until when a username is locked (a user's security state is private)."""
    from core.permissions import Action, require

    require(principal, Action.MANAGE_USERS)
    return lock_status(store, username, now=now)


def _lock_of(tx: Tx, config: Config, username: str, ip: str | None, now: datetime) -> datetime | None:
    return _lock_detail(tx, config, username, ip, now)[0]


def _lock_detail(tx: Tx, config: Config, username: str, ip: str | None,
                 now: datetime) -> tuple[datetime | None, str]:
    """(locked until, "account" or "address"): the later of the two locks, and which one it is."""
    found = [(_locked_until(tx, "username", username, int(config["login_max_failures"]), config, now), "account")]
    if ip:
        found.append((_locked_until(tx, "ip", ip, int(config["login_max_failures_per_address"]), config, now),
                      "address"))
    found = [f for f in found if f[0]]
    return max(found) if found else (None, "account")


def _locked_error(until: datetime, scope: str, now: datetime) -> LockedOut:
    key = "auth.error.address_locked" if scope == "address" else "auth.error.locked"
    return LockedOut(key, until=until, minutes=_minutes_left(until, now))


def authenticate(store: Store, username: str, password: str, client: Principal | None = None,
                 now: datetime | None = None) -> LoginResult:
    """Check a password; record the attempt and audit it; lock after repeated failures.

    bcrypt (~250 ms at cost 12) runs between two short units of work, never while holding the store
    lock, so a burst of logins cannot make the store busy for the service and notebooks.
    """
    now = clock.resolve(now)
    client = client or Principal.anonymous()
    name = (username or "").strip().lower()[:128]
    config = store.config
    with store.read() as tx:
        row = users.get_row(tx, name)
        ident = name if row else _unknown(name)  # what was typed may be a password: never store it raw
        locked = _lock_of(tx, config, ident, client.ip, now)
    ok = False
    if not locked:
        checked_hash = row["password_hash"] if row else _dummy_hash(int(config["bcrypt_rounds"]))
        ok = users.check_password(password, checked_hash) and row is not None
    actor = Principal(user_id=None, username=ident, ip=client.ip, user_agent=client.user_agent,
                      request_id=client.request_id)
    with store.transaction() as tx:
        locked = locked or _lock_of(tx, config, ident, client.ip, now)
        current = users.get_row(tx, name) if ok else None
        ok = bool(ok and current and current["password_hash"] == row["password_hash"])  # not changed meanwhile
        if locked:
            until, scope = _lock_detail(tx, config, ident, client.ip, now)
            until = until or locked
            _attempt(tx, ident, client.ip, "locked", now)
            audit.record(tx, actor, "auth.login_failed", resource_type="user", resource_id=ident, success=False,
                         detail={"reason": "locked", "scope": scope, "locked_until": until.isoformat()}, now=now)
            error: Exception = _locked_error(until, scope, now)
        elif ok and current["active"]:
            _attempt(tx, name, client.ip, "success", now)
            tx.execute_write("UPDATE users SET last_login_at = ? WHERE id = ?", [now, current["id"]])
            principal = principal_for(tx, current, client)
            audit.record(tx, principal, "auth.login", resource_type="user", resource_id=name, now=now)
            return LoginResult(principal, current["display_name"] or name, bool(current["must_change_password"]),
                               current["language"], current["timezone"], now)
        else:
            reason = "disabled" if ok else ("unknown_user" if row is None else "bad_password")
            _attempt(tx, ident, client.ip, "failure", now)
            audit.record(tx, actor, "auth.login_failed", resource_type="user", resource_id=ident, success=False,
                         detail={"reason": reason}, now=now)
            locked, scope = _lock_detail(tx, config, ident, client.ip, now)
            error = AuthenticationFailed()
            if locked:
                audit.record(tx, actor, "auth.lockout", resource_type="user", resource_id=ident, success=False,
                             detail={"scope": scope, "locked_until": locked.isoformat()}, now=now)
                error = _locked_error(locked, scope, now)
    raise error  # raised after commit so the attempt and its audit rows are kept


def _unknown(name: str) -> str:
    """A stable stand-in for a username that does not exist (counted for lockout like a real one)."""
    return "unknown:" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


def _attempt(tx: Tx, username: str, ip: str | None, outcome: str, now: datetime) -> None:
    tx.execute_write("INSERT INTO login_attempts (attempted_at, username, ip, outcome) VALUES (?,?,?,?)",
                     [now, username, ip, outcome])


def _minutes_left(until: datetime, now: datetime) -> int:
    return max(1, int((until - now).total_seconds() + 59) // 60)


def unlock(store: Store, principal: Principal, username: str, now: datetime | None = None) -> None:
    """An admin lifts a temporary lock early."""
    from core.permissions import Action, require

    require(principal, Action.MANAGE_USERS)
    name = users.normalize_username(username)
    with store.transaction() as tx:
        _attempt(tx, name, None, "reset", clock.resolve(now))
        audit.record(tx, principal, "auth.unlock", resource_type="user", resource_id=name, now=now)


def unlock_address(store: Store, principal: Principal, ip: str, now: datetime | None = None) -> None:
    """An admin lifts the throttle on a client address early (an office behind one NAT address)."""
    from core.permissions import Action, require

    require(principal, Action.MANAGE_USERS)
    address = (ip or "").strip()
    if not address or len(address) > 64:
        raise ValidationError("auth.error.address", value=address)
    with store.transaction() as tx:
        _attempt(tx, "", address, "reset", clock.resolve(now))
        audit.record(tx, principal, "auth.unlock_address", resource_type="address", resource_id=address, now=now)


# -- bootstrap and registration --------------------------------------------------------------
def needs_bootstrap(store: Store) -> bool:
    return users.count(store) == 0


def create_first_admin(store: Store, username: str, password: str, *, email: str | None = None,
                       display_name: str | None = None, client: Principal | None = None,
                       now: datetime | None = None) -> dict[str, Any]:
    """Only while no user exists (checked inside the transaction, so two racing browsers get one admin)."""
    users.normalize_username(username)
    hashed = users.new_password_hash(password, store.config)  # before the lock: bcrypt is slow
    with store.transaction() as tx:
        if tx.scalar("SELECT count(*) FROM users"):
            raise ValidationError("auth.error.already_bootstrapped")
        user = users.insert(tx, username, hashed, email=email, display_name=display_name,
                            is_platform_admin=True, now=now)
        actor = _as_new_user(user, client, is_platform_admin=True)
        audit.record(tx, actor, "user.bootstrap_admin", resource_type="user", resource_id=user["username"], now=now)
    return user


def register(store: Store, username: str, password: str, *, email: str | None = None,
             display_name: str | None = None, client: Principal | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """Self-registration, when an admin has allowed it; the new user belongs to no namespace."""
    if not store.config["allow_registration"]:
        raise ValidationError("auth.error.registration_closed")
    users.normalize_username(username)
    hashed = users.new_password_hash(password, store.config)  # before the lock: bcrypt is slow
    with store.transaction() as tx:
        user = users.insert(tx, username, hashed, email=email, display_name=display_name, now=now)
        actor = _as_new_user(user, client)
        audit.record(tx, actor, "user.register", resource_type="user", resource_id=user["username"], now=now)
    return user


def _as_new_user(user: dict[str, Any], client: Principal | None, is_platform_admin: bool = False) -> Principal:
    client = client or Principal.anonymous()
    return Principal(user_id=user["id"], username=user["username"], is_platform_admin=is_platform_admin,
                     ip=client.ip, user_agent=client.user_agent, request_id=client.request_id)


# -- sessions and cookies ----------------------------------------------------------------------
def logout(store: Store, principal: Principal, now: datetime | None = None) -> None:
    """End every session of this user: earlier cookies stop working everywhere."""
    now = clock.resolve(now)
    with store.transaction() as tx:
        tx.execute_write("UPDATE users SET sessions_valid_after = ? WHERE id = ?", [now, principal.user_id])
        audit.record(tx, principal, "auth.logout", resource_type="user", resource_id=principal.username, now=now)


def resume(store: Store, username: str, login_at: datetime, client: Principal | None = None) -> LoginResult | None:
    """Re-check a live session on each page render: None once the user is disabled or logged out elsewhere."""
    with store.read() as tx:
        row = users.get_row(tx, username)
        if not row or not row["active"] or login_at < row["sessions_valid_after"]:
            return None
        return LoginResult(principal_for(tx, row, client), row["display_name"] or row["username"],
                           bool(row["must_change_password"]), row["language"], row["timezone"], login_at)


def cookie_issued_at(token: str, key: str) -> tuple[str, datetime] | None:
    """(username, issue time) of a valid, unexpired cookie signed with our key; else None.

    The issue time is the cookie's own `iat` claim, so a cookie's validity never depends on
    settings that changed after it was written.
    """
    try:
        data = jwt.decode(token, key, algorithms=["HS256"])
        username, exp, iat = str(data["username"]), float(data["exp_date"]), float(data["iat"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
        return None
    now = clock.utcnow()
    if exp <= now.timestamp() or iat > now.timestamp() + _CLOCK_SKEW_SECONDS:
        return None
    return username, datetime.fromtimestamp(iat, tz=now.tzinfo)


def resume_from_cookie(store: Store, token: str, key: str, client: Principal | None = None) -> LoginResult | None:
    """A login restored from a cookie, unless that cookie was invalidated since it was issued."""
    parsed = cookie_issued_at(token, key)
    if not parsed:
        return None
    username, issued = parsed
    return resume(store, username, issued, client)


def issue_cookie(username: str, key: str, expiry_days: float, now: datetime | None = None) -> str:
    """The login cookie: streamlit-authenticator's claims (`username`, `exp_date`) plus `iat`."""
    now = clock.resolve(now)
    exp = now + timedelta(days=expiry_days)
    return jwt.encode({"username": username, "exp_date": exp.timestamp(), "iat": now.timestamp()}, key,
                      algorithm="HS256")


def cookie_key(config: Config, override: str | None = None) -> str:
    """The cookie signing key: from secrets.toml when given, else generated once, stored owner-only."""
    if override:
        if len(override) < 32:
            raise ValidationError("auth.error.weak_cookie_key")
        return override
    return _secret_file(config.secrets_dir / "cookie_key")


def _secret_file(path: Path, generate: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> str:
    """Read a secret, creating it on first use (`generate` makes it): written to a private temporary file
    (mode 0600), then hard-linked into place, so a concurrent reader never sees it empty and the first
    writer wins. Also used for the LLM settings' encryption key (core.llm_settings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another thread or process created it first: use theirs
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if value:
        return value
    raise ValidationError("auth.error.secret_empty", path=str(path))


def authenticator_credentials(store: Store, username: str) -> dict[str, Any]:
    """streamlit-authenticator's credentials dict, built from the store (only the user it acts for)."""
    with store.read() as tx:
        row = users.get_row(tx, username)
    if not row or not row["active"]:
        return {"usernames": {}}
    return {"usernames": {row["username"]: {"email": row["email"], "name": row["display_name"] or row["username"],
                                            "password": row["password_hash"], "logged_in": True,
                                            "failed_login_attempts": 0}}}
