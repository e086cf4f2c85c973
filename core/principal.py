"""Who is acting: a user with their memberships, or the local operator (CLI, notebook on the host)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum


class Role(str, Enum):
    NAMESPACE_ADMIN = "namespace_admin"
    EDITOR = "editor"
    VIEWER = "viewer"


OPERATOR_USERNAME = "local-operator"


@dataclass(frozen=True)
class Principal:
    """The acting identity plus the client it acts from (for audit)."""

    user_id: str | None
    username: str
    is_platform_admin: bool = False
    memberships: dict[str, Role] = field(default_factory=dict)  # namespace name -> role
    is_operator: bool = False
    must_change_password: bool = False  # a temporary password: nothing but changing it is allowed
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def operator(cls) -> "Principal":
        """Whoever runs the CLI on the host has the files anyway: full rights, audited as such."""
        return cls(user_id=None, username=OPERATOR_USERNAME, is_platform_admin=True, is_operator=True)

    @classmethod
    def anonymous(cls, ip: str | None = None, user_agent: str | None = None) -> "Principal":
        return cls(user_id=None, username="", ip=ip, user_agent=user_agent)

    def role_in(self, namespace: str) -> Role | None:
        return self.memberships.get(namespace)

    def with_client(self, ip: str | None, user_agent: str | None, request_id: str | None = None) -> "Principal":
        return replace(self, ip=ip, user_agent=user_agent, request_id=request_id)
