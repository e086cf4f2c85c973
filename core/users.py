"""Users: accounts, passwords (bcrypt), activation, preferences.

Passwords never leave this module in clear except the one-time temporary password of an admin reset,
which is returned to the caller to show once and is never logged or audited.
"""
from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime
from typing import Any

import bcrypt

from core import audit, clock
from core.config import Config
from core.errors import NotFound, ValidationError
from core.permissions import Action, require
from core.principal import OPERATOR_USERNAME, Principal
from core.store import Store, Tx

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PUBLIC_COLUMNS = ("id", "username", "email", "display_name", "active", "must_change_password",
                  "is_platform_admin", "language", "timezone", "last_login_at", "created_at")
LANGUAGES = ("zh_CN", "en")


def normalize_username(username: str) -> str:
    name = (username or "").strip().lower()
    if not USERNAME_RE.match(name):
        raise ValidationError("user.error.username", name=username or "")
    if name == OPERATOR_USERNAME:  # the CLI's and notebooks' identity in the audit log
        raise ValidationError("user.error.reserved", name=name)
    return name


def validate_password(password: str, config: Config) -> None:
    """Length rules; bcrypt reads at most 72 bytes, so longer ones are refused rather than cut."""
    minimum = int(config["password_min_length"])
    if len(password or "") < minimum:
        raise ValidationError("user.error.password_short", min=minimum)
    if len(password.encode("utf-8")) > 72:
        raise ValidationError("user.error.password_long", max=72)


def hash_password(password: str, config: Config) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=int(config["bcrypt_rounds"]))).decode()


def temporary_password(min_length: int = 0) -> str:
    """A one-time password for a new or reset account (the user must change it at first login):
    12 characters, or `min_length` when that is longer."""
    return secrets.token_urlsafe(max(9, (3 * min_length + 3) // 4))


def check_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw((password or "").encode("utf-8"), password_hash.encode("ascii"))
    except ValueError:
        return False


def _validate_profile(email: str | None, language: str | None, timezone: str | None) -> None:
    if email and not EMAIL_RE.match(email):
        raise ValidationError("user.error.email", email=email)
    if language and language not in LANGUAGES:
        raise ValidationError("user.error.language", value=language)
    if timezone:
        clock.zone(timezone)


def get_row(tx: Tx, username: str) -> dict[str, Any] | None:
    """The full row (with hash) for internal use; never hand it to a page."""
    return tx.one("SELECT * FROM users WHERE username = ?", [(username or "").strip().lower()])


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in PUBLIC_COLUMNS}


def count(store: Store) -> int:
    return int(store.execute("SELECT count(*) AS n FROM users")[0]["n"])


def new_password_hash(password: str, config: Config) -> str:
    """Validate and hash a new password. Call it before opening a transaction: bcrypt takes ~250 ms at
    cost 12 and must not hold the store lock that every process shares."""
    validate_password(password, config)
    return hash_password(password, config)


def insert(tx: Tx, username: str, password_hash: str, *, email: str | None = None,
           display_name: str | None = None, is_platform_admin: bool = False,
           must_change_password: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Insert a user in the caller's transaction after validating every field."""
    name = normalize_username(username)
    _validate_profile(email, None, None)
    if get_row(tx, name):
        raise ValidationError("user.error.exists", name=name)
    now = clock.resolve(now)
    tx.execute_write(
        "INSERT INTO users (id, username, email, display_name, password_hash, is_platform_admin,"
        " must_change_password, sessions_valid_after, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [uuid.uuid4().hex, name, email or None, (display_name or "").strip() or name,
         password_hash, is_platform_admin, must_change_password, now, now, now])
    return _public(get_row(tx, name))


def create(store: Store, principal: Principal, username: str, password: str, *, email: str | None = None,
           display_name: str | None = None, is_platform_admin: bool = False,
           must_change_password: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """An admin creates an account."""
    require(principal, Action.MANAGE_USERS)
    normalize_username(username)  # say what is wrong with the name before spending time on the hash
    hashed = new_password_hash(password, store.config)
    with store.transaction() as tx:
        user = insert(tx, username, hashed, email=email, display_name=display_name,
                      is_platform_admin=is_platform_admin, must_change_password=must_change_password, now=now)
        audit.record(tx, principal, "user.create", resource_type="user", resource_id=user["username"],
                     detail={"is_platform_admin": is_platform_admin, "email": email}, now=now)
    return user


def list_all(store: Store, principal: Principal) -> list[dict[str, Any]]:
    require(principal, Action.MANAGE_USERS)
    return store.execute(f"SELECT {', '.join(PUBLIC_COLUMNS)} FROM users ORDER BY username")


def directory(store: Store, principal: Principal) -> list[dict[str, Any]]:
    """Usernames and display names of active users, for anyone who manages some namespace's members."""
    if not (principal.is_platform_admin or any(
            r.value == "namespace_admin" for r in principal.memberships.values())):
        require(principal, Action.MANAGE_USERS)
    return store.execute("SELECT username, display_name FROM users WHERE active ORDER BY username")


def get(store: Store, principal: Principal, username: str) -> dict[str, Any]:
    """One account: your own, or any for an admin."""
    name = (username or "").strip().lower()
    if name != principal.username:
        require(principal, Action.MANAGE_USERS)
    with store.read() as tx:
        row = get_row(tx, name)
    if not row:
        raise NotFound("user.error.not_found", name=username)
    return _public(row)


def _update_target(tx: Tx, username: str) -> dict[str, Any]:
    row = get_row(tx, username)
    if not row:
        raise NotFound("user.error.not_found", name=username)
    return row


def set_active(store: Store, principal: Principal, username: str, active: bool,
               now: datetime | None = None) -> None:
    """Disable or enable an account; disabling ends every session of that user at once."""
    require(principal, Action.MANAGE_USERS)
    now = clock.resolve(now)
    with store.transaction() as tx:
        row = _update_target(tx, username)
        if row["username"] == principal.username and not active:
            raise ValidationError("user.error.disable_self")
        if not active and row["is_platform_admin"] and _other_active_admins(tx, row["id"]) == 0:
            raise ValidationError("user.error.last_admin")
        tx.execute_write("UPDATE users SET active = ?, sessions_valid_after = ?, updated_at = ? WHERE id = ?",
                         [active, now, now, row["id"]])
        audit.record(tx, principal, "user.enable" if active else "user.disable", resource_type="user",
                     resource_id=row["username"], now=now)


def _other_active_admins(tx: Tx, user_id: str) -> int:
    return int(tx.scalar("SELECT count(*) FROM users WHERE is_platform_admin AND active AND id <> ?", [user_id]))


def set_platform_admin(store: Store, principal: Principal, username: str, flag: bool,
                       now: datetime | None = None) -> None:
    require(principal, Action.MANAGE_USERS)
    with store.transaction() as tx:
        row = _update_target(tx, username)
        if not flag and row["is_platform_admin"] and _other_active_admins(tx, row["id"]) == 0:
            raise ValidationError("user.error.last_admin")
        tx.execute_write("UPDATE users SET is_platform_admin = ?, updated_at = ? WHERE id = ?",
                         [flag, clock.resolve(now), row["id"]])
        audit.record(tx, principal, "user.set_admin", resource_type="user", resource_id=row["username"],
                     detail={"before": row["is_platform_admin"], "after": flag}, now=now)


def reset_password(store: Store, principal: Principal, username: str, now: datetime | None = None) -> str:
    """Admin reset: returns a temporary password to show once; the user must change it at next login."""
    require(principal, Action.MANAGE_USERS)
    temporary = temporary_password(int(store.config["password_min_length"]))
    hashed = hash_password(temporary, store.config)
    now = clock.resolve(now)
    with store.transaction() as tx:
        row = _update_target(tx, username)
        tx.execute_write(
            "UPDATE users SET password_hash = ?, must_change_password = TRUE, sessions_valid_after = ?,"
            " updated_at = ? WHERE id = ?", [hashed, now, now, row["id"]])
        audit.record(tx, principal, "user.reset_password", resource_type="user", resource_id=row["username"], now=now)
    return temporary


def change_password(store: Store, principal: Principal, current: str, new: str,
                    now: datetime | None = None) -> datetime:
    """Change your own password (the current one is required); ends your other sessions.

    Returns the new session epoch: the caller's own session re-logs in after it.
    """
    validate_password(new, store.config)
    if current == new:
        raise ValidationError("user.error.same_password")
    with store.read() as tx:
        row = _update_target(tx, principal.username)
    if not check_password(current, row["password_hash"]):  # bcrypt outside the store lock
        raise ValidationError("user.error.current_password")
    hashed = hash_password(new, store.config)
    now = clock.resolve(now)
    with store.transaction() as tx:
        if _update_target(tx, principal.username)["password_hash"] != row["password_hash"]:
            raise ValidationError("user.error.current_password")  # changed meanwhile elsewhere
        tx.execute_write(
            "UPDATE users SET password_hash = ?, must_change_password = FALSE, sessions_valid_after = ?,"
            " updated_at = ? WHERE id = ?", [hashed, now, now, row["id"]])
        audit.record(tx, principal, "user.change_password", resource_type="user", resource_id=row["username"], now=now)
    return now


def set_preferences(store: Store, principal: Principal, *, language: str | None = None,
                    timezone: str | None = None, email: str | None = None,
                    display_name: str | None = None, now: datetime | None = None) -> None:
    """Your own profile and preferences."""
    _validate_profile(email, language, timezone)
    with store.transaction() as tx:
        row = _update_target(tx, principal.username)
        changes = {k: v for k, v in (("language", language), ("timezone", timezone), ("email", email),
                                     ("display_name", display_name)) if v is not None}
        if not changes:
            return
        sets = ", ".join(f"{k} = ?" for k in changes)
        tx.execute_write(f"UPDATE users SET {sets}, updated_at = ? WHERE id = ?",
                         [*changes.values(), clock.resolve(now), row["id"]])
        audit.record(tx, principal, "user.preferences", resource_type="user", resource_id=row["username"],
                     detail={k: {"before": row[k], "after": v} for k, v in changes.items()}, now=now)
