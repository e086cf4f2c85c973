"""The store under several real processes: nothing lost, clear busy errors, no starvation, crash safety.

Every process here is a real OS process (multiprocessing with 'spawn', so each child imports and opens
everything itself, like the app, the service and a notebook do) working on a real DuckDB file. No test
asserts on wall-clock time: each child counts its errors and reports them, and every wait has a
generous limit (plus pytest-timeout) so that a hang fails the test instead of blocking the suite.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import sys
import time
import types
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pytest

from core.config import Config
from core.errors import StoreBusy
from core.store import Store

SPAWN = mp.get_context("spawn")
WAIT = 120.0  # seconds: a limit on every wait, only there so that a hang fails instead of blocking


def make_store(home: str | Path, timeout: float | None = None) -> Store:
    env = {"DOCETL_HOME_DIR": str(home)}
    if timeout is not None:
        env["DOCETL_WB_STORE_LOCK_TIMEOUT_SECONDS"] = str(timeout)
    return Store(Config.from_env(env))


def prepared_home(tmp_path: Path) -> Path:
    """A migrated store with a `work` table whose key makes every unit of work identifiable."""
    home = tmp_path / "home"
    make_store(home).execute_write(
        "CREATE TABLE work (proc VARCHAR NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (proc, i))")
    return home


# -- what the child processes run (top level, so 'spawn' can import them) ---------------------------
def writer(home: str, proc: str, units: int, timeout: float | None, start: Any, results: Any) -> None:
    """`units` units of work, each one transaction: the row and its audit row, all or nothing."""
    errors: list[str] = []
    try:
        store = make_store(home, timeout)
        start.wait(WAIT)
        for i in range(units):
            try:
                with store.transaction() as tx:
                    tx.execute_write("INSERT INTO work (proc, i) VALUES (?, ?)", [proc, i])
                    tx.execute_write("INSERT INTO audit_logs (occurred_at, action, success, detail)"
                                     " VALUES (now(), 'work.insert', TRUE, ?)", [f"{proc}:{i}"])
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"unit {i}: {type(exc).__name__}: {exc}")
    except Exception as exc:
        errors.append(f"setup: {type(exc).__name__}: {exc}")
    results.put(("writer", proc, units, errors))


def reader(home: str, name: str, start: Any, stop: Any, results: Any) -> None:
    """Read units until told to stop (at least one): each must see whole units and never go back."""
    errors: list[str] = []
    reads = 0
    last = -1
    try:
        store = make_store(home)
        start.wait(WAIT)
        while True:
            try:
                with store.read() as tx:
                    work = tx.scalar("SELECT count(*) FROM work")
                    audited = tx.scalar("SELECT count(*) FROM audit_logs WHERE action = 'work.insert'")
                    tx.execute("SELECT proc, max(i) AS top FROM work GROUP BY proc")
                if work != audited:
                    errors.append(f"a unit seen half done: {work} rows but {audited} audit rows")
                if work < last:
                    errors.append(f"rows went backwards: {last} then {work}")
                last = work
                reads += 1
            except Exception as exc:
                errors.append(f"read {reads}: {type(exc).__name__}: {exc}")
            if stop.is_set():
                break
    except Exception as exc:
        errors.append(f"setup: {type(exc).__name__}: {exc}")
    results.put(("reader", name, reads, errors))


def foreign_holder(db_path: str, ready: Any, release: Any) -> None:
    """A program that opens the DuckDB file itself, ignoring our lock, and keeps it open."""
    conn = duckdb.connect(db_path)
    conn.execute("SELECT count(*) FROM work").fetchall()
    ready.set()
    release.wait(WAIT)
    conn.close()


def lock_holder(home: str, inside: Any, leave: Any, results: Any) -> None:
    """One of ours, inside a transaction (so holding the store lock) until told to leave."""
    store = make_store(home)
    with store.transaction() as tx:
        tx.execute_write("INSERT INTO work (proc, i) VALUES ('holder', 0)")
        inside.set()
        leave.wait(WAIT)
    results.put("committed")


def crasher(home: str, inside: Any) -> None:
    """Commits one unit, then dies by SIGKILL in the middle of the next one (the parent kills it)."""
    store = make_store(home)
    store.execute_write("INSERT INTO work (proc, i) VALUES ('crash', 0)")
    with store.transaction() as tx:
        for i in range(1, 11):
            tx.execute_write("INSERT INTO work (proc, i) VALUES ('crash', ?)", [i])
        tx.execute_write("INSERT INTO audit_logs (occurred_at, action, success, detail)"
                         " VALUES (now(), 'work.insert', TRUE, 'crash:1-10')")
        inside.set()
        time.sleep(WAIT)  # killed long before this ends


# -- helpers ------------------------------------------------------------------------------------------
@pytest.fixture
def spawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start child processes; any still alive at the end of the test is killed (by its own pid)."""
    # 'spawn' re-imports the parent's __main__ in each child; after an AppTest ran in this process that
    # is app/Home.py, which a child cannot (and must not) run. The children need only this module.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    started: list[mp.process.BaseProcess] = []

    def start(target: Any, *args: Any) -> mp.process.BaseProcess:
        proc = SPAWN.Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def collect(results: Any, count: int) -> list[tuple]:
    got = []
    for _ in range(count):
        try:
            got.append(results.get(timeout=WAIT))
        except queue.Empty:
            pytest.fail(f"only {len(got)} of {count} child processes reported within {WAIT:.0f} s: {got}")
    return got


def join_all(procs: list[mp.process.BaseProcess]) -> None:
    for proc in procs:
        proc.join(WAIT)
        assert proc.exitcode == 0, f"{proc.name} ended with exit code {proc.exitcode}"


# -- the acceptance scenario --------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_three_writers_and_a_reader_lose_nothing_and_see_no_errors(tmp_path: Path, spawn: Any) -> None:
    home = prepared_home(tmp_path)
    units = 500
    start, stop, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    writers = [spawn(writer, str(home), f"w{n}", units, None, start, results) for n in range(3)]
    readers = [spawn(reader, str(home), "r0", start, stop, results)]
    start.set()

    reports = collect(results, 3)  # readers only report once told to stop, so these are the writers
    assert sorted(r[:3] for r in reports) == [("writer", f"w{n}", units) for n in range(3)]
    stop.set()
    reports += collect(results, 1)
    join_all(writers + readers)

    errors = {f"{kind} {name}": errs for kind, name, _, errs in reports}
    assert errors == {"writer w0": [], "writer w1": [], "writer w2": [], "reader r0": []}
    assert [r[2] for r in reports if r[0] == "reader"][0] >= 1

    store = make_store(home)
    with store.read() as tx:
        keys = {(r["proc"], r["i"]) for r in tx.execute("SELECT proc, i FROM work")}
        audited = [r["detail"] for r in tx.execute("SELECT detail FROM audit_logs WHERE action = 'work.insert'")]
    expected = {(f"w{n}", i) for n in range(3) for i in range(units)}
    assert keys == expected  # 1500 rows: none lost, none extra
    assert sorted(audited) == sorted(f"{p}:{i}" for p, i in expected)  # and their 1500 audit rows


# -- a program that ignores our lock ------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_foreign_process_holding_the_file_gives_store_busy_not_a_hang(tmp_path: Path, spawn: Any) -> None:
    home = prepared_home(tmp_path)
    store = make_store(home, timeout=1.0)
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = spawn(foreign_holder, str(store.path), ready, release)
    assert ready.wait(WAIT), "the foreign process did not open the file"

    with pytest.raises(StoreBusy) as caught:
        store.execute("SELECT count(*) FROM work")
    error = caught.value
    assert error.key == "error.store_busy"
    assert str(store.path) in str(error) and "busy" in str(error) and "opened the file directly" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # not a raw duckdb IOException
    with pytest.raises(StoreBusy):  # a write waits the same bounded time
        store.execute_write("INSERT INTO work (proc, i) VALUES ('blocked', 0)")

    release.set()
    join_all([holder])
    store.execute_write("INSERT INTO work (proc, i) VALUES ('after', 0)")
    assert store.execute("SELECT proc FROM work") == [{"proc": "after"}]


@pytest.mark.timeout(120)
def test_a_process_inside_a_unit_makes_another_process_wait_then_busy(tmp_path: Path, spawn: Any) -> None:
    home = prepared_home(tmp_path)
    inside, leave, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    holder = spawn(lock_holder, str(home), inside, leave, results)
    assert inside.wait(WAIT)

    store = make_store(home, timeout=0.5)
    with pytest.raises(StoreBusy) as caught:
        store.execute("SELECT count(*) FROM work")
    assert str(store.path) in str(caught.value)
    with pytest.raises(StoreBusy):
        with store.transaction() as tx:
            tx.execute_write("INSERT INTO work (proc, i) VALUES ('waiter', 0)")

    leave.set()
    assert collect(results, 1) == ["committed"]
    join_all([holder])
    assert store.execute("SELECT proc FROM work") == [{"proc": "holder"}]  # the holder's unit is intact
    store.execute_write("INSERT INTO work (proc, i) VALUES ('waiter', 0)")
    assert store.execute("SELECT count(*) AS n FROM work") == [{"n": 2}]


# -- fairness -----------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_a_writer_completes_while_readers_hammer_the_store(tmp_path: Path, spawn: Any) -> None:
    home = prepared_home(tmp_path)
    units = 100
    start, stop, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    readers = [spawn(reader, str(home), f"r{n}", start, stop, results) for n in range(3)]
    # a tighter bound than the default: a writer starved for 5 s would report StoreBusy errors
    the_writer = spawn(writer, str(home), "w", units, 5.0, start, results)
    start.set()

    reports = collect(results, 1)  # readers run until stopped: the first report is the writer's
    assert reports[0] == ("writer", "w", units, [])
    stop.set()
    reports += collect(results, 3)
    join_all(readers + [the_writer])
    assert {name: errs for kind, name, _, errs in reports if kind == "reader"} == {"r0": [], "r1": [], "r2": []}
    assert make_store(home).execute("SELECT count(*) AS n FROM work WHERE proc = 'w'") == [{"n": units}]


# -- crashes ------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_process_killed_inside_a_transaction_leaves_no_lock_and_no_rows(tmp_path: Path, spawn: Any) -> None:
    home = prepared_home(tmp_path)
    inside = SPAWN.Event()
    victim = spawn(crasher, str(home), inside)
    assert inside.wait(WAIT), "the child did not reach the middle of its transaction"
    victim.kill()  # SIGKILL: no cleanup of any kind runs in the child
    victim.join(WAIT)
    assert victim.exitcode == -9

    store = make_store(home, timeout=5.0)
    with store.transaction() as tx:  # the next unit of work gets the lock and the file
        tx.execute_write("INSERT INTO work (proc, i) VALUES ('after', 0)")
    rows = store.execute("SELECT proc, i FROM work ORDER BY proc, i")
    assert rows == [{"proc": "after", "i": 0}, {"proc": "crash", "i": 0}]  # the committed unit only
    assert store.execute("SELECT count(*) AS n FROM audit_logs") == [{"n": 0}]
