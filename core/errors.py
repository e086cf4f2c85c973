"""Errors that carry a catalog key, so every entry point can say them in the user's language.

`str(error)` is English (CLI, logs); pages call `error.message(lang)`.
"""
from __future__ import annotations

from typing import Any


class WorkbenchError(Exception):
    """Base of every error a user may see: a catalog key plus its parameters."""

    key = "error.generic"

    def __init__(self, key: str | None = None, /, **params: Any) -> None:
        self.key = key or self.key
        self.params = params
        super().__init__(self.message("en"))

    def message(self, lang: str) -> str:
        from core.i18n import t

        return t(self.key, lang, **self.params)


class StoreBusy(WorkbenchError):
    """The metadata store stayed locked past the bounded wait."""

    key = "error.store_busy"


class QueryTimeout(WorkbenchError):
    """A query ran past its time limit and was interrupted."""

    key = "error.query_timeout"


class PermissionDenied(WorkbenchError):
    key = "error.permission_denied"


class NotFound(WorkbenchError):
    key = "error.not_found"


class ValidationError(WorkbenchError):
    key = "error.invalid"


class AuthenticationFailed(WorkbenchError):
    key = "auth.error.bad_credentials"


class LockedOut(WorkbenchError):
    key = "auth.error.locked"
