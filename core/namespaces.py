"""Namespaces (the isolation boundary, seed §10) and memberships with a role in each."""
from __future__ import annotations

import os
import re
import uuid
from datetime import datetime
from typing import Any

from core import audit, clock
from core.config import NAMESPACE_SUBDIRS
from core.errors import NotFound, ValidationError
from core.permissions import Action, require, visible_namespaces
from core.principal import Principal, Role
from core.store import Store, Tx
from core.users import get_row as get_user_row

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED = frozenset({"cache"})  # <home>/.docetl/cache is docetl's own (LLM and optimizer caches)


def validate_name(name: str) -> str:
    clean = (name or "").strip()
    if not NAME_RE.match(clean) or clean in RESERVED:
        raise ValidationError("namespace.error.name", name=name or "")
    return clean


def parse_role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ValidationError("namespace.error.role", role=str(role),
                              choices=", ".join(r.value for r in Role)) from None


def memberships_of(tx: Tx, user_id: str) -> dict[str, Role]:
    rows = tx.execute("SELECT n.name, m.role FROM memberships m JOIN namespaces n ON n.id = m.namespace_id"
                      " WHERE m.user_id = ?", [user_id])
    return {r["name"]: Role(r["role"]) for r in rows}


def _get(tx: Tx, name: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM namespaces WHERE name = ?", [name])
    if not row:
        raise NotFound("namespace.error.not_found", name=name)
    return row


def create(store: Store, principal: Principal, name: str, description: str = "",
           now: datetime | None = None) -> dict[str, Any]:
    """A namespace row plus its folder tree (seed §7) under the home."""
    require(principal, Action.MANAGE_NAMESPACES)
    name = validate_name(name)
    folder = store.config.namespace_dir(name)
    with store.transaction() as tx:
        if tx.one("SELECT 1 FROM namespaces WHERE name = ?", [name]):
            raise ValidationError("namespace.error.exists", name=name)
        tx.execute_write("INSERT INTO namespaces (id, name, description, created_at, created_by) VALUES (?,?,?,?,?)",
                         [uuid.uuid4().hex, name, description or "", clock.resolve(now), principal.username])
        folder.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made rolls the row back
        os.chmod(folder, 0o700)  # roles guard the data: other local accounts must not read around them
        for sub in NAMESPACE_SUBDIRS:
            (folder / sub).mkdir(parents=True, exist_ok=True)
        audit.record(tx, principal, "namespace.create", resource_type="namespace", resource_id=name,
                     namespace=name, now=now)
        return _get(tx, name)


def list_visible(store: Store, principal: Principal) -> list[dict[str, Any]]:
    """Namespaces the principal may see, with the principal's role in each."""
    rows = store.execute("SELECT name, description, created_at FROM namespaces ORDER BY name")
    allowed = set(visible_namespaces(principal, [r["name"] for r in rows]))
    return [{**r, "role": (principal.role_in(r["name"]).value if principal.role_in(r["name"])
                           else ("platform_admin" if principal.is_platform_admin else None))}
            for r in rows if r["name"] in allowed]


def list_members(store: Store, principal: Principal, namespace: str) -> list[dict[str, Any]]:
    require(principal, Action.VIEW, namespace)
    with store.read() as tx:
        ns = _get(tx, namespace)
        return tx.execute("SELECT u.username, u.display_name, m.role, m.created_at FROM memberships m"
                          " JOIN users u ON u.id = m.user_id WHERE m.namespace_id = ? ORDER BY u.username",
                          [ns["id"]])


def add_member(store: Store, principal: Principal, namespace: str, username: str, role: str | Role,
               now: datetime | None = None) -> None:
    """Grant a role (or change it) in one transaction with its audit row."""
    require(principal, Action.MANAGE_MEMBERS, namespace)
    role = parse_role(role)
    with store.transaction() as tx:
        ns = _get(tx, namespace)
        user = get_user_row(tx, username)
        if not user:
            raise NotFound("user.error.not_found", name=username)
        before = tx.scalar("SELECT role FROM memberships WHERE namespace_id = ? AND user_id = ?",
                           [ns["id"], user["id"]])
        if before:
            tx.execute_write("UPDATE memberships SET role = ? WHERE namespace_id = ? AND user_id = ?",
                             [role.value, ns["id"], user["id"]])
        else:
            tx.execute_write("INSERT INTO memberships (namespace_id, user_id, role, created_at) VALUES (?,?,?,?)",
                             [ns["id"], user["id"], role.value, clock.resolve(now)])
        audit.record(tx, principal, "member.grant", resource_type="membership", resource_id=user["username"],
                     namespace=namespace, detail={"before": before, "after": role.value}, now=now)


def remove_member(store: Store, principal: Principal, namespace: str, username: str,
                  now: datetime | None = None) -> None:
    require(principal, Action.MANAGE_MEMBERS, namespace)
    with store.transaction() as tx:
        ns = _get(tx, namespace)
        user = get_user_row(tx, username)
        before = user and tx.scalar("SELECT role FROM memberships WHERE namespace_id = ? AND user_id = ?",
                                    [ns["id"], user["id"]])
        if not before:
            raise NotFound("namespace.error.not_member", name=username, namespace=namespace)
        tx.execute_write("DELETE FROM memberships WHERE namespace_id = ? AND user_id = ?", [ns["id"], user["id"]])
        audit.record(tx, principal, "member.revoke", resource_type="membership", resource_id=user["username"],
                     namespace=namespace, detail={"before": before}, now=now)
