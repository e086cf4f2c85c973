"""The one place that decides every permission (SPEC roles table, seed §10.2).

Every core function that reads or changes namespaced data calls `require(principal, action, ns)`.
Pages may hide what `can` refuses, but hiding is only convenience.
"""
from __future__ import annotations

from enum import Enum

from core.errors import PermissionDenied
from core.principal import Principal, Role


class Action(str, Enum):
    VIEW = "view"                              # dashboard, runs, pipelines, deployments, datasets
    EDIT_PIPELINE = "edit_pipeline"            # edit pipelines, run, cancel
    RUN = "run"
    CANCEL_RUN = "cancel_run"
    MANAGE_DEPLOYMENTS = "manage_deployments"  # create / edit / enable / trigger
    UPLOAD_DATASET = "upload_dataset"          # upload, save outputs as datasets
    DELETE_RESOURCE = "delete_resource"        # datasets, pipelines, deployments
    MANAGE_MEMBERS = "manage_members"
    READ_AUDIT = "read_audit"
    SQL_ANALYTICS = "sql_analytics"
    # platform-wide actions (no namespace)
    MANAGE_USERS = "manage_users"
    MANAGE_NAMESPACES = "manage_namespaces"
    MANAGE_LLM_SETTINGS = "manage_llm_settings"
    MANAGE_SETTINGS = "manage_settings"
    READ_AUDIT_ALL = "read_audit_all"


_ALL_ROLES = frozenset(Role)
_WRITERS = frozenset({Role.NAMESPACE_ADMIN, Role.EDITOR})
_ADMINS = frozenset({Role.NAMESPACE_ADMIN})

# Namespace actions -> roles allowed in that namespace. Platform admins may do everything.
NAMESPACE_RULES: dict[Action, frozenset[Role]] = {
    Action.VIEW: _ALL_ROLES,
    Action.SQL_ANALYTICS: _ALL_ROLES,
    Action.EDIT_PIPELINE: _WRITERS,
    Action.RUN: _WRITERS,
    Action.CANCEL_RUN: _WRITERS,
    Action.MANAGE_DEPLOYMENTS: _WRITERS,
    Action.UPLOAD_DATASET: _WRITERS,
    Action.DELETE_RESOURCE: _ADMINS,
    Action.MANAGE_MEMBERS: _ADMINS,
    Action.READ_AUDIT: _ADMINS,
}
PLATFORM_ACTIONS = frozenset({Action.MANAGE_USERS, Action.MANAGE_NAMESPACES, Action.MANAGE_LLM_SETTINGS,
                              Action.MANAGE_SETTINGS, Action.READ_AUDIT_ALL})


def can(principal: Principal, action: Action, namespace: str | None = None) -> bool:
    """True when the principal may perform the action (in the namespace, for namespace actions)."""
    if not principal.username or principal.must_change_password:
        return False
    if principal.is_platform_admin:
        return True
    if action in PLATFORM_ACTIONS or namespace is None:
        return False
    role = principal.role_in(namespace)
    return role is not None and role in NAMESPACE_RULES[action]


def require(principal: Principal, action: Action, namespace: str | None = None) -> None:
    """Refuse with a clear error naming the action and the namespace."""
    if principal.must_change_password:
        raise PermissionDenied("auth.error.must_change_password")
    if not can(principal, action, namespace):
        raise PermissionDenied(action=action.value, namespace=namespace or "-", user=principal.username or "-")


def visible_namespaces(principal: Principal, all_namespaces: list[str]) -> list[str]:
    """Namespaces whose data the principal may see: all for platform admins, else their own."""
    if principal.is_platform_admin:
        return sorted(all_namespaces)
    return sorted(ns for ns in all_namespaces if can(principal, Action.VIEW, ns))


def can_somewhere(principal: Principal, action: Action) -> bool:
    """True when the principal may perform the action in at least one namespace (for navigation)."""
    if principal.is_platform_admin:
        return True
    return any(can(principal, action, ns) for ns in principal.memberships)
