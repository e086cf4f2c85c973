"""Throughput of the machine-wide LLM limiter (core.llm_limiter) against the ideal.

    .venv/bin/python benchmarks/limiter.py                      # N=8, 2 processes x 16 threads, 5 s, 100 ms
    .venv/bin/python benchmarks/limiter.py --slots 8 --procs 2 --threads 16 --seconds 5 --latency 0.1

Each thread loops acquire -> sleep(latency) -> release (a fake LLM call) for the duration, in a fresh lock
directory. The ideal is N / latency requests per second (every slot always busy). Reported: achieved
throughput and its share of the ideal (goal >= 90 %), the most requests in flight ever observed (by a
shared counter under its own flock: must never exceed N), the wait for a slot (p50/p99/max), and how
evenly requests spread over the threads (fewest and most per thread).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.llm_limiter import LLMLimiter  # noqa: E402

GOAL = 0.90


def _counter(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    local = threading.Lock()

    def bump(delta: int) -> None:
        with local:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, 64, 0)
                now, peak = json.loads(raw) if raw else (0, 0)
                now += delta
                data = json.dumps([now, max(peak, now)]).encode()
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    return bump


def _process(lock_dir: str, counter: str, slots: int, threads: int, start_at: float, stop_at: float,
             latency: float, out: mp.Queue) -> None:
    limiter = LLMLimiter(Path(lock_dir), slots)
    bump = _counter(Path(counter))
    results: list[tuple[int, list[float]]] = []

    def run() -> None:
        waits: list[float] = []
        done = 0
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop_at:
            asked = time.monotonic()
            with limiter.slot():
                waits.append(time.monotonic() - asked)
                if time.time() >= stop_at:  # granted after the end: not counted
                    break
                bump(+1)
                time.sleep(latency)
                bump(-1)
                done += 1
        results.append((done, waits))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="threads per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds a fake request holds its slot")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lock_dir, counter = Path(tmp) / "locks" / "llm", Path(tmp) / "counter"
        start_at = time.time() + 1.0  # every process and thread starts together
        stop_at = start_at + args.seconds
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_process, args=(str(lock_dir), str(counter), args.slots, args.threads,
                                                    start_at, stop_at, args.latency, out))
                 for _ in range(args.procs)]
        for p in procs:
            p.start()
        results = [r for _ in procs for r in out.get(timeout=args.seconds + 120)]
        for p in procs:
            p.join()
        now, peak = json.loads(counter.read_text())

    done = sum(n for n, _ in results)
    waits = sorted(w for _, ws in results for w in ws)
    per_thread = [n for n, _ in results]
    ideal = args.slots / args.latency
    achieved = done / args.seconds
    print(f"limiter: N={args.slots}, {args.procs} processes x {args.threads} threads, "
          f"{args.latency * 1000:.0f} ms per request, {args.seconds:g} s")
    print(f"  throughput      {achieved:7.1f} req/s   ideal {ideal:.1f} req/s   "
          f"{achieved / ideal:6.1%} (goal >= {GOAL:.0%})")
    print(f"  max in flight   {peak} (limit {args.slots}; counter back to {now})")
    print(f"  wait for a slot p50 {statistics.median(waits) * 1000:.1f} ms, "
          f"p99 {waits[int(len(waits) * 0.99) - 1] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms")
    print(f"  per thread      fewest {min(per_thread)}, most {max(per_thread)} requests "
          f"(fair share {done / len(per_thread):.1f})")
    ok = achieved / ideal >= GOAL and peak <= args.slots
    print("  OK" if ok else "  BELOW GOAL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
