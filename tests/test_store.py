"""The metadata store facade: units of work, transactions, migrations, size and the busy error.

Real DuckDB files in a temporary home; other processes are real processes. The multi-process
behaviour under load (lost writes, foreign holders, starvation, crashes) is in test_store_concurrency.py.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from core.config import Config
from core.errors import StoreBusy, WorkbenchError
from core.migrations import MIGRATIONS
from core.store import Store, Tx, migrate, schema_version

LATEST = MIGRATIONS[-1][0]


def make_store(home: Path, **values: str) -> Store:
    env = {"DOCETL_HOME_DIR": str(home), **{f"DOCETL_WB_{k.upper()}": v for k, v in values.items()}}
    return Store(Config.from_env(env))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = make_store(tmp_path / "home")
    s.execute_write("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, note VARCHAR)")
    return s


def names(store: Store) -> list[str]:
    return [r["name"] for r in store.execute("SELECT name FROM items ORDER BY id")]


# -- layout, migration on open -----------------------------------------------------------------------
def test_first_unit_creates_the_file_beside_its_lock_and_migrates(tmp_path: Path) -> None:
    s = make_store(tmp_path / "home")
    assert s.path == tmp_path / "home" / ".docetl" / "_platform" / "platform.duckdb"
    assert not s.path.exists()
    tables = {r["table_name"] for r in s.execute("SELECT table_name FROM information_schema.tables")}
    assert {"users", "namespaces", "memberships", "audit_logs", "login_attempts", "settings",
            "schema_migrations"} <= tables
    assert s.path.exists() and s.lock_path.exists()
    assert s.lock_path.parent == s.path.parent
    versions = s.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in versions] == [(v, n) for v, n, _ in MIGRATIONS]


def test_reopening_does_not_migrate_again_and_keeps_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_store(home).execute_write("INSERT INTO settings (key, value) VALUES ('k', '1')")
    again = make_store(home)  # a new process would build a new Store
    assert again.execute("SELECT value FROM settings WHERE key = 'k'") == [{"value": "1"}]
    assert again.execute("SELECT count(*) AS n FROM schema_migrations") == [{"n": len(MIGRATIONS)}]
    assert not list(again.path.parent.glob("*.bak"))  # nothing to upgrade, no backup


def test_an_upgrade_keeps_data_backs_up_the_file_and_is_recorded(tmp_path: Path) -> None:
    s = make_store(tmp_path / "home")
    s.execute_write("INSERT INTO settings (key, value) VALUES ('kept', '\"yes\"')")
    upgrade = [*MIGRATIONS, (LATEST + 1, "test upgrade", [
        "CREATE TABLE things (id INTEGER PRIMARY KEY)",
        "ALTER TABLE settings ADD COLUMN extra VARCHAR DEFAULT 'x'",
    ])]
    with s.read() as tx:
        assert migrate(tx.conn, s.path, upgrade) == LATEST + 1
        assert schema_version(tx.conn) == LATEST + 1
        assert tx.one("SELECT value, extra FROM settings WHERE key = 'kept'") == {"value": '"yes"', "extra": "x"}
    backup = s.path.with_name(f"{s.path.name}.v{LATEST}.bak")
    assert backup.exists()
    old = duckdb.connect(str(backup), read_only=True)
    try:
        assert old.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == LATEST
        assert old.execute("SELECT value FROM settings WHERE key = 'kept'").fetchone()[0] == '"yes"'
    finally:
        old.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    s = make_store(tmp_path / "home")
    broken = [*MIGRATIONS, (LATEST + 1, "broken", [
        "CREATE TABLE half_done (id INTEGER)",
        "THIS IS NOT SQL",
    ])]
    with s.read() as tx:
        with pytest.raises(duckdb.Error):
            migrate(tx.conn, s.path, broken)
        assert schema_version(tx.conn) == LATEST
        assert tx.scalar("SELECT count(*) FROM information_schema.tables"
                         " WHERE table_catalog = current_database() AND table_name = 'half_done'") == 0


def test_a_store_newer_than_the_program_is_refused_clearly(tmp_path: Path) -> None:
    s = make_store(tmp_path / "home")
    s.execute_write("INSERT INTO schema_migrations (version, name) VALUES (?, 'from the future')", [LATEST + 5])
    with pytest.raises(WorkbenchError) as caught:
        make_store(tmp_path / "home").execute("SELECT 1")
    assert caught.value.key == "error.store_newer"
    assert str(LATEST + 5) in str(caught.value) and "Upgrade" in str(caught.value)


# -- reads -------------------------------------------------------------------------------------------
def test_execute_returns_rows_as_dicts_with_parameters(store: Store) -> None:
    store.execute_write("INSERT INTO items VALUES (1, 'a', NULL), (2, 'b', 'n')")
    assert store.execute("SELECT id, name, note FROM items ORDER BY id") == [
        {"id": 1, "name": "a", "note": None}, {"id": 2, "name": "b", "note": "n"}]
    assert store.execute("SELECT name FROM items WHERE id = ?", [2]) == [{"name": "b"}]
    assert store.execute("SELECT name FROM items WHERE id = $id", {"id": 1}) == [{"name": "a"}]
    assert store.execute("SELECT name FROM items WHERE id = 99") == []


def test_one_read_unit_runs_several_queries(store: Store) -> None:
    store.execute_write("INSERT INTO items VALUES (1, 'a', NULL)")
    with store.read() as tx:
        assert isinstance(tx, Tx)
        assert tx.one("SELECT name FROM items WHERE id = 1") == {"name": "a"}
        assert tx.one("SELECT name FROM items WHERE id = 2") is None
        assert tx.scalar("SELECT count(*) FROM items") == 1
        assert tx.scalar("SELECT name FROM items WHERE id = 2") is None
        assert tx.execute("CREATE TEMP TABLE scratch (x INTEGER)") == []  # no result set: no rows


def test_every_unit_runs_in_utc(store: Store) -> None:
    assert store.execute("SELECT current_setting('TimeZone') AS tz") == [{"tz": "UTC"}]


def test_an_error_in_a_read_unit_propagates_and_the_store_stays_usable(store: Store) -> None:
    with pytest.raises(duckdb.CatalogException):
        store.execute("SELECT * FROM no_such_table")
    with pytest.raises(KeyError):
        with store.read():
            raise KeyError("mine")
    assert names(store) == []


# -- writes and transactions -------------------------------------------------------------------------
def test_execute_write_commits_and_reports_changed_rows(store: Store) -> None:
    assert store.execute_write("INSERT INTO items VALUES (1, 'a', NULL), (2, 'b', NULL)") == 2
    assert store.execute_write("UPDATE items SET note = 'x'") == 2
    assert store.execute_write("UPDATE items SET note = 'y' WHERE id = ?", [1]) == 1
    assert store.execute_write("DELETE FROM items WHERE id = 99") == 0
    assert store.execute_write("CREATE TABLE other (x INTEGER)") == 0  # DDL reports nothing
    assert store.execute("SELECT id, note FROM items ORDER BY id") == [{"id": 1, "note": "y"}, {"id": 2, "note": "x"}]


def test_a_transaction_commits_everything_together(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.execute_write("INSERT INTO items VALUES (1, 'change', NULL)") == 1
        tx.execute_write("INSERT INTO audit_logs (occurred_at, action, success) VALUES (now(), 'item.create', TRUE)")
        assert tx.scalar("SELECT count(*) FROM items") == 1  # sees its own writes
    assert names(store) == ["change"]
    assert store.execute("SELECT action FROM audit_logs") == [{"action": "item.create"}]


def test_an_exception_rolls_back_the_whole_transaction(store: Store) -> None:
    store.execute_write("INSERT INTO items VALUES (1, 'before', NULL)")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction() as tx:
            tx.execute_write("INSERT INTO items VALUES (2, 'change', NULL)")
            tx.execute_write("UPDATE items SET note = 'touched' WHERE id = 1")
            tx.execute_write("INSERT INTO audit_logs (occurred_at, action, success) VALUES (now(), 'x', TRUE)")
            raise Boom()
    assert names(store) == ["before"]
    assert store.execute("SELECT note FROM items WHERE id = 1") == [{"note": None}]
    assert store.execute("SELECT count(*) AS n FROM audit_logs") == [{"n": 0}]


def test_a_failing_statement_rolls_back_the_earlier_ones(store: Store) -> None:
    with pytest.raises(duckdb.ConstraintException):
        with store.transaction() as tx:
            tx.execute_write("INSERT INTO items VALUES (1, 'first', NULL)")
            tx.execute_write("INSERT INTO items VALUES (1, 'duplicate key', NULL)")
    assert names(store) == []
    store.execute_write("INSERT INTO items VALUES (1, 'later', NULL)")  # nothing left half-open
    assert names(store) == ["later"]


def test_a_read_unit_that_fails_inside_its_own_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.read() as tx:
            tx.execute("BEGIN TRANSACTION")
            tx.execute("INSERT INTO items VALUES (1, 'uncommitted', NULL)")
            raise RuntimeError("stop")
    assert names(store) == []


def test_units_see_each_others_committed_writes_across_store_objects(tmp_path: Path) -> None:
    a = make_store(tmp_path / "home")
    b = make_store(tmp_path / "home")
    a.execute_write("INSERT INTO settings (key, value) VALUES ('from_a', '1')")
    assert b.execute("SELECT key FROM settings") == [{"key": "from_a"}]
    b.execute_write("UPDATE settings SET value = '2'")
    assert a.execute("SELECT value FROM settings") == [{"value": "2"}]


def test_threads_of_one_process_take_turns(store: Store) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                with store.transaction() as tx:
                    n = tx.scalar("SELECT count(*) FROM items")
                    tx.execute_write("INSERT INTO items VALUES (?, ?, ?)", [t * 1000 + i, f"t{t}", str(n)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    # each transaction counted the rows before its insert under the lock: 0..99, each exactly once
    assert sorted(int(r["note"]) for r in store.execute("SELECT note FROM items")) == list(range(100))


# -- between units the file is closed ----------------------------------------------------------------
def test_between_units_another_process_can_open_the_file(store: Store) -> None:
    store.execute_write("INSERT INTO items VALUES (1, 'mine', NULL)")
    code = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]);"
            " c.execute(\"INSERT INTO items VALUES (2, 'foreign', NULL)\"); c.close()")
    done = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert names(store) == ["mine", "foreign"]


# -- size --------------------------------------------------------------------------------------------
def test_size_bytes_counts_the_database_files_and_grows(store: Store) -> None:
    before = store.size_bytes()
    assert before >= store.path.stat().st_size > 0
    with store.transaction() as tx:
        tx.execute_write("INSERT INTO items SELECT i, repeat('x', 200) || i, NULL FROM range(20000) r(i)")
    assert store.size_bytes() > before


def test_size_bytes_of_a_store_never_opened_is_zero(tmp_path: Path) -> None:
    s = make_store(tmp_path / "home")
    s.path.parent.mkdir(parents=True)
    assert s.size_bytes() == 0


# -- the busy error ----------------------------------------------------------------------------------
def test_lock_timeout_comes_from_the_setting(tmp_path: Path) -> None:
    assert make_store(tmp_path / "a").timeout == 10.0
    assert make_store(tmp_path / "b", store_lock_timeout_seconds="0.5").timeout == 0.5


def test_store_busy_is_a_clear_error_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    holder = make_store(home)
    holder.execute("SELECT 1")
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction() as tx:
            tx.execute_write("INSERT INTO settings (key, value) VALUES ('held', '1')")
            inside.set()
            leave.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(60)
        waiter = make_store(home, store_lock_timeout_seconds="0.3")
        with pytest.raises(StoreBusy) as caught:
            waiter.execute("SELECT 1")
    finally:
        leave.set()
        thread.join(60)
    error = caught.value
    assert isinstance(error, WorkbenchError) and error.key == "error.store_busy"
    text = str(error)
    assert text.startswith("Metadata store busy")
    assert str(waiter.path) in text and "0.3" in text
    assert "try again" in text and "opened the file directly" in text
    assert str(waiter.path) in error.message("zh_CN") and "繁忙" in error.message("zh_CN")
    # the holder's transaction was not disturbed, and the store works again
    assert waiter.execute("SELECT key FROM settings") == [{"key": "held"}]


def test_a_nested_unit_in_the_same_thread_fails_at_once_instead_of_waiting_for_itself(store: Store) -> None:
    with store.transaction() as tx:
        tx.execute_write("INSERT INTO items VALUES (1, 'outer', NULL)")
        with pytest.raises(RuntimeError, match="already open in this thread"):
            store.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="pass its Tx"):
            with Store(store.config).read():
                pass
    assert names(store) == ["outer"]  # the outer unit went on and committed
    assert store.execute("SELECT count(*) AS n FROM items") == [{"n": 1}]  # and nothing stayed marked open


def test_stores_of_different_homes_work_in_parallel_threads(tmp_path: Path) -> None:
    stores = [make_store(tmp_path / f"home{n}") for n in range(2)]
    for s in stores:
        s.execute_write("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, note VARCHAR)")
    errors: list[BaseException] = []

    def work(s: Store, t: int) -> None:
        try:
            for i in range(20):
                with s.transaction() as tx:
                    tx.execute_write("INSERT INTO items VALUES (?, ?, NULL)", [t * 100 + i, str(s.path)])
                s.execute("SELECT count(*) FROM items")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, t)) for s in stores for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for s in stores:  # each home got exactly its own 40 rows
        assert s.execute("SELECT name, count(*) AS n FROM items GROUP BY name") == [{"name": str(s.path), "n": 40}]


def test_a_query_past_its_time_limit_is_interrupted_and_the_store_stays_usable(store: Store) -> None:
    from core.errors import QueryTimeout

    endless = "SELECT count(*) AS n FROM range(1000000000000) a"
    with pytest.raises(QueryTimeout) as caught:
        store.execute(endless, timeout=0.2)
    assert "0.2" in str(caught.value) and "LIMIT" in str(caught.value)
    assert store.execute("SELECT 41 + 1 AS n", timeout=5)[0]["n"] == 42
