"""The scheduler service: one leader per home, FIFO under the global limit, crash safety, imports.

Real processes throughout: the service as `python -m scheduler_service`, each run in its own child,
docetl for real, LLM requests to the local test server. Waits are bounded by polling with generous
deadlines (guards against hangs, not speed assertions).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import ROOT
from core import datasets, llm_limiter, runs, service_control
from core.config import Config
from core.runs import RunStatus
from core.settings import open_store
from core.store import Store
from scheduler_service.service import Service
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.timeout(400)
TEMPLATES = ROOT / "data" / "templates"
OFFLINE = (TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8")


def until(check: Callable[[], object], what: str, deadline: float = 120.0, every: float = 0.2) -> object:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def env(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DOCETL_WB_SERVICE_POLL_SECONDS", "0.2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    return dict(os.environ)


@pytest.fixture
def services(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(**overrides: str) -> subprocess.Popen:
        log = open(Path(env["DOCETL_HOME_DIR"]) / f"service-{len(started)}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "scheduler_service"], cwd=ROOT, env={**env, **overrides},
                                stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def sample(store: Store, who, rows: int | None = None) -> dict:
    made = datasets.create_upload(store, who, "alpha", "orders.xlsx", (TEMPLATES / "sample_orders.xlsx").read_bytes(),
                                  name=f"orders-{rows or 'all'}", config={"end_row": rows + 1} if rows else None)
    return datasets.ingest(store, made["id"])


def queue(store: Store, who, source: dict, yaml_text: str = OFFLINE, name: str = "demo", **kw) -> dict:
    return runs.enqueue(store, who, namespace="alpha", pipeline_name=name, yaml_text=yaml_text,
                        input_dataset_id=source["id"], **kw)


def llm_yaml(server: FakeLLM) -> str:
    head = f"default_model: openai/fake\ndefault_lm_api_base: {server.base_url}\nbypass_cache: true\n"
    return head + (TEMPLATES / "llm_map.yaml").read_text(encoding="utf-8")


def status(store: Store, run_id: str) -> str:
    return runs.get_trusted(store, run_id)["status"]


def test_ticks_run_the_queue_fifo_under_the_limit_and_process_imports(store: Store, team, env) -> None:
    source = sample(store, team["editor"])
    ids = [queue(store, team["editor"], source)["id"] for _ in range(3)]
    pending = datasets.create_upload(store, team["editor"], "alpha", "more.csv", b"a,b\n1,2\n")
    service = Service(Config.from_env(env), poll_seconds=0.1)
    assert service.lead()
    try:
        service.tick()
        assert sorted(service.children) == sorted(ids[:2])  # default limit 2: the third waits its turn
        assert status(store, ids[2]) == "queued"
        until(lambda: (service.tick(), all(status(store, i) == "completed" for i in ids))[1], "three runs")
        assert datasets.get(store, team["editor"], pending["id"])["ingest_status"] == "ready"
    finally:
        service.teardown()


def test_kill_9_mid_run_then_restart_fails_it_as_worker_lost_and_frees_the_slots(
        store: Store, team, services, llm: FakeLLM) -> None:
    source = sample(store, team["editor"])
    llm.configure(latency=0.5)
    try:
        slow = queue(store, team["editor"], source, llm_yaml(llm), name="slow")
        following = queue(store, team["editor"], sample(store, team["editor"], rows=5), name="next")
        first = services(DOCETL_WB_MAX_RUNNING_RUNS="1")
        until(lambda: status(store, slow["id"]) == "running" and llm.stats()["in_flight"] > 0, "LLM requests")
        first.send_signal(signal.SIGKILL)
        first.wait()
        limiter = llm_limiter.LLMLimiter.from_config(store.config)
        until(lambda: limiter.in_flight() == 0, "the dead run's slots to be released", deadline=30)
        assert status(store, slow["id"]) == "running"  # nobody has noticed yet
        services(DOCETL_WB_MAX_RUNNING_RUNS="1")
        until(lambda: status(store, slow["id"]) == "failed", "worker_lost")
        assert runs.get_trusted(store, slow["id"])["error_category"] == "worker_lost"
        until(lambda: status(store, following["id"]) == "completed", "the next queued run")
    finally:
        llm.configure(latency=0.0)
    kinds = [e["kind"] for e in store.execute("SELECT kind FROM run_events WHERE run_id = ?", [slow["id"]])]
    assert kinds == ["worker_lost"]


def test_two_services_one_leader_no_run_twice_and_the_standby_takes_over(store: Store, team, services) -> None:
    source = sample(store, team["editor"], rows=20)
    first, second = services(), services()
    until(lambda: service_control.status(store.config)["heartbeat"].get("pid") in (first.pid, second.pid), "a leader")
    leader_pid = service_control.status(store.config)["heartbeat"]["pid"]
    ids = [queue(store, team["editor"], source, name=f"r{i}")["id"] for i in range(4)]
    until(lambda: all(status(store, i) == "completed" for i in ids), "four runs")
    for run_id in ids:
        log = Path(runs.get_trusted(store, run_id)["log_path"]).read_text(encoding="utf-8")
        assert log.count(f"run {run_id} of pipeline") == 1  # executed exactly once
    leader = first if leader_pid == first.pid else second
    standby = second if leader is first else first
    assert standby.poll() is None  # waiting, not gone
    leader.send_signal(signal.SIGTERM)
    leader.wait()
    until(lambda: service_control.status(store.config)["heartbeat"].get("pid") == standby.pid, "the standby to lead")
    late = queue(store, team["editor"], source, name="late")
    until(lambda: status(store, late["id"]) == "completed", "a run under the new leader")


def test_the_llm_limit_holds_across_runs_and_processes(store: Store, team, services, llm: FakeLLM, env) -> None:
    source = sample(store, team["editor"], rows=40)
    llm.configure(latency=0.2)
    llm.reset()
    try:
        limits = {"DOCETL_WB_LLM_MAX_INFLIGHT": "4", "DOCETL_WB_RUN_MAX_THREADS": "8"}
        ids = [queue(store, team["editor"], source, llm_yaml(llm), name=f"m{i}")["id"] for i in range(3)]
        services(DOCETL_WB_MAX_RUNNING_RUNS="2", **limits)  # two runs in two children of the service
        until(lambda: sum(status(store, i) == "running" for i in ids) == 2, "two running runs")
        third = [i for i in ids if status(store, i) == "queued"][0]
        here = subprocess.run(  # the third in yet another process, the way `--in-process` runs it
            [sys.executable, "-c", "import sys; from core.config import Config; from core.settings import open_store;"
             " from core import execute, runs, workers;"
             " s = open_store(Config.from_env()); runs.claim(s, sys.argv[1], workers.identity()) and print(execute.execute(s, sys.argv[1])['status'])", third],
            cwd=ROOT, env={**env, **limits}, capture_output=True, text=True, timeout=300)
        assert here.stdout.strip().endswith("completed"), here.stderr[-2000:]
        until(lambda: all(status(store, i) == "completed" for i in ids), "three runs")
    finally:
        llm.configure(latency=0.0)
    stats = llm.stats()
    assert stats["max_in_flight"] == 4  # reached, never exceeded, with 3 runs x 8 threads asking
    assert stats["by_kind"].get("send_output") == 3 * 40


def test_a_failing_round_is_logged_and_the_loop_goes_on(store: Store, env, caplog, monkeypatch) -> None:
    service = Service(Config.from_env(env), poll_seconds=0.01)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full for a moment")
        service.stopping.set()

    monkeypatch.setattr(service, "tick", flaky)
    service.work()  # returns (stopped by the second round), never raises
    assert len(calls) == 2 and "scheduler round failed" in caplog.text
    assert not service_control.leader_alive(store.config)  # leadership given up in teardown


def test_a_run_whose_process_cannot_start_is_never_left_running(store: Store, team, env, monkeypatch) -> None:
    source = sample(store, team["editor"], rows=3)
    run = queue(store, team["editor"], source)
    service = Service(Config.from_env(env), poll_seconds=0.01)
    assert service.lead()

    def no_process(*_: object) -> None:
        raise OSError("Resource temporarily unavailable")  # what fork says when the machine is full

    monkeypatch.setattr("core.execute.start_child", no_process)
    try:
        service.round()
    finally:
        service.teardown()
    after = runs.get_trusted(store, run["id"])
    assert (after["status"], after["error_category"]) == ("failed", "worker_lost")  # retryable, not stuck
    assert runs.claim_next(store, "next", 2) is None  # and it holds no place in the queue


def test_a_run_past_its_time_limit_is_stopped_as_a_timeout(store: Store, team, env, llm: FakeLLM) -> None:
    """docetl retries a provider's permanent 429 forever: the run timeout is what ends such a run."""
    source = sample(store, team["editor"], rows=20)
    run = queue(store, team["editor"], source, llm_yaml(llm), name="stuck")
    llm.configure(rate_429=1.0, retry_after=0.1)
    service = Service(Config.from_env({**env, "DOCETL_WB_RUN_TIMEOUT_MINUTES": "0.2"}), poll_seconds=0.1)
    assert service.lead()
    try:
        until(lambda: (service.round(), status(store, run["id"]) != "running" and not service.children)[1]
              and status(store, run["id"]) != "queued", "the timeout", deadline=90)
    finally:
        llm.configure(rate_429=0.0)
        service.teardown()
    after = runs.get_trusted(store, run["id"])
    assert (after["status"], after["error_category"]) == ("failed", "timeout")
    assert "0.2 minutes" in runs.error_message(after["error"], "en")
    assert llm.stats()["by_status"].get("429", 0) > 0  # it really was stuck on rate limits
