"""Unit-of-work latency of the metadata store with the app, the service and a notebook at once.

    .venv/bin/python benchmarks/store.py            # 300 units per process
    .venv/bin/python benchmarks/store.py --quick    # 60 units per process
    .venv/bin/python benchmarks/store.py --units N [--think-ms MS]

Everything happens in a fresh temporary home with the real schema (migrations) and seeded data.
Three processes run at once, each through its own `core.store.Store`:

- app:      a page render per unit: three queries in one `store.read()`;
- service:  a small write transaction per unit: a status update (heartbeat-like) plus an insert;
- notebook: alternates a read unit (two queries) and a write transaction (an insert plus an update).

By default they run their units back to back (no think time): the worst case, far busier than a real
deployment. A unit's latency is measured around the whole `with store.read()/transaction()` block, so it
includes the wait for the lock, opening the file, the work, commit and close.

Baselines measured in the same run on a copy of the same data:
- "held connection": one process keeps one DuckDB connection open and runs the same operations
  (what the workbench cannot do, since DuckDB lets only one process hold the file);
- "store, alone": one process runs the same units through the Store with nobody else around
  (the cost of open/close without contention).

At the end every write is counted: each insert carries a unique key and each status row its last value;
anything missing is a lost write.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from core.config import Config  # noqa: E402
from core.store import Store  # noqa: E402

GOAL_P50_MS = 50.0
GOAL_P99_MS = 300.0

# -- the operations (identical for the store and the held-connection baseline) ---------------------
APP_PAGE = [
    ("SELECT count(*) AS n FROM users WHERE active", None),
    ("SELECT n.name, count(m.user_id) AS members FROM namespaces n"
     " LEFT JOIN memberships m ON m.namespace_id = n.id GROUP BY n.name ORDER BY n.name", None),
    ("SELECT id, occurred_at, actor_username, action, namespace, success FROM audit_logs"
     " ORDER BY occurred_at DESC LIMIT 50", None),
]
NOTEBOOK_READ = [
    ("SELECT action, count(*) AS n, max(occurred_at) AS last FROM audit_logs GROUP BY action ORDER BY n DESC", None),
    ("SELECT u.username, count(m.namespace_id) AS namespaces FROM users u"
     " LEFT JOIN memberships m ON m.user_id = u.id GROUP BY u.username ORDER BY u.username LIMIT 20", None),
]
INSERT_AUDIT = ("INSERT INTO audit_logs (occurred_at, actor_username, action, namespace, success, detail)"
                " VALUES (now(), ?, ?, 'ns0', TRUE, ?)")
UPDATE_STATUS = "UPDATE settings SET value = ?, updated_at = now() WHERE key = ?"


def unit_ops(role: str, i: int) -> tuple[str, list[tuple[str, Any]]]:
    """The kind ('read' or 'write') and statements of unit i of a role."""
    if role == "app":
        return "read", APP_PAGE
    if role == "service":
        return "write", [(UPDATE_STATUS, [f'"{i}"', "bench.service_status"]),
                         (INSERT_AUDIT, ["service", "bench.service", f"service:{i}"])]
    if role == "notebook":
        if i % 2 == 0:
            return "read", NOTEBOOK_READ
        return "write", [(INSERT_AUDIT, ["notebook", "bench.notebook", f"notebook:{i}"]),
                         (UPDATE_STATUS, [f'"{i}"', "bench.notebook_status"])]
    raise ValueError(role)


ROLES = ("app", "service", "notebook")


def seed(conn: duckdb.DuckDBPyConnection) -> None:
    """Some realistic volume: 50 users, 10 namespaces, 200 memberships, 20 000 audit rows."""
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO users (id, username, password_hash) "
                 "SELECT 'u' || i, 'user' || i, 'x' FROM range(50) r(i)")
    conn.execute("INSERT INTO namespaces (id, name) SELECT 'n' || i, 'ns' || i FROM range(10) r(i)")
    conn.execute("INSERT INTO memberships (namespace_id, user_id, role) "
                 "SELECT 'n' || (i % 10), 'u' || (i // 4), 'viewer' FROM range(200) r(i)")
    conn.execute("INSERT INTO audit_logs (occurred_at, actor_username, action, namespace, success, detail) "
                 "SELECT now() - to_seconds(i), 'user' || (i % 50), 'seed.action' || (i % 7), "
                 "'ns' || (i % 10), i % 13 <> 0, 'seed' FROM range(20000) r(i)")
    conn.execute("INSERT INTO settings (key, value) VALUES ('bench.service_status', '\"-\"'),"
                 " ('bench.notebook_status', '\"-\"')")
    conn.execute("COMMIT")


def make_config(home: Path) -> Config:
    return Config.from_env({"DOCETL_HOME_DIR": str(home), "DOCETL_WB_STORE_LOCK_TIMEOUT_SECONDS": "30"})


def fresh_store(home: Path) -> Store:
    home.mkdir(parents=True, exist_ok=True)
    store = Store(make_config(home))
    with store.read() as tx:  # the first unit migrates; seed() runs its own transaction
        seed(tx.conn)
    return store


# -- running units -----------------------------------------------------------------------------------
def run_store_unit(store: Store, kind: str, ops: list[tuple[str, Any]]) -> None:
    if kind == "read":
        with store.read() as tx:
            for sql, params in ops:
                tx.execute(sql, params)
    else:
        with store.transaction() as tx:
            for sql, params in ops:
                tx.execute(sql, params)


def run_held_unit(conn: duckdb.DuckDBPyConnection, kind: str, ops: list[tuple[str, Any]]) -> None:
    if kind == "write":
        conn.execute("BEGIN TRANSACTION")
    for sql, params in ops:
        cur = conn.execute(sql, params or [])
        if cur.description is not None:
            cur.fetchall()
    if kind == "write":
        conn.execute("COMMIT")


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def worker(role: str, home: str, units: int, think_ms: float, start: Any, results: Any) -> None:
    """One process of the concurrent phase: `units` units of its role, each timed; errors counted."""
    lat: dict[str, list[float]] = {"read": [], "write": []}
    errors: list[str] = []
    try:
        store = Store(make_config(Path(home)))
        start.wait()
        for i in range(units):
            kind, ops = unit_ops(role, i)
            try:
                lat[kind].append(timed(lambda: run_store_unit(store, kind, ops)))
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
            if think_ms:
                time.sleep(think_ms / 1000.0)
    except Exception:
        errors.append(traceback.format_exc())
    results.put((role, lat, errors))


def run_concurrent(home: Path, units: int, think_ms: float) -> tuple[dict, dict, float]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(role, str(home), units, think_ms, start, results), name=role)
             for role in ROLES]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every child import and reach the start line (not part of any measurement)
    t0 = time.perf_counter()
    start.set()
    collected = {}
    for _ in procs:
        role, lat, errors = results.get(timeout=900)
        collected[role] = (lat, errors)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
    lat_by = {role: collected[role][0] for role in ROLES}
    err_by = {role: collected[role][1] for role in ROLES}
    return lat_by, err_by, wall


def run_alone(home: Path, units: int) -> dict[str, dict[str, list[float]]]:
    """The same units through the Store, one process, nobody else: open/close cost without contention."""
    store = Store(make_config(home))
    out = {role: {"read": [], "write": []} for role in ROLES}
    for i in range(units):
        for role in ROLES:
            kind, ops = unit_ops(role, i)
            out[role][kind].append(timed(lambda: run_store_unit(store, kind, ops)))
    return out


def run_held(home: Path, units: int) -> dict[str, dict[str, list[float]]]:
    """The same operations on one held DuckDB connection (the baseline)."""
    store = Store(make_config(home))
    path = store.path
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone='UTC'")
    out = {role: {"read": [], "write": []} for role in ROLES}
    try:
        for i in range(units):
            for role in ROLES:
                kind, ops = unit_ops(role, i)
                out[role][kind].append(timed(lambda: run_held_unit(conn, kind, ops)))
    finally:
        conn.close()
    return out


def count_lost(store: Store, units: int, per_role_writes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """role -> (expected, found) for the write units; the status rows must hold the last value."""
    with store.read() as tx:
        found = {r["action"]: r["n"] for r in tx.execute(
            "SELECT action, count(DISTINCT detail) AS n FROM audit_logs WHERE action LIKE 'bench.%' GROUP BY action")}
        dup = tx.scalar("SELECT count(*) - count(DISTINCT detail) FROM audit_logs WHERE action LIKE 'bench.%'")
        status = {r["key"]: r["value"] for r in tx.execute("SELECT key, value FROM settings WHERE key LIKE 'bench.%'")}
    out = {
        "service": (per_role_writes["service"], found.get("bench.service", 0)),
        "notebook": (per_role_writes["notebook"], found.get("bench.notebook", 0)),
    }
    last_service = f'"{units - 1}"'
    last_notebook = max((i for i in range(units) if unit_ops("notebook", i)[0] == "write"), default=None)
    out["status rows"] = (2, int(status.get("bench.service_status") == last_service)
                          + int(last_notebook is None or status.get("bench.notebook_status") == f'"{last_notebook}"'))
    out["duplicates"] = (0, int(dup or 0))
    return out


# -- reporting ---------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def merge(*lists: list[float]) -> list[float]:
    return [v for lst in lists for v in lst]


def fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:8.1f}"


def ratio(v: float, base: float) -> str:
    return "-" if math.isnan(v) or math.isnan(base) or base <= 0 else f"{v / base:7.1f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 units per process instead of 300")
    ap.add_argument("--units", type=int, help="units of work per process")
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="pause between a process's units (default 0: back to back, the worst case)")
    args = ap.parse_args(argv)
    units = args.units or (60 if args.quick else 300)

    with tempfile.TemporaryDirectory(prefix="docetl-bench-") as tmp:
        tmp_path = Path(tmp)
        homes = {name: tmp_path / name for name in ("held", "alone", "concurrent")}
        for home in homes.values():
            fresh_store(home)

        held = run_held(homes["held"], units)
        alone = run_alone(homes["alone"], units)
        lat, errors, wall = run_concurrent(homes["concurrent"], units, args.think_ms)

        writes = {role: sum(1 for i in range(units) if unit_ops(role, i)[0] == "write") for role in ROLES}
        lost = count_lost(Store(make_config(homes["concurrent"])), units, writes)

    rows = [
        ("app page render (3 queries)", "read", [lat["app"]["read"]], [held["app"]["read"]], [alone["app"]["read"]]),
        ("notebook read (2 queries)", "read", [lat["notebook"]["read"]], [held["notebook"]["read"]],
         [alone["notebook"]["read"]]),
        ("service write (update+insert)", "write", [lat["service"]["write"]], [held["service"]["write"]],
         [alone["service"]["write"]]),
        ("notebook write (insert+update)", "write", [lat["notebook"]["write"]], [held["notebook"]["write"]],
         [alone["notebook"]["write"]]),
    ]
    all_reads = merge(lat["app"]["read"], lat["notebook"]["read"])
    all_writes = merge(lat["service"]["write"], lat["notebook"]["write"])
    held_reads = merge(held["app"]["read"], held["notebook"]["read"])
    held_writes = merge(held["service"]["write"], held["notebook"]["write"])
    alone_reads = merge(alone["app"]["read"], alone["notebook"]["read"])
    alone_writes = merge(alone["service"]["write"], alone["notebook"]["write"])
    rows += [
        ("ALL READS", "read", [all_reads], [held_reads], [alone_reads]),
        ("ALL WRITES", "write", [all_writes], [held_writes], [alone_writes]),
    ]

    total_units = sum(len(v) for role in ROLES for v in lat[role].values())
    print(f"DocETL Workbench metadata store benchmark — duckdb {duckdb.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    print(f"3 processes at once (app, service, notebook), {units} units each, "
          f"think time {args.think_ms:g} ms{' (back to back)' if not args.think_ms else ''}; "
          f"{total_units} units in {wall:.2f} s = {total_units / wall:.0f} units/s")
    print("Latency per unit of work in ms (lock wait + open + work + commit + close).")
    print("'held' = one process keeping one DuckDB connection open (baseline); "
          "'alone' = the Store with no other process.")
    print()
    head = (f"{'unit':32s} {'n':>5s} | {'p50':>8s} {'p99':>8s} {'max':>8s} | {'held p50':>8s} {'held p99':>8s}"
            f" | {'p50/held':>8s} {'p99/held':>8s} | {'alone p50':>9s} {'alone p99':>9s}")
    print(head)
    print("-" * len(head))
    for name, _kind, (c,), (h,), (a,) in rows:
        if name == "ALL READS":
            print("-" * len(head))
        print(f"{name:32s} {len(c):5d} | {fmt(pct(c, .5))} {fmt(pct(c, .99))} {fmt(max(c) if c else math.nan)} |"
              f" {fmt(pct(h, .5))} {fmt(pct(h, .99))} | {ratio(pct(c, .5), pct(h, .5)):>8s}"
              f" {ratio(pct(c, .99), pct(h, .99)):>8s} | {fmt(pct(a, .5)):>9s} {fmt(pct(a, .99)):>9s}")
    print()
    n_errors = sum(len(e) for e in errors.values())
    print("Errors seen by the processes: " + ", ".join(f"{r} {len(errors[r])}" for r in ROLES))
    for role in ROLES:
        for e in errors[role][:3]:
            print(f"  {role}: {e.strip().splitlines()[-1]}")
    lost_total = 0
    parts = []
    for key, (expected, found) in lost.items():
        missing = (found - expected) if key == "duplicates" else (expected - found)
        lost_total += max(0, missing)
        parts.append(f"{key} expected {expected} found {found}")
    print("Writes verified afterwards: " + "; ".join(parts) + f" -> lost writes: {lost_total}")
    print()
    goals = [
        (f"reads  p50 <= {GOAL_P50_MS:g} ms", pct(all_reads, .5) <= GOAL_P50_MS, f"{pct(all_reads, .5):.1f} ms"),
        (f"reads  p99 <= {GOAL_P99_MS:g} ms", pct(all_reads, .99) <= GOAL_P99_MS, f"{pct(all_reads, .99):.1f} ms"),
        (f"writes p50 <= {GOAL_P50_MS:g} ms", pct(all_writes, .5) <= GOAL_P50_MS, f"{pct(all_writes, .5):.1f} ms"),
        (f"writes p99 <= {GOAL_P99_MS:g} ms", pct(all_writes, .99) <= GOAL_P99_MS, f"{pct(all_writes, .99):.1f} ms"),
        ("zero lost writes", lost_total == 0, f"{lost_total} lost"),
        ("no errors in any process", n_errors == 0, f"{n_errors} errors"),
    ]
    print("Goals (issue 2):")
    for name, ok, value in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:28s} measured {value}")
    return 0 if all(ok for _, ok, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
