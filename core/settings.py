"""Admin overrides of settings, stored in the metadata store and layered over the environment.

Precedence: admin override (store) > environment variable > built-in default.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core import audit, clock
from core.config import SETTINGS, SETTINGS_BY_KEY, Config, Setting
from core.errors import ValidationError
from core.permissions import Action, require
from core.principal import Principal
from core.store import Store


# cookie issue times are derived from this lifetime: changing it ends every session
_ENDS_SESSIONS = "cookie_expiry_days"


def _admin_setting(key: str) -> Setting:
    setting = SETTINGS_BY_KEY.get(key)
    if setting is None or not setting.admin:
        raise ValidationError("settings.error.unknown", key=key)
    return setting


def open_store(config: Config) -> Store:
    """A store whose config includes the admins' overrides (one unit of work to read them)."""
    store = Store(config)
    found = overrides(store)
    if not found:
        return store
    merged = Store(config.with_values(found))
    merged._schema_checked = True
    return merged


def overrides(store: Store) -> dict[str, Any]:
    """Valid stored overrides; one that no longer parses is ignored (and shown for repair on the System
    page) rather than locking everyone out of every entry point."""
    found = {}
    for row in store.execute("SELECT key, value FROM settings"):
        setting = SETTINGS_BY_KEY.get(row["key"])
        if setting is None or not setting.admin:
            continue
        try:
            found[row["key"]] = setting.parse(json.loads(row["value"]))
        except (ValidationError, ValueError):
            continue
    return found


def describe(store: Store, principal: Principal, base: Config) -> list[dict[str, Any]]:
    """Every setting with its default, environment value, override and effective value (for the admin page)."""
    require(principal, Action.MANAGE_SETTINGS)
    found = overrides(store)
    return [{"key": s.key, "env": s.env, "default": s.default, "environment": base.values.get(s.key, s.default),
             "override": found.get(s.key), "effective": found.get(s.key, base.values.get(s.key, s.default)),
             "admin": s.admin, "help": s.help, "choices": list(s.choices)} for s in SETTINGS]


def update(store: Store, principal: Principal, key: str, value: Any, now: datetime | None = None) -> Any:
    """Set an admin override after validating it; returns the parsed value."""
    require(principal, Action.MANAGE_SETTINGS)
    parsed = _admin_setting(key).parse(value)
    now = clock.resolve(now)
    with store.transaction() as tx:
        before = tx.scalar("SELECT value FROM settings WHERE key = ?", [key])
        tx.execute_write("INSERT INTO settings (key, value, updated_at, updated_by) VALUES (?,?,?,?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,"
                         " updated_by = excluded.updated_by", [key, json.dumps(parsed), now, principal.username])
        if key == _ENDS_SESSIONS:
            tx.execute_write("UPDATE users SET sessions_valid_after = ?", [now])
        audit.record(tx, principal, "settings.update", resource_type="setting", resource_id=key,
                     detail={"before": json.loads(before) if before else None, "after": parsed}, now=now)
    return parsed


def reset(store: Store, principal: Principal, key: str, now: datetime | None = None) -> None:
    """Drop an override: the environment value or the default applies again."""
    require(principal, Action.MANAGE_SETTINGS)
    _admin_setting(key)
    now = clock.resolve(now)
    with store.transaction() as tx:
        before = tx.scalar("SELECT value FROM settings WHERE key = ?", [key])
        tx.execute_write("DELETE FROM settings WHERE key = ?", [key])
        if key == _ENDS_SESSIONS and before is not None:
            tx.execute_write("UPDATE users SET sessions_valid_after = ?", [now])
        audit.record(tx, principal, "settings.reset", resource_type="setting", resource_id=key,
                     detail={"before": json.loads(before) if before else None}, now=now)


def system_info(store: Store, principal: Principal) -> dict[str, Any]:
    """Where the data lives and how big it is (admins)."""
    require(principal, Action.MANAGE_SETTINGS)
    with store.read() as tx:
        counts = tx.one("SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM namespaces) AS namespaces,"
                        " (SELECT max(version) FROM schema_migrations) AS schema_version")
    from core import llm_limiter, runs, service_control

    service = service_control.status(store.config)
    return {**counts, "home": str(store.config.home), "store_path": str(store.path), "store_bytes": store.size_bytes(),
            "service_alive": service["alive"], "service_pid": service["heartbeat"].get("pid"),
            "service_heartbeat_age": service["heartbeat_age"], "running_runs": runs.running_count(store),
            "llm_in_flight": llm_limiter.LLMLimiter.from_config(store.config).in_flight(),
            "llm_max_inflight": store.config["llm_max_inflight"]}
