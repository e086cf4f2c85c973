"""LLM settings (platform admins): provider API keys stored encrypted, and the defaults every run uses.

Keys are environment variable names (`OPENAI_API_KEY`, `DEEPSEEK_API_KEY`, `OPENAI_API_BASE`...) that
litellm reads. Their values are encrypted with Fernet under the platform key
`<home>/.docetl/_platform/secrets/llm_key` (mode 0600, made on first use like the cookie key); the store
holds only ciphertext. A plaintext value leaves this module in one place only, `run_environment`, for
the executor to put into a run's environment. It never reaches logs, audit rows (they name the key,
never its value, not even masked), screens (`list_keys` masks it), exceptions or reprs.

If the key file is lost or replaced, stored values cannot be decrypted: `list_keys` says so per entry
and `run_environment` refuses with an error naming the keys to enter again.
The default model and API base are ordinary admin settings (`llm_default_model`, `llm_api_base`).
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from core import audit, clock
from core.auth import _secret_file
from core.config import SETTINGS_BY_KEY
from core.errors import NotFound, ValidationError, WorkbenchError
from core.permissions import Action, require
from core.principal import Principal
from core.settings import overrides
from core.store import Store

KEY_FILE = "llm_key"
NAME_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*_API_(KEY|BASE)")
MAX_NAME = 64
MAX_VALUE = 4096
KNOWN_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
               "DASHSCOPE_API_KEY", "OPENAI_API_BASE")


class SecretUnreadableError(WorkbenchError):
    """Stored API keys that the platform key cannot decrypt (the key file was lost or replaced)."""

    key = "llm.error.undecryptable"


class RunEnvironment(dict):
    """name -> plaintext for a run's environment; its repr names the keys only, so a stray log line or
    traceback cannot print a secret."""

    def __repr__(self) -> str:
        return f"RunEnvironment({sorted(self)})"

    __str__ = __repr__


# -- the platform key ------------------------------------------------------------------------------
def _key_path(store: Store) -> Path:
    return store.config.secrets_dir / KEY_FILE


def _fernet(store: Store) -> Fernet:
    """The platform key, created on first use; a file that holds no valid Fernet key is a clear error."""
    path = _key_path(store)
    try:
        return Fernet(_secret_file(path, lambda: Fernet.generate_key().decode()).encode())
    except (ValueError, TypeError):
        raise ValidationError("llm.error.key_file", path=str(path)) from None


def _fernet_if_valid(store: Store) -> Fernet | None:
    """For reads: None when the key file is missing or damaged (every entry is then unreadable); never
    creates a key file just to look."""
    if not _key_path(store).exists():
        return None
    try:
        return _fernet(store)
    except WorkbenchError:
        return None


def _decrypt(fernet: Fernet | None, ciphertext: str) -> str | None:
    if fernet is None:
        return None
    try:
        return fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        return None


# -- validation and masking ------------------------------------------------------------------------
def check_name(name: str) -> str:
    """An environment variable name litellm reads: `[A-Z][A-Z0-9_]*_API_KEY` or `..._API_BASE`.
    A bad name is not echoed back: it may be a key pasted into the wrong field."""
    name = (name or "").strip()
    if len(name) > MAX_NAME or not NAME_PATTERN.fullmatch(name):
        raise ValidationError("llm.error.name", examples=", ".join(KNOWN_NAMES[:3]))
    return name


def _check_value(name: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError("llm.error.value_empty", name=name)
    if len(value) > MAX_VALUE or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError("llm.error.value_bad", name=name, max=MAX_VALUE)
    return value


def mask(value: str) -> str:
    """Enough to recognise a key, never enough to use it: `sk-…abcd`. The last four characters only
    for values of 12 or more characters, a short `xx-` prefix only for values of 20 or more."""
    if len(value) < 12:
        return "…"
    head = ""
    dash = value.find("-")
    if len(value) >= 20 and 0 < dash <= 4:
        head = value[:dash + 1]
    return f"{head}…{value[-4:]}"


# -- admin functions -------------------------------------------------------------------------------
def set_key(store: Store, principal: Principal, name: str, value: str, now: datetime | None = None) -> None:
    """Add or replace one key; audited with its name only."""
    require(principal, Action.MANAGE_LLM_SETTINGS)
    name = check_name(name)
    plain = _check_value(name, value)
    ciphertext = _fernet(store).encrypt(plain.encode("utf-8")).decode("ascii")
    now = clock.resolve(now)
    with store.transaction() as tx:
        replaced = tx.scalar("SELECT count(*) FROM llm_secrets WHERE name = ?", [name]) > 0
        tx.execute_write("INSERT INTO llm_secrets (name, ciphertext, updated_at, updated_by) VALUES (?,?,?,?)"
                         " ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext,"
                         " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                         [name, ciphertext, now, principal.username])
        audit.record(tx, principal, "llm.key_set", resource_type="llm_key", resource_id=name,
                     detail={"replaced": replaced}, now=now)


def delete_key(store: Store, principal: Principal, name: str, now: datetime | None = None) -> None:
    """Remove one key (runs then get the variable from the service's environment, if it sets it)."""
    require(principal, Action.MANAGE_LLM_SETTINGS)
    name = check_name(name)
    now = clock.resolve(now)
    with store.transaction() as tx:
        if not tx.scalar("SELECT count(*) FROM llm_secrets WHERE name = ?", [name]):
            raise NotFound("llm.error.not_found", name=name)
        tx.execute_write("DELETE FROM llm_secrets WHERE name = ?", [name])
        audit.record(tx, principal, "llm.key_delete", resource_type="llm_key", resource_id=name, now=now)


def list_keys(store: Store, principal: Principal) -> list[dict[str, Any]]:
    """Stored keys by name: `masked` value (None when it cannot be decrypted: `readable` is then False
    and the admin must enter it again), `updated_at`, `updated_by`. Never a plaintext or ciphertext."""
    require(principal, Action.MANAGE_LLM_SETTINGS)
    rows = store.execute("SELECT name, ciphertext, updated_at, updated_by FROM llm_secrets ORDER BY name")
    fernet = _fernet_if_valid(store) if rows else None
    found = []
    for row in rows:
        plain = _decrypt(fernet, row["ciphertext"])
        found.append({"name": row["name"], "masked": mask(plain) if plain is not None else None,
                      "readable": plain is not None, "updated_at": row["updated_at"],
                      "updated_by": row["updated_by"]})
    return found


# -- for the executor ------------------------------------------------------------------------------
def run_environment(store: Store) -> RunEnvironment:
    """Every stored key, decrypted: name -> plaintext, to add over the service's environment for a run
    (a key set here wins over the same variable in the environment, as admin settings do).

    It takes no principal on purpose: the trusted worker calls it to start a run that any editor may
    have queued, and editors may not manage LLM settings. The keys are lent to the run's process, never
    shown to its user. Whoever can call this in-process can read the key file and the store anyway.
    Raises SecretUnreadableError naming the keys to enter again when any cannot be decrypted.
    """
    rows = store.execute("SELECT name, ciphertext FROM llm_secrets ORDER BY name")
    fernet = _fernet_if_valid(store) if rows else None
    env, unreadable = RunEnvironment(), []
    for row in rows:
        plain = _decrypt(fernet, row["ciphertext"])
        if plain is None:
            unreadable.append(row["name"])
        else:
            env[row["name"]] = plain
    if unreadable:
        raise SecretUnreadableError(names=", ".join(unreadable))
    return env


def run_defaults(store: Store) -> dict[str, str | None]:
    """The pipeline defaults a run applies when its config names none: `default_model` and
    `default_lm_api_base` (None: the provider's own endpoint). Admin overrides are read fresh, so a
    long-running service sees a change without a restart."""
    config = store.config.with_values(overrides(store))
    base = str(config["llm_api_base"] or "") or None
    return {"default_model": str(config["llm_default_model"] or SETTINGS_BY_KEY["llm_default_model"].default),
            "default_lm_api_base": base}
