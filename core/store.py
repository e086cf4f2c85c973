"""The metadata store: one facade that owns every connection to the DuckDB file.

DuckDB lets one process hold the file; while it does, no other process can open it at all. So no
process keeps the file open: each unit of work takes one cross-process lock, attaches the database,
works, detaches it (DuckDB checkpoints on detach) and releases the lock. The wait is bounded and ends
in `StoreBusy`. Verb families follow Datasette: `execute` reads, `execute_write` writes,
`transaction()` groups writes.

Two measured choices keep a unit short (`benchmarks/store.py`):
- Opening DuckDB costs ~13 ms of CPU building its built-in catalog, whatever the file. Each process
  therefore starts one in-memory DuckDB instance once and, per unit, only ATTACHes the file to it
  (~1.5 ms) and DETACHes it afterwards (~0.5 ms, a few ms after writes), which releases DuckDB's own
  lock on the file. The benchmark's page render holds the lock ~8 ms instead of ~26 ms.
- The lock is fair. It is exclusive for readers and writers alike, so a writer never starves behind a
  stream of readers; and a process that just released it cannot take it again while another waits
  (a polling lock let one busy process win over and over: p99 of 0.6-1 s with three processes).
  See `_FairLock`.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from core.config import Config
from core.errors import QueryTimeout, StoreBusy, WorkbenchError
from core.migrations import MIGRATIONS

_LOG = logging.getLogger(__name__)
_FOREIGN_RETRY_SECONDS = 0.02
_OPEN_UNITS = threading.local()  # the store files this thread is inside a unit of work on


# -- the cross-process lock ------------------------------------------------------------------------
class _LockTimeout(Exception):
    pass


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


class _Wait:
    """Shared between a caller and the helper thread that blocks in the kernel for it."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.event = threading.Event()
        self.done = False
        self.abandoned = False
        self.error: BaseException | None = None


def _block(gate: int, main: int, have_gate: bool, wait: _Wait) -> None:
    """Helper thread: queue at the gate, then wait for the lock; give it up if the caller stopped waiting."""
    error: BaseException | None = None
    try:
        if not have_gate:
            fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(main, fcntl.LOCK_EX)
    except BaseException as exc:  # handed to the caller
        error = exc
    finally:
        os.close(gate)  # lets the next waiter in
    with wait.mutex:
        wait.error = error
        if wait.abandoned or error is not None:
            os.close(main)  # a lock nobody waits for any more is released at once
        wait.done = True
    wait.event.set()


class _FairLock:
    """An exclusive lock between processes (and threads), fair, with a bounded wait.

    flock(2) on two files beside the database. A process first takes the gate, then the lock itself,
    and lets the gate go as soon as it has the lock. So at most one process waits on the lock, and the
    process that just released the lock has to queue at the gate behind it: nobody can take the lock
    twice in a row while another process waits for it. Waiting blocks in the kernel (woken on release,
    no polling, no idle gap); to bound the wait the blocking call runs in a helper thread that the caller
    stops waiting for at the deadline (if that thread gets the lock later, it releases it at once).
    The kernel drops flock locks when a process dies, so a crash, even kill -9, never leaves it locked.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gate_path = path.with_name(path.name + ".gate")

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def acquire(self, timeout: float) -> int:
        """Returns the locked descriptor (pass it to `release`); raises `_LockTimeout`."""
        gate = self._open(self.gate_path)
        try:
            main = self._open(self.path)
        except BaseException:
            os.close(gate)
            raise
        try:
            have_gate = _try_flock(gate)
            if have_gate and _try_flock(main):  # nobody waiting and nobody holding it
                os.close(gate)
                return main
        except BaseException:
            os.close(gate)
            os.close(main)
            raise
        wait = _Wait()
        threading.Thread(target=_block, args=(gate, main, have_gate, wait), daemon=True,
                         name="docetl-store-lock").start()
        if not wait.event.wait(max(timeout, 0.0)):
            with wait.mutex:
                if not wait.done:
                    wait.abandoned = True
                    raise _LockTimeout()
        if wait.error is not None:
            raise wait.error
        return main

    @staticmethod
    def release(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# -- this process's DuckDB instance ----------------------------------------------------------------
_ENGINE_MUTEX = threading.Lock()
_ENGINE: tuple[int, duckdb.DuckDBPyConnection] | None = None
_ALIASES = itertools.count(1)


def _engine() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB instance started once per process (after a fork, the child starts its own)."""
    global _ENGINE
    with _ENGINE_MUTEX:
        if _ENGINE is None or _ENGINE[0] != os.getpid():
            _ENGINE = (os.getpid(), duckdb.connect(":memory:"))
        return _ENGINE[1]


def _discard_engine(engine: duckdb.DuckDBPyConnection) -> None:
    """Forget an instance that failed to let a file go; closing it releases every file it attached."""
    global _ENGINE
    with _ENGINE_MUTEX:
        if _ENGINE is not None and _ENGINE[1] is engine:
            _ENGINE = None
    try:
        engine.close()
    except Exception:  # already broken; nothing more to release
        pass


def _rollback_quietly(conn: duckdb.DuckDBPyConnection) -> None:
    try:
        conn.execute("ROLLBACK")
    except Exception:  # no transaction was open, or the connection is already gone
        pass


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class Tx:
    """A connection inside one unit of work; rows come back as dicts."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None,
                timeout: float | None = None) -> list[dict[str, Any]]:
        """Rows as dicts; with `timeout` (seconds) a query that runs longer is interrupted (QueryTimeout)."""
        timer = threading.Timer(timeout, self.conn.interrupt) if timeout else None
        if timer:
            timer.start()
        try:
            cur = self.conn.execute(sql, params or [])
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except duckdb.InterruptException:
            raise QueryTimeout(seconds=timeout) from None
        finally:
            if timer:
                timer.cancel()

    def one(self, sql: str, params: Sequence[Any] | dict | None = None) -> dict[str, Any] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        row = self.conn.execute(sql, params or []).fetchone()
        return row[0] if row else None

    def execute_write(self, sql: str, params: Sequence[Any] | dict | None = None) -> int:
        """Run a write; returns the number of rows changed where DuckDB reports it."""
        row = self.conn.execute(sql, params or []).fetchone()
        return int(row[0]) if row and isinstance(row[0], int) else 0


class Store:
    """Opens, locks, migrates and closes the DuckDB file for each unit of work."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.path: Path = config.db_path
        self.lock_path: Path = config.lock_path
        self.timeout = float(config["store_lock_timeout_seconds"])
        self._lock = _FairLock(self.lock_path)
        self._schema_checked = False

    # -- units of work ---------------------------------------------------------------------
    @contextmanager
    def _unit(self) -> Iterator[duckdb.DuckDBPyConnection]:
        open_here: set[Path] = _OPEN_UNITS.__dict__.setdefault("paths", set())
        if self.path in open_here:
            # it would wait for itself until the timeout and then blame "another process"
            raise RuntimeError(f"a unit of work on {self.path} is already open in this thread;"
                               " pass its Tx along instead of opening another one")
        if not self.path.parent.is_dir():  # users' hashes live here: only the owner may enter
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
        deadline = time.monotonic() + self.timeout
        try:
            held = self._lock.acquire(self.timeout)
        except _LockTimeout:
            raise StoreBusy(seconds=self.timeout, path=str(self.path)) from None
        open_here.add(self.path)
        try:
            engine, conn, alias = self._attach(deadline)
            try:
                conn.execute("SET TimeZone='UTC'")
                if not self._schema_checked:
                    migrate(conn, self.path)
                    self._schema_checked = True
                yield conn
            except BaseException:
                _rollback_quietly(conn)  # a unit that failed inside its own BEGIN leaves nothing behind
                raise
            finally:
                self._detach(engine, conn, alias)
        finally:
            open_here.discard(self.path)
            _FairLock.release(held)

    def _attach(self, deadline: float) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection, str]:
        """Attach the file, retrying while a foreign process (one not using our lock) holds it open."""
        engine = _engine()
        conn = engine.cursor()
        alias = f"platform_{next(_ALIASES)}"
        quoted = str(self.path).replace("'", "''")
        while True:
            try:
                conn.execute(f"ATTACH '{quoted}' AS {alias}")
                break
            except BaseException as exc:
                if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                    conn.close()
                    if _is_lock_conflict(exc):
                        raise StoreBusy(seconds=self.timeout, path=str(self.path)) from None
                    raise
                time.sleep(_FOREIGN_RETRY_SECONDS)
        try:
            conn.execute(f"USE {alias}")
        except BaseException:
            self._detach(engine, conn, alias)
            raise
        return engine, conn, alias

    @staticmethod
    def _detach(engine: duckdb.DuckDBPyConnection, conn: duckdb.DuckDBPyConnection, alias: str) -> None:
        """Let the file go (DuckDB checkpoints it on detach); it must never stay open past our lock."""
        try:
            conn.execute("USE memory")
            conn.execute(f"DETACH {alias}")
        except Exception:
            _LOG.warning("could not detach the metadata store; restarting this process's DuckDB instance",
                         exc_info=True)
            conn.close()
            _discard_engine(engine)  # closing the instance releases every file it attached
        else:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """Several reads in one unit of work (one page render), without a transaction."""
        with self._unit() as conn:
            yield Tx(conn)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Writes that belong together (a change and its audit row): all or nothing."""
        with self._unit() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield Tx(conn)
            except BaseException:
                _rollback_quietly(conn)
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None,
                timeout: float | None = None) -> list[dict[str, Any]]:
        with self.read() as tx:
            return tx.execute(sql, params, timeout=timeout)

    def execute_write(self, sql: str, params: Sequence[Any] | dict | None = None) -> int:
        with self.transaction() as tx:
            return tx.execute_write(sql, params)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


# -- migrations ------------------------------------------------------------------------------
def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_catalog = current_database() AND table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def migrate(conn: duckdb.DuckDBPyConnection, path: Path, migrations=MIGRATIONS) -> int:
    """Apply pending migrations, each in its own transaction; back up the file before upgrading."""
    current = schema_version(conn)
    latest = migrations[-1][0] if migrations else 0
    if current > latest:
        raise WorkbenchError("error.store_newer", found=current, known=latest)
    if current == latest:
        return current
    if current > 0:
        conn.execute("CHECKPOINT")
        shutil.copy2(path, path.with_name(f"{path.name}.v{current}.bak"))
    for version, name, statements in migrations:
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            if version == 1:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                             " name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return latest
