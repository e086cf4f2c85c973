"""Audit log (seed §10.3): who did what, where, and whether it worked.

`record` takes the open transaction of the change it records, so both commit or neither does.
Details are scrubbed of anything that looks like a secret before they are written.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from core import clock
from core.errors import PermissionDenied, ValidationError
from core.permissions import Action, can
from core.principal import Principal
from core.store import Store, Tx

_SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "cookie", "hash")
COLUMNS = ("id", "occurred_at", "actor_user_id", "actor_username", "action", "resource_type", "resource_id",
           "namespace", "success", "ip", "user_agent", "request_id", "detail")


def scrub(detail: Any) -> Any:
    """Replace values under secret-looking keys, at any depth."""
    if isinstance(detail, dict):
        return {k: "***" if any(m in str(k).lower() for m in _SECRET_MARKERS) else scrub(v) for k, v in detail.items()}
    if isinstance(detail, (list, tuple)):
        return [scrub(v) for v in detail]
    return detail


def record(tx: Tx, principal: Principal, action: str, *, resource_type: str | None = None,
           resource_id: str | None = None, namespace: str | None = None, success: bool = True,
           detail: dict[str, Any] | None = None, now: datetime | None = None) -> None:
    """Write one audit row inside the caller's transaction."""
    tx.execute_write(
        "INSERT INTO audit_logs (occurred_at, actor_user_id, actor_username, action, resource_type, resource_id,"
        " namespace, success, ip, user_agent, request_id, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [clock.resolve(now), principal.user_id, principal.username or None, action, resource_type, resource_id,
         namespace, success, principal.ip, principal.user_agent, principal.request_id,
         json.dumps(scrub(detail), ensure_ascii=False, default=str) if detail else None],
    )


def record_now(store: Store, principal: Principal, action: str, **kwargs: Any) -> None:
    """An audit row of its own (failed logins, refused actions): nothing else to commit with it."""
    with store.transaction() as tx:
        record(tx, principal, action, **kwargs)


def readable_namespaces(principal: Principal, namespaces: list[str]) -> list[str]:
    """Of these namespaces, those whose audit rows the principal may read (for filters and queries)."""
    if can(principal, Action.READ_AUDIT_ALL):
        return sorted(namespaces)
    return sorted(ns for ns in namespaces if can(principal, Action.READ_AUDIT, ns))


def query(store: Store, principal: Principal, *, since: datetime | None = None, until: datetime | None = None,
          actor: str | None = None, action: str | None = None, namespace: str | None = None,
          success: bool | None = None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    """Audit rows the principal may read, newest first: all for platform admins, else own namespaces."""
    where, params = ["1=1"], []
    if not can(principal, Action.READ_AUDIT_ALL):
        allowed = readable_namespaces(principal, list(principal.memberships))
        if not allowed or (namespace and namespace not in allowed):
            raise PermissionDenied(action=Action.READ_AUDIT.value, namespace=namespace or "-", user=principal.username)
        where.append(f"namespace IN ({','.join('?' * len(allowed))})")
        params += allowed
    for column, op, value in (("occurred_at", ">=", since), ("occurred_at", "<", until),
                              ("actor_username", "=", actor), ("namespace", "=", namespace),
                              ("success", "=", success)):
        if value is not None and value != "":
            where.append(f"{column} {op} ?")
            params.append(value)
    if action:
        where.append("action LIKE ? ESCAPE '\\'")
        literal = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(literal.replace("*", "%"))
    if not 0 < limit <= 100_000:
        raise ValidationError("error.limit", value=limit, max=100_000)
    sql = (f"SELECT {', '.join(COLUMNS)} FROM audit_logs WHERE {' AND '.join(where)}"
           f" ORDER BY occurred_at DESC, id DESC LIMIT {int(limit)} OFFSET {int(offset)}")
    return store.execute(sql, params)


def export(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows as CSV or JSON text (times in ISO 8601 UTC)."""
    plain = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]
    if fmt == "json":
        return json.dumps(plain, ensure_ascii=False, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(plain)
        return buf.getvalue()
    raise ValidationError("error.export_format", value=fmt, choices="csv, json")
