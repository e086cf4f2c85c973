"""Execution through the workbench (queue -> scheduler service -> run child) against bare docetl, and the
LLM throughput of three runs at once under the machine-wide limit, against the local test LLM server.

    .venv/bin/python benchmarks/execute.py              # (a) 3000 rows, N=16, 50 ms; (b) 3 x 1000 rows, 100 ms
    .venv/bin/python benchmarks/execute.py --quick      # (a) 600 rows; (b) 3 x 300 rows
    .venv/bin/python benchmarks/execute.py --part a --rows 3000 --threads 16 --latency 0.05
    .venv/bin/python benchmarks/execute.py --part b --b-rows 1000 --b-latency 0.1 --inflight 8
    .venv/bin/python benchmarks/execute.py --diagnose-only [--part a|b] [--modes workbench,http-gate,no-limiter]

Everything talks to tests/fake_llm.py (FakeLLM: its own process, fixed latency per request, exact counters)
with the same pipeline: one `map` with an output schema (summary/topic/n_words, like data/templates/
llm_map.yaml) over generated rows with a `text` column, `bypass_cache: true`, and a fresh temporary
DOCETL_HOME_DIR per contender, so no answer ever comes from docetl's cache. Before the contenders, one
untimed `import docetl.runner` warms the page cache, so neither pays for a cold disk.

(a) One run of `--rows` rows at `--threads` N (default 16), `--latency` 50 ms:
- bare:      `DSLRunner(config, max_threads=N).load_run_save()` in a fresh interpreter with the offline env
             of /work/shared/docetl-notes.md (DOCETL_HOME_DIR temp, LITELLM_LOCAL_MODEL_COST_MAP=True,
             USE_FRONTEND=true, litellm's default_encoding imported first, a dummy OPENAI_API_KEY), reading
             the same JSON rows the workbench's dataset holds. Measured end to end (spawn of the interpreter
             -> load_run_save returned, so docetl's import is included) and its parts (import, run only).
- workbench: the rows imported as a Data Center dataset (CSV upload + ingest, untimed), the real service
             `python -m scheduler_service` already leading (DOCETL_WB_RUN_MAX_THREADS=N,
             DOCETL_WB_LLM_MAX_INFLIGHT=N so the limiter never throttles, default poll 1 s), then timed from
             `runs.enqueue` to the run's terminal status as recorded (`finished_at - queued_at`); the run's
             own `duration_seconds` (started -> finished: child spawn, docetl import, run, recording) and
             docetl's part (`progress.json` elapsed, from pipeline_start to after load_run_save) are shown.
Goal (issue "Execution"): workbench <= 1.10x bare, end to end against end to end (both include docetl's
import). The stricter ratio against bare's load_run_save alone (import excluded) is printed beside it.

The service is waited for until its first heartbeat, and the run is queued right after it: the wait for
the next poll is then close to its worst case (~1 s) rather than its average (0.5 s).

(b) Three runs of `--b-rows` rows queued at once, DOCETL_WB_MAX_RUNNING_RUNS=3, DOCETL_WB_LLM_MAX_INFLIGHT=8
(`--inflight`), `--b-latency` 100 ms, 16 threads per run: the server's counters are sampled every 50 ms;
throughput = requests / (last response - first request), bracketed by the sampling; the steady state
(between 10 % and 90 % of the requests, without the ramp while the other runs still import docetl and the
tail) is shown too. Goals: >= 90 % of the ideal inflight / latency (80 requests/s), and the server's
max_in_flight exactly the limit (reached, never exceeded).

--diagnose (after the goals; --diagnose-only without them): the same cases, each run executed by
core.execute's own code (`execute.main([run_id])`, what the service's child runs) in a process of its own
with timing probes patched in: per LLM call the wait for a slot, how long it is held and how much of that
is the HTTP exchange (httpx.Client.send), the gap between a release and the next grant, docetl's import,
load_run_save, the progress monitor's ticks and the CPU used. Modes: `workbench` (the code as it is),
`http-gate` (the slot held around the HTTP exchange only: a possible fix), `no-limiter` (no limit at all:
the machine's ceiling). `--switch-interval`/`--max-delay` patch sys.setswitchinterval and the limiter's
longest backoff in the run processes, to measure what they change.

Two things in tests/fake_llm.py distorted these figures and were fixed with this benchmark: Nagle's
algorithm held every reply's body ~40 ms behind its headers on kept-alive connections (the server now sets
TCP_NODELAY), and a request left `in_flight` only after its reply was written, so a client already holding
its answer and sending the next request could be counted twice (max_in_flight 9 under a limit of 8).

Every process started here (the fake server, the services and their run children, the bare interpreters)
is stopped in `finally`: the service gets SIGTERM (its teardown kills its run children, which also die
with it through PR_SET_PDEATHSIG), then SIGKILL of its process group if it lingers.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_RATIO = 1.10
GOAL_THROUGHPUT = 0.90
SAMPLE_EVERY = 0.05
NAMESPACE = "bench"

OPERATION = {
    "name": "summarize", "type": "map",
    "prompt": "Summarize this document in one sentence, classify its topic and count its words.\n\n"
              "Document {{ input.id }}: {{ input.text }}",
    "output": {"schema": {"summary": "string", "topic": "enum[animals, finance, other]", "n_words": "int"}},
}

BARE = r"""
import json, sys, time
t_top = time.time()
import litellm.litellm_core_utils.default_encoding  # noqa: F401 - bundled tokenizer, before docetl
import litellm
litellm.suppress_debug_info = True
from docetl.runner import DSLRunner
t_imported = time.time()
config = json.loads(open(sys.argv[1]).read())
runner = DSLRunner(config, max_threads=int(sys.argv[2]))
t_built = time.time()
runner.load_run_save()
t_done = time.time()
rows = len(json.loads(open(config["pipeline"]["output"]["path"]).read()))
open(sys.argv[3], "w").write(json.dumps({"t_top": t_top, "t_imported": t_imported, "t_built": t_built,
                                         "t_done": t_done, "rows": rows}))
"""

PROBE = r"""
import json, sys, threading, time
from contextlib import contextmanager
mode, out_path, run_id, switch, max_delay = sys.argv[1:6]
if float(switch):
    sys.setswitchinterval(float(switch))  # CPython's default is 0.005 s
import httpx
from core import execute, llm_limiter
if float(max_delay):
    llm_limiter._MAX_DELAY = float(max_delay)  # the queue head's longest sleep between rounds of slot tries
# one record per LLM call: [slot asked, slot granted, slot released, seconds in HTTP (httpx send)]
holds, lock, local, marks, ticks = [], threading.Lock(), threading.local(), {}, [0.0, 0]
gate = [None]
orig_send, orig_slot = httpx.Client.send, llm_limiter.LLMLimiter.slot


def send(self, *args, **kwargs):
    if mode in ("http-gate", "no-limiter"):
        rec = [time.time(), 0.0, 0.0, 0.0]
        with orig_slot(gate[0]) if mode == "http-gate" else _nothing():
            rec[1] = time.time()
            try:
                return orig_send(self, *args, **kwargs)
            finally:
                rec[2] = time.time()
                rec[3] = rec[2] - rec[1]
                with lock:
                    holds.append(rec)
    start = time.perf_counter()
    try:
        return orig_send(self, *args, **kwargs)
    finally:
        rec = getattr(local, "rec", None)
        if rec is not None:
            rec[3] += time.perf_counter() - start


@contextmanager
def _nothing():
    yield


@contextmanager
def slot(self, timeout=None):  # LLMLimiter.slot, timed; [granted, released] lies inside the real hold
    rec = [time.time(), 0.0, 0.0, 0.0]
    taken = self.acquire(timeout)
    rec[1] = time.time()
    local.rec = rec
    try:
        yield taken
    finally:
        rec[2] = time.time()
        taken.release()
        local.rec = None
        with lock:
            holds.append(rec)


def install(limiter, modules=None):  # no hook around completion()
    gate[0] = limiter


httpx.Client.send = send
if mode == "workbench":
    llm_limiter.LLMLimiter.slot = slot
else:
    llm_limiter.install = install
orig_import, orig_tick = execute.import_docetl, execute._Monitor.tick


def import_docetl():
    t, c = time.time(), time.process_time()
    runner_cls = orig_import()
    marks["import"], marks["import_cpu"] = time.time() - t, time.process_time() - c
    orig_lrs = runner_cls.load_run_save

    def load_run_save(self, *a, **k):
        marks["lrs_start"] = time.time()
        try:
            return orig_lrs(self, *a, **k)
        finally:
            marks["lrs_end"] = time.time()
    runner_cls.load_run_save = load_run_save
    return runner_cls


def tick(self):
    t = time.perf_counter()
    orig_tick(self)
    ticks[0] += time.perf_counter() - t
    ticks[1] += 1


execute.import_docetl, execute._Monitor.tick = import_docetl, tick
code = execute.main([run_id])
marks.update(cpu=time.process_time(), ticks=ticks, holds=holds)
open(out_path, "w").write(json.dumps(marks))
sys.exit(code)
"""


WORDS = ("cat dog market stock river bond forest owl price yield tiger loan horse fund eagle rate whale "
         "share meadow index fox dividend bear credit salmon budget rabbit equity wolf inflation").split()


# -- helpers -------------------------------------------------------------------------------------------
def rows_csv(n: int) -> bytes:
    """n rows (id, text): 20-40 deterministic words each, different per row."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "text"])
    for i in range(n):
        k = 20 + (i * 7) % 21
        w.writerow([i, " ".join(WORDS[(i * 13 + j * (i % 5 + 1)) % len(WORDS)] for j in range(k))])
    return out.getvalue().encode()


def base_env(home: Path) -> dict[str, str]:
    """The environment of every process run here: offline, headless, isolated (docetl-notes)."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("OPENAI_", "LITELLM_", "DOCETL_"))}
    env.update(DOCETL_HOME_DIR=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", USE_FRONTEND="true",
               OPENAI_API_KEY="sk-bench-not-real", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    return env


def epoch(value: Any) -> float:
    """A stored timestamp (aware or naive UTC) as seconds since the epoch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def child_cpu() -> float:
    """CPU seconds (user + system) of every child this process has reaped so far (and theirs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> float:
    return os.getloadavg()[0]


def die_with_parent() -> None:
    """In a child before exec: SIGKILL when this benchmark dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_group(proc: subprocess.Popen, term_first: bool = True, wait: float = 15.0) -> None:
    """Stop a process we started (in its own session): SIGTERM, then SIGKILL of its whole group."""
    if proc.poll() is None and term_first:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=wait)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def pipeline_config(base_url: str, input_path: str, out_dir: Path) -> dict[str, Any]:
    return {
        "default_model": "openai/fake", "default_lm_api_base": base_url, "bypass_cache": True,
        "datasets": {"input": {"type": "file", "path": input_path}},
        "operations": [OPERATION],
        "pipeline": {"steps": [{"name": "main", "input": "input", "operations": ["summarize"]}],
                     "output": {"type": "file", "path": str(out_dir / "output.json"),
                                "intermediate_dir": str(out_dir / "intermediates")}},
    }


def pipeline_yaml(base_url: str) -> str:
    import yaml

    return yaml.safe_dump(pipeline_config(base_url, "INPUT", Path("/unused")) | {
        "pipeline": {"steps": [{"name": "main", "input": "input", "operations": ["summarize"]}],
                     "output": {"type": "file", "path": "OUTPUT"}}}, sort_keys=False)


# -- the workbench -------------------------------------------------------------------------------------
class Workbench:
    """A fresh home with a `bench` namespace, datasets imported, and the real service once started."""

    def __init__(self, home: Path, settings: dict[str, str]) -> None:
        from core.config import Config
        from core.settings import open_store

        home.mkdir(parents=True)
        self.home = home
        self.env = base_env(home) | {"DOCETL_WB_AUTOSTART_SERVICE": "0", "DOCETL_WB_BCRYPT_ROUNDS": "4", **settings}
        self.store = open_store(Config.from_env(self.env))
        self.service: subprocess.Popen | None = None
        self.service_log = home / "service.log"
        from core import namespaces
        from core.principal import Principal

        self.operator = Principal.operator()
        namespaces.create(self.store, self.operator, NAMESPACE)

    def dataset(self, name: str, rows: int) -> dict[str, Any]:
        from core import datasets

        made = datasets.create_upload(self.store, self.operator, NAMESPACE, f"{name}.csv", rows_csv(rows), name=name)
        done = datasets.ingest(self.store, made["id"])
        assert done and done["ingest_status"] == "ready" and done["row_count"] == rows, done
        return done

    def start_service(self) -> None:
        from core import service_control

        log = open(self.service_log, "ab")
        try:
            self.service = subprocess.Popen([sys.executable, "-m", "scheduler_service"], cwd=ROOT, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + 60
        while service_control.status(self.store.config)["heartbeat"].get("pid") != self.service.pid:
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start:\n" + self.service_log.read_text()[-3000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.service is not None:
            kill_group(self.service)
            self.service = None

    def enqueue(self, yaml_text: str, dataset_id: str, name: str) -> dict[str, Any]:
        from core import runs

        return runs.enqueue(self.store, self.operator, namespace=NAMESPACE, pipeline_name=name,
                            yaml_text=yaml_text, input_dataset_id=dataset_id)

    def wait(self, run_ids: list[str], timeout: float, every: float = 0.25) -> dict[str, dict[str, Any]]:
        from core import runs
        from core.runs import TERMINAL, RunStatus

        deadline = time.monotonic() + timeout
        while True:
            found = {i: runs.get_trusted(self.store, i) for i in run_ids}
            if all(RunStatus(r["status"]) in TERMINAL for r in found.values()):
                return found
            if time.monotonic() > deadline or (self.service is not None and self.service.poll() is not None):
                raise RuntimeError(f"runs not finished: {[r['status'] for r in found.values()]}\n"
                                   + self.service_log.read_text()[-3000:])
            time.sleep(every)


def run_facts(run: dict[str, Any]) -> dict[str, Any]:
    from core import runs

    assert run["status"] == "completed", (run["status"], run["error"], runs.log_tail(run)[-3000:])
    progress = runs.progress(run) or {}
    ops = progress.get("ops") or [{}]
    return {"queued": epoch(run["queued_at"]), "started": epoch(run["started_at"]),
            "finished": epoch(run["finished_at"]), "duration": float(run["duration_seconds"]),
            "docetl_elapsed": float(progress.get("elapsed") or 0.0), "op_elapsed": float(ops[0].get("elapsed") or 0.0),
            "rows_in": run["input_rows"], "rows_out": run["output_rows"], "warnings": run["warnings"]}


# -- (a) -----------------------------------------------------------------------------------------------
def warm_import(tmp: Path) -> float:
    home = tmp / "warm"
    home.mkdir()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import litellm.litellm_core_utils.default_encoding, docetl.runner"],
                   cwd=home, env=base_env(home), stdin=subprocess.DEVNULL, capture_output=True, check=True,
                   timeout=300)
    return time.perf_counter() - start


def bare(tmp: Path, llm: Any, input_json: Path, threads: int) -> dict[str, float]:
    work = tmp / "bare"
    if work.exists():
        work = Path(tempfile.mkdtemp(prefix="bare-", dir=tmp))
    (work / "home").mkdir(parents=True)
    config = pipeline_config(llm.base_url, str(input_json), work / "out")
    (work / "config.json").write_text(json.dumps(config))
    result = work / "result.json"
    llm.reset()
    cpu0, load0 = child_cpu(), load()
    with open(work / "bare.log", "wb") as log:
        t_spawn = time.time()
        proc = subprocess.Popen([sys.executable, "-c", BARE, str(work / "config.json"), str(threads), str(result)],
                                cwd=work, env=base_env(work / "home"), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        try:
            code = proc.wait(timeout=1800)
        finally:
            kill_group(proc, term_first=False)
    if code != 0:
        raise RuntimeError("bare docetl failed:\n" + (work / "bare.log").read_text()[-3000:])
    r = json.loads(result.read_text())
    stats = llm.stats()
    return {"e2e": r["t_done"] - t_spawn, "interp": r["t_top"] - t_spawn, "import": r["t_imported"] - r["t_top"],
            "build": r["t_built"] - r["t_imported"], "run": r["t_done"] - r["t_built"], "rows": r["rows"],
            "requests": stats["requests_total"], "max_in_flight": stats["max_in_flight"],
            "cpu": child_cpu() - cpu0, "load": (load0, load())}


def workbench_a(tmp: Path, llm: Any, rows: int, threads: int) -> tuple[dict[str, Any], Path]:
    wb = Workbench(tmp / "wb-a", {"DOCETL_WB_RUN_MAX_THREADS": str(threads),
                                  "DOCETL_WB_LLM_MAX_INFLIGHT": str(threads), "DOCETL_WB_MAX_RUNNING_RUNS": "1"})
    try:
        source = wb.dataset("docs", rows)
        cpu0, load0 = child_cpu(), load()
        wb.start_service()
        yaml_text = pipeline_yaml(llm.base_url)
        llm.reset()
        t_enqueue = time.time()
        run = wb.enqueue(yaml_text, source["id"], "bench-map")
        done = wb.wait([run["id"]], timeout=1800)[run["id"]]
        t_seen = time.time()
    finally:
        wb.stop()
    cpu, load1 = child_cpu() - cpu0, load()
    facts = run_facts(done)
    stats = llm.stats()
    facts.update(e2e=facts["finished"] - facts["queued"], t_enqueue=t_enqueue, seen=t_seen - t_enqueue,
                 enqueue_call=facts["queued"] - t_enqueue, requests=stats["requests_total"],
                 max_in_flight=stats["max_in_flight"], cpu=cpu, load=(load0, load1))
    return facts, Path(source["path"])


def part_a(tmp: Path, args: argparse.Namespace) -> bool:
    from tests.fake_llm import FakeLLM

    rows, n = args.rows, args.threads
    with FakeLLM(latency=args.latency) as llm:
        warm = warm_import(tmp)
        wb, input_json = workbench_a(tmp, llm, rows, n)
        b = bare(tmp, llm, input_json, n)
    ideal = rows * args.latency / n
    print(f"(a) {rows} rows, one map, N={n} threads, server latency {args.latency * 1000:g} ms "
          f"(ideal LLM time rows x latency / N = {ideal:.2f} s); warm-up import {warm:.1f} s (untimed)")
    print(f"  bare docetl      end to end {b['e2e']:7.2f} s = interpreter {b['interp']:.2f} + import {b['import']:.2f}"
          f" + DSLRunner() {b['build']:.2f} + load_run_save {b['run']:.2f}"
          f"   [{b['rows']} rows out, {b['requests']} requests, max in flight {b['max_in_flight']}]")
    print(f"  workbench        end to end {wb['e2e']:7.2f} s = enqueue->started {wb['started'] - wb['queued']:.2f}"
          f" (service poll) + duration_seconds {wb['duration']:.2f}"
          f"   [{wb['rows_out']} rows out, {wb['requests']} requests, max in flight {wb['max_in_flight']}]")
    other = wb["duration"] - wb["docetl_elapsed"]
    print(f"                   duration_seconds {wb['duration']:.2f} = docetl pipeline (progress elapsed) "
          f"{wb['docetl_elapsed']:.2f} [map op {wb['op_elapsed']:.2f}] + the rest {other:.2f}"
          f" (child spawn, core+docetl import, store, input, recording)")
    print(f"                   seen by this poller after {wb['seen']:.2f} s; enqueue call recorded "
          f"{wb['enqueue_call'] * 1000:.0f} ms after the clock started")
    r_e2e = wb["e2e"] / b["e2e"]
    r_strict = wb["e2e"] / b["run"]
    r_docetl = wb["docetl_elapsed"] / b["run"]
    r_dur = wb["duration"] / b["e2e"]
    print(f"  CPU seconds (user+sys, all processes of the contender): bare {b['cpu']:.1f},"
          f" workbench {wb['cpu']:.1f} (service + run child) = {wb['cpu'] / b['cpu']:.2f}x;"
          f" 1-min load average bare {b['load'][0]:.1f}->{b['load'][1]:.1f},"
          f" workbench {wb['load'][0]:.1f}->{wb['load'][1]:.1f} on {os.cpu_count()} CPUs")
    print(f"  ratios: workbench e2e / bare e2e (both incl. import) {r_e2e:5.2f}x;"
          f" workbench e2e / bare load_run_save only {r_strict:5.2f}x;")
    print(f"          run duration_seconds / bare e2e {r_dur:5.2f}x;"
          f" docetl part (progress elapsed) / bare load_run_save {r_docetl:5.2f}x;"
          f" bare load_run_save / ideal {b['run'] / ideal:5.2f}x")
    ok_rows = wb["rows_out"] == rows == b["rows"] and wb["requests"] == b["requests"] == rows
    goals = [
        (f"workbench <= {GOAL_RATIO:.2f}x bare, end to end vs end to end", r_e2e <= GOAL_RATIO, f"{r_e2e:.2f}x"),
        (f"workbench <= {GOAL_RATIO:.2f}x bare load_run_save only (import excluded, strict)", r_strict <= GOAL_RATIO,
         f"{r_strict:.2f}x"),
        ("every row out, one request per row, both contenders", ok_rows,
         f"rows {wb['rows_out']}/{b['rows']}, requests {wb['requests']}/{b['requests']}"),
    ]
    for name, ok, value in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
    return goals[0][1] and ok_rows


# -- (b) -----------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """The server's counters every SAMPLE_EVERY seconds: (time, requests_total, in_flight, max_in_flight)."""

    def __init__(self, llm: Any) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.llm, self.samples = llm, []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            s = self.llm.stats()
            self.samples.append((time.time(), s["requests_total"], s["in_flight"], s["max_in_flight"]))
            self._halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def busy_period(samples: list[tuple[float, int, int, int]], total: int) -> tuple[float, float, float, float]:
    """(first request: lower, upper bound; last response: lower, upper bound) from the samples."""
    first = next(k for k, s in enumerate(samples) if s[1] > 0)
    last = next(k for k, s in enumerate(samples) if s[1] == total and s[2] == 0)
    return samples[max(first - 1, 0)][0], samples[first][0], samples[max(last - 1, 0)][0], samples[last][0]


def part_b(tmp: Path, args: argparse.Namespace) -> bool:
    from tests.fake_llm import FakeLLM

    rows, limit, latency = args.b_rows, args.inflight, args.b_latency
    wb = Workbench(tmp / "wb-b", {"DOCETL_WB_RUN_MAX_THREADS": str(args.threads),
                                  "DOCETL_WB_LLM_MAX_INFLIGHT": str(limit), "DOCETL_WB_MAX_RUNNING_RUNS": "3"})
    with FakeLLM(latency=latency) as llm:
        sampler = Sampler(llm)
        try:
            source = wb.dataset("docs", rows)
            cpu0, load0 = child_cpu(), load()
            wb.start_service()
            yaml_text = pipeline_yaml(llm.base_url)
            llm.reset()
            sampler.start()
            ids = [wb.enqueue(yaml_text, source["id"], f"bench-map-{i}")["id"] for i in range(3)]
            done = wb.wait(ids, timeout=1800)
            time.sleep(3 * SAMPLE_EVERY)
        finally:
            if sampler.is_alive():
                sampler.stop()
            wb.stop()
        stats = llm.stats()
        cpu_wb, load1 = child_cpu() - cpu0, load()
    cpu_server = child_cpu() - cpu0 - cpu_wb
    facts = [run_facts(done[i]) for i in ids]
    total = stats["requests_total"]
    f_lo, f_hi, l_lo, l_hi = busy_period(sampler.samples, total)
    span_max, span_min = l_hi - f_lo, max(l_lo - f_hi, 1e-9)
    # midpoint of the brackets: the first request happened in (f_lo, f_hi], the last response in (l_lo, l_hi]
    span = (l_lo + l_hi) / 2 - (f_lo + f_hi) / 2
    ideal = limit / latency
    thr, thr_lo, thr_hi = total / span, total / span_max, total / span_min
    t0 = (f_lo + f_hi) / 2
    print(f"(b) 3 runs x {rows} rows queued at once, DOCETL_WB_MAX_RUNNING_RUNS=3, DOCETL_WB_LLM_MAX_INFLIGHT={limit},"
          f" {args.threads} threads per run, server latency {latency * 1000:g} ms; ideal {limit}/{latency:g} s ="
          f" {ideal:.0f} requests/s")
    for i, f in zip(ids, facts):
        print(f"  run {i[:8]}: queued->started {f['started'] - f['queued']:5.2f} s, requests from"
              f" ~{f['finished'] - f['docetl_elapsed'] - t0:6.2f} to {f['finished'] - t0:6.2f} s (t=0: first request),"
              f" duration {f['duration']:6.2f} s, docetl part {f['docetl_elapsed']:6.2f} s, rows {f['rows_in']}->"
              f"{f['rows_out']}")
    print(f"  server: {total} requests ({stats['by_status']}), busy period {span:.2f} s (first request -> last"
          f" response, +/- {SAMPLE_EVERY * 1000:.0f} ms sampling), max_in_flight {stats['max_in_flight']}")
    print(f"  throughput {thr:6.1f} requests/s = {thr / ideal:5.1%} of ideal"
          f" (bounds {thr_lo:.1f}..{thr_hi:.1f}); ideal busy period {total / ideal:.2f} s; steady state (between 10 %"
          f" and 90 % of the requests) {steady(sampler.samples, total):.1f}/s")
    print(f"  CPU seconds: service + 3 run children {cpu_wb:.1f} ({cpu_wb / total * 1000:.1f} ms per request"
          f" incl. 3 docetl imports), fake server {cpu_server:.1f}; 1-min load average {load0:.1f}->{load1:.1f}"
          f" on {os.cpu_count()} CPUs")
    buckets: dict[int, int] = {}
    prev = 0
    for t, n, *_ in sampler.samples:
        if t >= f_lo:
            key = int((t - t0) // 2)
            buckets[key] = buckets.get(key, 0) + n - prev
        prev = n
    line = " ".join(f"{buckets.get(k, 0) / 2:.0f}" for k in range(0, max(buckets) + 1)) if buckets else "-"
    print(f"  requests/s per 2 s window from the first request: {line}")
    in_flight = [s[2] for s in sampler.samples if f_hi <= s[0] <= l_lo]
    if in_flight:
        full = sum(1 for v in in_flight if v >= limit) / len(in_flight)
        print(f"  sampled in_flight during the busy period: mean {sum(in_flight) / len(in_flight):.2f},"
              f" at the limit in {full:.0%} of {len(in_flight)} samples")
    goals = [
        (f"throughput >= {GOAL_THROUGHPUT:.0%} of ideal {ideal:.0f}/s", thr >= GOAL_THROUGHPUT * ideal,
         f"{thr:.1f}/s = {thr / ideal:.1%}"),
        (f"server max_in_flight == {limit} (reached, never exceeded)", stats["max_in_flight"] == limit,
         str(stats["max_in_flight"])),
        ("every row out, one request per row", total == 3 * rows and all(f["rows_out"] == rows for f in facts),
         f"{total} requests, rows out {[f['rows_out'] for f in facts]}"),
    ]
    for name, ok, value in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
    return all(ok for _, ok, _ in goals)


# -- --diagnose: where the time goes -------------------------------------------------------------------------
MODES = {
    "workbench": "the code as it is: a slot around litellm's completion()",
    "http-gate": "the slot around the HTTP exchange only (httpx.Client.send): a possible fix",
    "no-limiter": "no limiter at all (breaks the limit when threads > limit): the machine's ceiling",
}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def steady(samples: list[tuple[float, int, int, int]], total: int, lo: float = 0.1, hi: float = 0.9) -> float:
    """Requests/s between the samples where 10 % and 90 % of the requests had arrived (no ramp, no tail)."""
    a = next(s for s in samples if s[1] >= lo * total)
    b = next(s for s in samples if s[1] >= hi * total)
    return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)


def diagnose_case(tmp: Path, label: str, n_runs: int, rows: int, limit: int, threads: int, latency: float,
                  modes: tuple[str, ...], switch: float = 0.0, max_delay: float = 0.0) -> None:
    from core import runs, workers
    from tests.fake_llm import FakeLLM

    wb = Workbench(tmp / f"wb-diag-{label}", {"DOCETL_WB_RUN_MAX_THREADS": str(threads),
                                               "DOCETL_WB_LLM_MAX_INFLIGHT": str(limit),
                                               "DOCETL_WB_MAX_RUNNING_RUNS": str(n_runs)})
    source = wb.dataset("docs", rows)
    ideal = limit / latency
    print(f"--diagnose ({label}): {n_runs} run(s) x {rows} rows at once, limit {limit}, {threads} threads per run,"
          f" {latency * 1000:g} ms; each run executed by core.execute's own code (`python -m core.execute RUN_ID`"
          f" as the service starts it) with timing probes, no service; ideal {ideal:.0f}/s"
          + (f"; sys.setswitchinterval({switch:g}) in the run processes" if switch else "")
          + (f"; the limiter's _MAX_DELAY patched to {max_delay:g} s" if max_delay else ""))
    with FakeLLM(latency=latency) as llm:
        if n_runs == 1:  # the bare baseline under the same conditions, on the same rows
            b = bare(tmp / f"diag-{label}", llm, Path(source["path"]), threads)
            print(f"  bare docetl (no workbench code at all): load_run_save {b['run']:6.2f} s ="
                  f" {rows / b['run']:5.1f}/s, import {b['import']:5.2f} s, process CPU {b['cpu']:6.2f} s,"
                  f" server max_in_flight {b['max_in_flight']}; load {b['load'][0]:.1f}->{b['load'][1]:.1f}")
        for mode in modes:
            yaml_text = pipeline_yaml(llm.base_url)
            ids = [wb.enqueue(yaml_text, source["id"], f"diag-{mode}-{i}")["id"] for i in range(n_runs)]
            for run_id in ids:
                assert runs.claim(wb.store, run_id, workers.identity())
            llm.reset()
            sampler, procs, outs = Sampler(llm), [], []
            load0 = load()
            sampler.start()
            try:
                for run_id in ids:
                    run = runs.get_trusted(wb.store, run_id)
                    outs.append(tmp / f"probe-{run_id}.json")
                    log = open(run["log_path"], "ab")
                    procs.append(subprocess.Popen([sys.executable, "-c", PROBE, mode, str(outs[-1]), run_id,
                                                   str(switch), str(max_delay)],
                                                  cwd=run["run_dir"], env=wb.env, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True,
                                                  preexec_fn=die_with_parent))
                    log.close()
                codes = [p.wait(timeout=1800) for p in procs]
                time.sleep(3 * SAMPLE_EVERY)
            finally:
                if sampler.is_alive():
                    sampler.stop()
                for p in procs:
                    kill_group(p, term_first=False)
            stats = llm.stats()
            done = [runs.get_trusted(wb.store, i) for i in ids]
            if any(codes) or any(d["status"] != "completed" for d in done):
                raise RuntimeError(f"diagnose {mode}: exit codes {codes}\n" + runs.log_tail(done[0])[-3000:])
            probes = [json.loads(o.read_text()) for o in outs]
            total = stats["requests_total"]
            f_lo, f_hi, l_lo, l_hi = busy_period(sampler.samples, total)
            t0 = (f_lo + f_hi) / 2
            busy = (l_lo + l_hi) / 2 - t0
            holds = [h for p in probes for h in p["holds"]]
            n = len(holds)
            wait = sum(h[1] - h[0] for h in holds) / n
            hold = sum(h[2] - h[1] for h in holds) / n
            http = sum(h[3] for h in holds) / n
            in_flight = [x[2] for x in sampler.samples if f_hi <= x[0] <= l_lo]
            print(f"  {mode} ({MODES[mode]}):")
            print(f"    {total} requests in {busy:.2f} s = {total / busy:5.1f}/s = {total / busy / ideal:5.1%}"
                  f" of ideal; steady (10-90 %) {steady(sampler.samples, total):5.1f}/s; server max_in_flight"
                  f" {stats['max_in_flight']}, sampled mean {sum(in_flight) / max(len(in_flight), 1):.2f}; load"
                  f" {load0:.1f}->{load():.1f}")
            if mode != "no-limiter":
                cycle = limit * busy / n
                print(f"    per request: slot wait {wait * 1000:6.1f} ms; slot held {hold * 1000:6.1f} ms = HTTP"
                      f" {http * 1000:6.1f} ms (server latency {latency * 1000:g}) + other work inside the slot"
                      f" {(hold - http) * 1000:5.1f} ms; slot cycle (limit x busy / requests) {cycle * 1000:6.1f} ms,"
                      f" so {cycle * 1000 - hold * 1000:5.1f} ms idle per request; max slots held at once (probe)"
                      f" {max_overlap([(h[1], h[2]) for h in holds])}")
            else:
                print(f"    per request: HTTP {http * 1000:6.1f} ms (server latency {latency * 1000:g})")
            for run_id, p, d in zip(ids, probes, done):
                grants = sorted(h[1] for h in p["holds"])
                lrs, duration = p["lrs_end"] - p["lrs_start"], float(d["duration_seconds"])
                print(f"    {run_id[:8]}: duration_seconds {duration:6.2f} = docetl import {p['import']:5.2f} s"
                      f" ({p['import_cpu']:.2f} CPU s) + load_run_save {lrs:6.2f} s + the rest"
                      f" {duration - p['import'] - lrs:4.2f} s (spawn, core, store, input, recording);")
                print(f"              LLM calls from {grants[0] - t0:5.2f} to {grants[-1] - t0:5.2f} s (t=0: first"
                      f" request); process CPU {p['cpu']:6.2f} s ="
                      f" {(p['cpu'] - p['import_cpu']) / rows * 1000:.1f} ms per row after the import;"
                      f" progress monitor {p['ticks'][1]} ticks, {p['ticks'][0] * 1000:.0f} ms")


def diagnose(tmp: Path, args: argparse.Namespace) -> None:
    modes_a = tuple(args.modes.split(",")) if args.modes else ("workbench", "no-limiter")
    modes_b = tuple(args.modes.split(",")) if args.modes else ("workbench", "http-gate", "no-limiter")
    if args.part in ("a", "both"):
        diagnose_case(tmp, "a", 1, args.rows, args.threads, args.threads, args.latency, modes_a, args.switch_interval,
                      args.max_delay)
    if args.part in ("b", "both"):
        diagnose_case(tmp, "b", 3, args.b_rows, args.inflight, args.threads, args.b_latency, modes_b,
                      args.switch_interval, args.max_delay)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("a", "b", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="(a) 600 rows, (b) 3 x 300 rows")
    ap.add_argument("--rows", type=int, help="(a) rows (default 3000)")
    ap.add_argument("--threads", type=int, default=16, help="docetl threads N (both parts; default 16)")
    ap.add_argument("--latency", type=float, default=0.05, help="(a) server latency in s (default 0.05)")
    ap.add_argument("--b-rows", type=int, help="(b) rows per run (default 1000)")
    ap.add_argument("--b-latency", type=float, default=0.1, help="(b) server latency in s (default 0.1)")
    ap.add_argument("--inflight", type=int, default=8, help="(b) DOCETL_WB_LLM_MAX_INFLIGHT (default 8)")
    ap.add_argument("--diagnose", action="store_true", help="then the same cases with timing probes in the run"
                    " processes; (a) with and without the limiter, (b) also with the slot around HTTP only")
    ap.add_argument("--diagnose-only", action="store_true", help="only the --diagnose cases (no goals)")
    ap.add_argument("--modes", help=f"--diagnose modes, comma-separated, among {', '.join(MODES)}")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="--diagnose: sys.setswitchinterval() in the run processes (default: CPython's 0.005)")
    ap.add_argument("--max-delay", type=float, default=0.0,
                    help="--diagnose: the limiter's _MAX_DELAY in the run processes (default: as in core, 0.010)")
    args = ap.parse_args(argv)
    args.rows = args.rows or (600 if args.quick else 3000)
    args.diagnose = args.diagnose or args.diagnose_only
    args.b_rows = args.b_rows or (300 if args.quick else 1000)

    from importlib.metadata import version

    print(f"DocETL Workbench execution benchmark: docetl {version('docetl')}, litellm {version('litellm')}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="docetl-bench-exec-") as tmp:
        if args.part in ("a", "both") and not args.diagnose_only:
            results.append(part_a(Path(tmp), args))
        if args.part in ("b", "both") and not args.diagnose_only:
            results.append(part_b(Path(tmp), args))
        if args.diagnose:
            diagnose(Path(tmp), args)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
