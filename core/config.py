"""Settings and the home layout (seed §7).

Every setting is declared once in `SETTINGS`: its environment variable (`DOCETL_WB_<KEY>`), default,
type and meaning. The README documents each one (a test checks). Admins may override the ones marked
`admin=True` in the app; those overrides live in the store (`core.settings`).
Nothing is read at import time: build a `Config` with `Config.from_env()` and pass it in.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from core.clock import zone
from core.errors import ValidationError

PLATFORM_DIR = "_platform"
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False,
          "": False}


@dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    help: str
    admin: bool = True
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], Any] | None = None  # raises ValidationError for a bad value
    bounds: tuple[float, float] | None = None  # inclusive range for numbers: out of it would break logins

    @property
    def env(self) -> str:
        return "DOCETL_WB_" + self.key.upper()

    def parse(self, raw: Any) -> Any:
        """Convert a raw value (env string or form input) or say clearly why not."""
        try:
            if self.type is bool:
                value = raw if isinstance(raw, bool) else _BOOLS[str(raw).strip().lower()]
            else:
                value = self.type(raw)
            if self.type is float and not math.isfinite(value):
                raise ValueError(raw)
        except (TypeError, ValueError, KeyError):
            raise ValidationError("error.setting_type", key=self.key, value=str(raw), type=self.type.__name__) from None
        if self.choices and value not in self.choices:
            raise ValidationError("error.setting_choice", key=self.key, value=str(raw), choices=", ".join(map(str, self.choices)))
        if self.type in (int, float) and value < 0:
            raise ValidationError("error.setting_negative", key=self.key, value=str(raw))
        if self.bounds and not self.bounds[0] <= value <= self.bounds[1]:
            low, high = (f"{b:g}" for b in self.bounds)
            raise ValidationError("error.setting_range", key=self.key, value=str(raw), min=low, max=high)
        if self.check:
            self.check(value)
        return value


def _model_name(value: str) -> None:
    """A litellm model name such as `gpt-4o-mini` or `openai/qwen-plus`: one word, not empty."""
    if not value.strip() or any(c.isspace() for c in value) or len(value) > 200:
        raise ValidationError("error.model_name", value=value[:200])


def _api_base(value: str) -> None:
    """Empty (the provider's default) or an http(s) URL without credentials (those go in *_API_KEY)."""
    if not value:
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is not None and (parts.username or parts.password):
        raise ValidationError("error.api_base_credentials")  # never echo a URL that carries a secret
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("error.api_base", value=value[:200])


SETTINGS: tuple[Setting, ...] = (
    Setting("store_lock_timeout_seconds", float, 10.0,
            "Longest wait for the metadata store lock before a 'metadata store busy' error.", admin=False,
            bounds=(0.1, 600)),
    Setting("login_max_failures", int, 5, "Failed logins for one username within the window that lock it.",
            bounds=(0, 1000)),
    Setting("login_failure_window_minutes", int, 15, "Window in which failed logins are counted.", bounds=(1, 10080)),
    Setting("login_lockout_minutes", int, 15, "How long a locked username (or client address) stays locked.",
            bounds=(1, 10080)),
    Setting("login_max_failures_per_address", int, 20,
            "Failed logins from one client address within the window that throttle that address.", bounds=(0, 100000)),
    Setting("allow_registration", bool, False, "Let people register an account themselves (it gets no namespace)."),
    Setting("default_language", str, "zh_CN", "Language for users who have not chosen one.", choices=("zh_CN", "en")),
    Setting("default_timezone", str, "Asia/Shanghai", "IANA timezone for users who have not chosen one.",
            check=zone),
    Setting("cookie_expiry_days", float, 7.0, "Days a login cookie stays valid.", bounds=(0.01, 365)),
    Setting("password_min_length", int, 8, "Shortest password accepted.", bounds=(1, 64)),
    Setting("dataset_max_mb", int, 50, "Largest file accepted by the Data Center, in MB.", bounds=(1, 2048)),
    Setting("dataset_max_rows", int, 200_000, "Most rows one dataset import may have.", bounds=(1, 10_000_000)),
    Setting("dataset_max_columns", int, 200, "Most columns one dataset import may have.", bounds=(1, 16_384)),
    Setting("llm_default_model", str, "gpt-4o-mini", "Model for pipelines that name none (litellm name).",
            check=_model_name),
    Setting("llm_api_base", str, "", "OpenAI-compatible endpoint for every run (default_lm_api_base); empty ="
            " the provider's default.", check=_api_base),
    Setting("allow_code_operations", bool, True, "Let pipelines run code operations (code_map, code_filter,"
            " code_reduce): Python that editors write, run with the scheduler service's rights."),
    Setting("max_running_runs", int, 2, "Runs executing at once across the platform; more wait in the queue"
            " (first in, first out).", bounds=(1, 64)),
    Setting("run_max_threads", int, 16, "Threads docetl uses inside one run (LLM requests stay under the global"
            " in-flight limit).", bounds=(1, 256)),
    Setting("run_timeout_minutes", float, 360.0, "Longest a run may take before the service stops it as failed"
            " (timeout); 0 = no limit.", bounds=(0, 10080)),
    Setting("run_cancel_grace_seconds", float, 10.0, "How long a cancelled run may take to stop by itself before"
            " its process is killed.", bounds=(0.5, 600)),
    Setting("service_poll_seconds", float, 1.0, "How often the scheduler service looks for queued runs and"
            " imports.", admin=False, bounds=(0.05, 60)),
    Setting("autostart_service", bool, True, "Start the scheduler service from the app or the CLI when none is"
            " running for this home.", admin=False),
    Setting("llm_max_inflight", int, 8, "Most LLM requests in flight at once, across every run and process on"
            " this machine.", bounds=(1, 256)),
    Setting("llm_requests_per_minute", int, 0, "Most LLM requests started per minute across the machine;"
            " 0 = no limit.", bounds=(0, 1_000_000)),
    Setting("bcrypt_rounds", int, 12, "bcrypt cost factor for new password hashes (tests use 4).", admin=False,
            bounds=(4, 16)),
)
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}

# Variables read outside SETTINGS (documented in the README as well).
OTHER_ENV = {
    "DOCETL_HOME_DIR": "Home directory; data lives in <home>/.docetl (default: the user's home).",
    "DOCETL_WB_PASSWORD": "Password for `python -m core --user NAME ...` (never a command-line argument).",
}


@dataclass(frozen=True)
class Config:
    """Resolved settings for one process or one request; immutable, so safe to share."""

    home: Path
    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        home = Path(env.get("DOCETL_HOME_DIR") or Path.home()).expanduser().resolve()
        values = {s.key: s.parse(env[s.env]) if s.env in env else s.default for s in SETTINGS}
        return cls(home=home, values=values)

    def __getitem__(self, key: str) -> Any:
        return self.values[key] if key in self.values else SETTINGS_BY_KEY[key].default

    def with_values(self, overrides: Mapping[str, Any]) -> "Config":
        return replace(self, values={**self.values, **overrides})

    # -- the layout of seed §7 -------------------------------------------------------------
    @property
    def docetl_dir(self) -> Path:
        return self.home / ".docetl"

    @property
    def platform_dir(self) -> Path:
        return self.docetl_dir / PLATFORM_DIR

    @property
    def db_path(self) -> Path:
        return self.platform_dir / "platform.duckdb"

    @property
    def lock_path(self) -> Path:
        return self.platform_dir / "platform.duckdb.lock"

    @property
    def secrets_dir(self) -> Path:
        return self.platform_dir / "secrets"

    @property
    def llm_lock_dir(self) -> Path:
        """Lock files of the machine-wide LLM request limit (core.llm_limiter)."""
        return self.platform_dir / "locks" / "llm"

    def namespace_dir(self, namespace: str) -> Path:
        """The folder of a namespace; the name must already be validated (core.namespaces)."""
        path = (self.docetl_dir / namespace).resolve()
        if path.parent != self.docetl_dir.resolve() or namespace == PLATFORM_DIR:
            raise ValidationError("namespace.error.name", name=namespace)
        return path


NAMESPACE_SUBDIRS = (
    "pipelines/store", "pipelines/configs", "pipelines/outputs", "runs/logs",
    "data_center/raw", "data_center/datasets/user", "data_center/datasets/generated",
    "documents", "files",
)
