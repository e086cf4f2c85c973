"""The service loop: lead (or wait as standby), reclaim, tick, heartbeat, sleep — all rules in core.

Learned from rq's scheduler: `work()` is short, signals only set a stop flag, teardown is in `finally`.
Learned from Prefect: restart safety comes from the store (runs are claimed with a status check in one
transaction), so two services can never execute one run twice; tests drive `tick()` one at a time.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any

from core import datasets, execute, runs, service_control, workers
from core.config import Config
from core.settings import open_store
from core.store import Store

log = logging.getLogger("scheduler_service")
SETTINGS_REFRESH = 5.0   # seconds between re-reads of the admins' settings (max running runs, …)
RECLAIM_EVERY = 10.0     # seconds between sweeps for work whose worker died (in-process runs, imports)


class Service:
    """One scheduler for one home. `work()` blocks; `tick()` does one round (for tests)."""

    def __init__(self, config: Config, *, poll_seconds: float | None = None) -> None:
        self.config = config
        self.store: Store = open_store(config)
        self.poll = poll_seconds if poll_seconds is not None else float(self.store.config["service_poll_seconds"])
        self.worker = workers.identity()
        self.children: dict[str, subprocess.Popen] = {}
        self.cancel_seen: dict[str, float] = {}
        self.importing: threading.Thread | None = None
        self.spares = datasets.import_spares()  # the standby import child, started once this service leads
        self.stopping = threading.Event()
        self._lock_fd: int | None = None
        self._refreshed = self._reclaimed = -RECLAIM_EVERY  # the first round reclaims

    # -- the loop ------------------------------------------------------------------------------------
    def work(self) -> None:
        self._signals()
        try:
            if not self.lead():
                return
            while not self.stopping.is_set() and self.config.home.exists():
                self.round()
                self.stopping.wait(self.poll)
        finally:
            self.teardown()

    def round(self) -> None:
        """One tick and a heartbeat; a failure (the store busy for a moment, a full disk) is logged and
        the next round tries again: the loop itself never dies of it."""
        try:
            self.tick()
            self.heartbeat()
        except Exception:
            log.exception("scheduler round failed; retrying next round")

    def lead(self) -> bool:
        """Take the leader lock, waiting as a hot standby while another service holds it."""
        path = service_control.leader_lock_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        while not self.stopping.is_set():
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.stopping.wait(self.poll)
                continue
            log.info("leading %s as %s", self.config.home, self.worker)
            self.spares.warm()  # the leader imports: its standby import child starts now
            return True
        return False

    def reclaim(self) -> None:
        """Runs and imports whose worker died go to failed/worker_lost and back to pending; so do runs
        this service marked running but has no child for (a start that failed half way)."""
        lost = runs.reclaim_lost(self.store, self._alive)
        orphans = [r for r in runs.running_of(self.store, self.worker) if r not in self.children]
        for run_id in orphans:
            execute.record_lost(self.store, run_id)
        reset = datasets.recover_interrupted(self.store)
        if lost or reset:
            log.warning("reclaimed %d lost runs, %d interrupted imports", len(lost), reset)
        self._reclaimed = time.monotonic()

    def tick(self) -> None:
        """One round: refresh settings, watch children, start queued runs, start one pending import."""
        now = time.monotonic()
        if now - self._refreshed >= SETTINGS_REFRESH:
            self.store, self._refreshed = open_store(self.config), now
        if now - self._reclaimed >= RECLAIM_EVERY:
            self.reclaim()
        for run_id, child in list(self.children.items()):
            if execute.supervise(self.store, run_id, child, cancel_grace=float(self.store.config["run_cancel_grace_seconds"]),
                                 cancel_seen=self.cancel_seen,
                                 timeout_minutes=float(self.store.config["run_timeout_minutes"])):
                del self.children[run_id]
        self._start_runs()
        self._start_import()

    def heartbeat(self) -> None:
        service_control.write_heartbeat(self.config, {"pid": os.getpid(), "worker": self.worker,
                                                      "running": sorted(self.children)})

    def teardown(self) -> None:
        """Stop children (their runs are recorded as cancelled) and give up leadership."""
        for run_id, child in self.children.items():
            try:
                execute.stop_child(self.store, run_id, child)
            except Exception:  # the next leader's reclaim records what this one could not
                log.exception("could not stop the run %s cleanly", run_id)
        self.children.clear()
        self.spares.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- pieces ----------------------------------------------------------------------------------------
    def _start_runs(self) -> None:
        limit = int(self.store.config["max_running_runs"])
        while len(self.children) < limit:
            run = runs.claim_next(self.store, self.worker, limit)
            if run is None:
                return
            log.info("starting run %s (%s)", run["id"], run["pipeline_name"])
            try:
                self.children[run["id"]] = execute.start_child(self.store, run)
            except Exception:  # no process, so never left running: failed/worker_lost (retryable)
                log.exception("could not start run %s", run["id"])
                execute.record_lost(self.store, run["id"])

    def _start_import(self) -> None:
        if self.importing is not None and self.importing.is_alive():
            return
        pending = datasets.next_pending(self.store)
        if pending is None:
            return
        self.importing = threading.Thread(target=self._ingest, args=(pending,), name="wb-import", daemon=True)
        self.importing.start()

    def _ingest(self, dataset_id: str) -> None:
        try:
            datasets.ingest(self.store, dataset_id, worker=self.worker, spares=self.spares)
        except Exception:  # the import records its own failure; this only keeps the loop alive
            log.exception("import %s failed", dataset_id)

    def _alive(self, worker: str | None) -> bool:
        """This service's own runs are alive exactly when their child is; others by their process."""
        if worker == self.worker:
            return True
        return workers.alive(worker)

    def _signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Service(Config.from_env()).work()
    return 0
