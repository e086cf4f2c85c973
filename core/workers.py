"""Who is doing a piece of work, and whether that process is still alive.

A run or an import in progress records its worker as `host:pid:start` (the process start time in
clock ticks since boot, from /proc). A pid alone is not enough: after a crash the kernel may give the
same pid to an unrelated process. Work whose worker is gone is reclaimed (runs → failed/worker_lost,
imports → pending) instead of staying `running`/`processing` forever.
"""
from __future__ import annotations

import os
import socket


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (after the parenthesised command name, which may contain spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", errors="replace")
    except OSError:
        return None
    try:
        return stat[stat.rindex(")") + 2:].split()[19]
    except (ValueError, IndexError):
        return None


def identity(pid: int | None = None) -> str:
    """This process's (or `pid`'s) worker identity."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def alive(worker: str | None) -> bool:
    """True when `worker` names a live process on this host. Another host's worker counts as alive:
    we cannot see it, and reclaiming its work would run it twice."""
    if not worker:
        return False
    try:
        host, pid, start = worker.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    ticks = _start_ticks(pid_number)
    if ticks is None:
        return False
    if _zombie(pid_number):
        return False
    return start == "?" or ticks == start


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", errors="replace")
        return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return True
