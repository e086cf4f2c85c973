"""Finding, starting and describing the scheduler service of a home (`python -m scheduler_service`).

One leader per home: the service holds an exclusive flock on `<platform>/scheduler.lock` for as long
as it leads; the kernel drops it when the process dies, so "is there a live leader?" is answered by
trying that lock, not by trusting a pid file. The leader also rewrites `scheduler.heartbeat` (JSON) every
loop, which the app shows (last beat, running runs). The app and the CLI call `ensure_running` so that
`make run` is all a user needs; a second service started meanwhile simply waits as a hot standby.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core import clock
from core.config import Config

_ROOT = str(Path(__file__).resolve().parent.parent)


def leader_lock_path(config: Config) -> Path:
    return config.platform_dir / "scheduler.lock"


def heartbeat_path(config: Config) -> Path:
    return config.platform_dir / "scheduler.heartbeat"


def service_log_path(config: Config) -> Path:
    return config.platform_dir / "logs" / "scheduler.log"


def leader_alive(config: Config) -> bool:
    """True while some process holds the leader lock (tried without waiting, released at once)."""
    path = leader_lock_path(config)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def write_heartbeat(config: Config, state: dict[str, Any], now: datetime | None = None) -> None:
    path = heartbeat_path(config)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps({**state, "at": clock.resolve(now).isoformat()}, default=str), encoding="utf-8")
    tmp.replace(path)


def status(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """What the app shows: alive (leader lock held), the last heartbeat and its age in seconds."""
    beat: dict[str, Any] = {}
    try:
        beat = json.loads(heartbeat_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    age = None
    if beat.get("at"):
        age = (clock.resolve(now) - datetime.fromisoformat(beat["at"])).total_seconds()
    return {"alive": leader_alive(config), "heartbeat": beat, "heartbeat_age": age}


def ensure_running(config: Config) -> bool:
    """Start a service for this home unless a live leader exists; True when one was started.

    A spawn lock keeps two callers (two browser sessions, the app and the CLI) from starting two at
    the same moment; even if they did, the second would only wait as a standby.
    """
    if leader_alive(config):
        return False
    config.platform_dir.mkdir(parents=True, exist_ok=True)
    spawn_lock = config.platform_dir / "scheduler.spawn.lock"
    fd = os.open(spawn_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # someone else is starting it right now
        if leader_alive(config) or _recently_spawned(config):
            return False
        start(config)
        return True
    finally:
        os.close(fd)


def _recently_spawned(config: Config, within: timedelta = timedelta(seconds=20)) -> bool:
    """A service started a moment ago may still be importing: do not start another."""
    marker = config.platform_dir / "scheduler.spawned"
    try:
        started = datetime.fromisoformat(marker.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return False
    return clock.utcnow() - started < within


def start(config: Config) -> subprocess.Popen:
    """Start `python -m scheduler_service` for this home, detached from the caller's session."""
    log_path = service_log_path(config)
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (config.platform_dir / "scheduler.spawned").write_text(clock.utcnow().isoformat(), encoding="utf-8")
    env = {**os.environ, "DOCETL_HOME_DIR": str(config.home), "PYTHONPATH": _ROOT}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "scheduler_service"], cwd=_ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
