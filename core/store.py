"""The metadata store: one facade that owns every connection to the DuckDB file.

DuckDB lets one process hold the file; while it does, no other process can open it at all. So no
process keeps a connection: each unit of work takes one cross-process lock file, opens the database,
works, closes it and releases the lock. The lock is exclusive for readers and writers alike, so a
writer never starves behind a stream of readers; the wait is bounded and ends in `StoreBusy`.
Verb families follow Datasette: `execute` reads, `execute_write` writes, `transaction()` groups writes.
"""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
from filelock import FileLock, Timeout

from core.config import Config
from core.errors import StoreBusy, WorkbenchError
from core.migrations import MIGRATIONS

_POLL_SECONDS = 0.002


class Tx:
    """A connection inside one unit of work; rows come back as dicts."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params or [])
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

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
        self._schema_checked = False

    # -- units of work ---------------------------------------------------------------------
    @contextmanager
    def _unit(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        lock = FileLock(self.lock_path, timeout=self.timeout, poll_interval=_POLL_SECONDS,
                        thread_local=False, is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            raise StoreBusy(seconds=self.timeout, path=str(self.path)) from None
        try:
            conn = self._connect(deadline)
            try:
                conn.execute("SET TimeZone='UTC'")
                if not self._schema_checked:
                    migrate(conn, self.path)
                    self._schema_checked = True
                yield conn
            finally:
                conn.close()
        finally:
            lock.release()

    def _connect(self, deadline: float) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying while a foreign process (one not using our lock) holds it."""
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    if "lock" in str(exc).lower():
                        raise StoreBusy(seconds=self.timeout, path=str(self.path)) from None
                    raise
                time.sleep(0.02)

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
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        with self.read() as tx:
            return tx.execute(sql, params)

    def execute_write(self, sql: str, params: Sequence[Any] | dict | None = None) -> int:
        with self.transaction() as tx:
            return tx.execute_write(sql, params)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


# -- migrations ------------------------------------------------------------------------------
def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
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
