"""The run queue and the one place a run's status changes."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from core import audit, clock, runs, workers
from core.errors import NotFound, PermissionDenied, ValidationError
from core.runs import ErrorCategory, RunStatus
from core.store import Store

YAML = "operations: []\n"


def queue(store: Store, who, **kw) -> dict:
    return runs.enqueue(store, who, namespace=kw.pop("namespace", "alpha"), pipeline_name=kw.pop("name", "demo"),
                        yaml_text=YAML, **kw)


def dead_worker() -> str:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = workers.identity(gone.pid)
    gone.wait()
    return identity


def test_a_queued_run_snapshots_its_pipeline_and_is_audited(store: Store, team) -> None:
    run = queue(store, team["editor"], sample_rows=5)
    assert run["status"] == "queued" and run["sample_rows"] == 5 and run["created_by"] == "editor"
    assert open(run["config_path"], encoding="utf-8").read() == YAML
    assert run["log_path"].endswith(f"runs/logs/{run['id']}.log")
    assert audit.query(store, team["platform_admin"], action="run.queue")[0]["resource_id"] == run["id"]


def test_viewers_and_outsiders_cannot_run_or_cancel(store: Store, team) -> None:
    with pytest.raises(PermissionDenied):
        queue(store, team["viewer"])
    with pytest.raises(PermissionDenied):
        queue(store, team["outsider"])
    run = queue(store, team["editor"])
    with pytest.raises(PermissionDenied):
        runs.cancel(store, team["viewer"], run["id"])
    with pytest.raises(PermissionDenied):
        runs.get(store, team["outsider"], run["id"])
    assert runs.get(store, team["viewer"], run["id"])["status"] == "queued"
    assert store.execute("SELECT count(*) AS n FROM runs")[0]["n"] == 1


def test_bad_sample_and_unknown_run_are_clear(store: Store, team) -> None:
    with pytest.raises(ValidationError) as caught:
        queue(store, team["editor"], sample_rows=0)
    assert caught.value.key == "run.error.sample"
    with pytest.raises(NotFound):
        runs.get(store, team["editor"], "nope")


def test_claims_are_fifo_and_respect_the_global_limit(store: Store, team) -> None:
    start = clock.utcnow()
    ids = [queue(store, team["editor"], now=start + timedelta(seconds=i))["id"] for i in range(3)]
    first = runs.claim_next(store, "w1", max_running=2)
    second = runs.claim_next(store, "w2", max_running=2)
    assert [first["id"], second["id"]] == ids[:2]
    assert runs.claim_next(store, "w3", max_running=2) is None  # two running: the third waits
    runs.finish(store, first["id"], RunStatus.COMPLETED, cost=0.5, output_rows=3)
    assert runs.claim_next(store, "w3", max_running=2)["id"] == ids[2]


def test_status_moves_only_along_allowed_edges(store: Store, team) -> None:
    run = queue(store, team["editor"])
    with pytest.raises(runs.RunConflict):
        runs.finish(store, run["id"], RunStatus.COMPLETED)  # never ran
    assert runs.claim(store, run["id"], "w1")["status"] == "running"
    assert runs.claim(store, run["id"], "w2") is None  # one worker only
    done = runs.finish(store, run["id"], RunStatus.FAILED, error={"key": "run.error.llm", "params": {"detail": "x"}},
                       error_category=ErrorCategory.RATE_LIMIT)
    assert done["error_category"] == "rate_limit" and done["duration_seconds"] >= 0
    with pytest.raises(runs.RunConflict):
        runs.finish(store, run["id"], RunStatus.COMPLETED)
    assert "x" in runs.error_message(done["error"], "en")


def test_cancel_a_queued_run_at_once_and_flag_a_running_one(store: Store, team) -> None:
    waiting = queue(store, team["editor"])
    assert runs.cancel(store, team["editor"], waiting["id"])["status"] == "cancelled"
    assert runs.claim_next(store, "w", 2) is None
    busy = queue(store, team["editor"])
    runs.claim_next(store, "w", 2)
    flagged = runs.cancel(store, team["nsadmin"], busy["id"])
    assert flagged["status"] == "running" and flagged["cancel_requested"]
    assert runs.cancel_requested(store, busy["id"])
    assert (runs.run_paths(store.config.namespace_dir("alpha"), busy["id"])["cancel"]).exists()


def test_runs_of_a_dead_worker_become_worker_lost(store: Store, team) -> None:
    lost, live = queue(store, team["editor"]), queue(store, team["editor"])
    runs.claim(store, lost["id"], dead_worker())
    runs.claim(store, live["id"], workers.identity())
    assert runs.reclaim_lost(store) == [lost["id"]]
    after = runs.get(store, team["editor"], lost["id"])
    assert (after["status"], after["error_category"]) == ("failed", "worker_lost")
    assert runs.get(store, team["editor"], live["id"])["status"] == "running"
    events = store.execute("SELECT kind, run_id FROM run_events")
    assert events == [{"kind": "worker_lost", "run_id": lost["id"]}]


def test_list_filters_and_namespace_visibility(store: Store, team) -> None:
    queue(store, team["editor"], name="a")
    queue(store, team["editor"], name="b")
    queue(store, team["outsider"], namespace="beta", name="c")
    assert {r["pipeline_name"] for r in runs.list_runs(store, team["viewer"])} == {"a", "b"}
    assert [r["pipeline_name"] for r in runs.list_runs(store, team["viewer"], "alpha", pipeline="b")] == ["b"]
    assert len(runs.list_runs(store, team["platform_admin"], status="queued")) == 3
    with pytest.raises(PermissionDenied):
        runs.list_runs(store, team["outsider"], "alpha")


def test_pages_of_the_history_cover_every_run_once_newest_first(store: Store, team) -> None:
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    made = [queue(store, team["editor"], name=f"p{i % 2}", now=start + timedelta(minutes=i))["id"] for i in range(7)]
    queue(store, team["outsider"], namespace="beta", name="p0")  # never in alpha's pages, nor in its count
    pages = [[r["id"] for r in runs.list_runs(store, team["viewer"], "alpha", limit=3, offset=o)] for o in (0, 3, 6, 9)]
    assert pages == [made[6:3:-1], made[3:0:-1], made[:1], []]
    assert runs.count_runs(store, team["viewer"], "alpha") == 7
    assert runs.count_runs(store, team["viewer"], "alpha", pipeline="p0") == 4
    assert [r["id"] for r in runs.list_runs(store, team["viewer"], "alpha", pipeline="p0", limit=2, offset=2)] == \
        [made[2], made[0]]
    assert runs.count_runs(store, team["platform_admin"]) == 8
    with pytest.raises(PermissionDenied):
        runs.count_runs(store, team["outsider"], "alpha")


def test_log_tail_is_bounded_and_starts_on_a_whole_line(store: Store, team) -> None:
    run = queue(store, team["editor"])
    with open(run["log_path"], "w", encoding="utf-8") as f:
        f.writelines(f"line {i}\n" for i in range(10_000))
    tail = runs.log_tail(run, max_bytes=1000)
    assert len(tail.encode()) <= 1000 and tail.startswith("line ") and tail.endswith("line 9999\n")
