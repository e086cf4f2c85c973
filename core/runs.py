"""Runs: the queue, their records, and the one place a run's status changes.

A run is queued by any trigger (page, CLI, notebook, later deployments and retries), claimed by one
worker (the scheduler service, or the calling process for `--in-process`), executed by
`core.execute`, and finished here. Status moves only through `_transition`, which enforces the allowed
moves (queued → running | cancelled | skipped, running → completed | failed | cancelled) inside the
caller's transaction, so two workers can never both start or both finish the same run.

Files of a run (seed §7): the log at `<ns>/runs/logs/<run_id>.log`; everything else in the run's own
folder `<ns>/runs/<run_id>/`: the pipeline snapshot it runs (`pipeline.yaml`, so editing the pipeline
after queuing changes nothing), `progress.json` (polled by the page), `output.json`, `intermediates/`,
the cancel flag and the executor's `result.json`.
"""
from __future__ import annotations

import json
import shutil
import uuid
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from core import audit, clock, workers
from core.errors import NotFound, ValidationError
from core.permissions import Action, require, visible_namespaces
from core.principal import Principal
from core.store import Store, Tx


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED})
_ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.SKIPPED}),
    RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}),
}


class ErrorCategory(str, Enum):
    """Why a run failed; the retry policy retries only the transient ones (SPEC "Retry")."""
    TIMEOUT = "timeout"
    NETWORK = "network"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    CONFIG = "config"
    VALIDATION = "validation"
    USER_CODE = "user_code"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"


class Trigger(str, Enum):
    MANUAL = "manual"
    CLI = "cli"
    NOTEBOOK = "notebook"
    SCHEDULE = "schedule"
    RETRY = "retry"


class RunConflict(ValidationError):
    """A status change that is not allowed from the run's current status (someone else moved it)."""


def run_paths(namespace_dir: Path, run_id: str) -> dict[str, Path]:
    """Where a run's files live; one function so the executor, the page and the worker agree."""
    run_dir = namespace_dir / "runs" / run_id
    return {"run_dir": run_dir, "log": namespace_dir / "runs" / "logs" / f"{run_id}.log",
            "progress": run_dir / "progress.json", "config": run_dir / "pipeline.yaml",
            "output": run_dir / "output.json", "intermediates": run_dir / "intermediates",
            "cancel": run_dir / "cancel", "result": run_dir / "result.json"}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["warnings"] = json.loads(row.get("warnings") or "[]")
    out["error"] = json.loads(row["error"]) if row.get("error") else None
    return out


def _row(tx: Tx, run_id: str) -> dict[str, Any]:
    found = tx.execute("SELECT * FROM runs WHERE id = ?", [run_id])
    if not found:
        raise NotFound("run.error.not_found", run=run_id)
    return found[0]


def record_event(tx: Tx, kind: str, *, run_id: str | None = None, deployment_id: str | None = None,
                 namespace: str | None = None, detail: dict[str, Any] | None = None,
                 now: datetime | None = None) -> None:
    """One row in `run_events` (worker lost, cancel requested, …): queryable history, never silent."""
    tx.execute_write("INSERT INTO run_events (occurred_at, kind, run_id, deployment_id, namespace, detail)"
                     " VALUES (?,?,?,?,?,?)", [clock.resolve(now), kind, run_id, deployment_id, namespace,
                                               json.dumps(detail or {}, ensure_ascii=False, default=str)])


def _transition(tx: Tx, run_id: str, to: RunStatus, now: datetime, **fields: Any) -> dict[str, Any]:
    """The only place a run's status changes: checks the move, writes it with `fields`, keeps the
    pipeline's last-run columns in step, and returns the new row."""
    row = _row(tx, run_id)
    current = RunStatus(row["status"])
    if to not in _ALLOWED.get(current, frozenset()):
        raise RunConflict("run.error.conflict", run=run_id, status=current.value, to=to.value)
    sets = {"status": to.value, **fields}
    if to == RunStatus.RUNNING:
        sets.setdefault("started_at", now)
    if to in TERMINAL:
        sets.setdefault("finished_at", now)
        started = row["started_at"] or sets.get("started_at")
        if started is not None:
            sets.setdefault("duration_seconds", max(0.0, (now - started).total_seconds()))
    assignments = ", ".join(f"{k} = ?" for k in sets)
    tx.execute_write(f"UPDATE runs SET {assignments} WHERE id = ? AND status = ?",
                     [*sets.values(), run_id, current.value])
    if row["pipeline_id"]:
        from core import pipelines

        pipelines.record_run(tx, row["pipeline_id"], to.value, now)
    return _row(tx, run_id)


# -- queueing and reading (permission-checked) -------------------------------------------------------
def enqueue(store: Store, principal: Principal, *, namespace: str, pipeline_name: str,
            yaml_text: str, pipeline_id: str | None = None, input_dataset_id: str | None = None,
            sample_rows: int | None = None, save_output_as: str | None = None,
            trigger: Trigger = Trigger.MANUAL, deployment_id: str | None = None, retry_of: str | None = None,
            attempt: int = 1, scheduled_for: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Queue a run of `yaml_text` (already validated by the caller) and snapshot it in the run folder."""
    require(principal, Action.RUN, namespace)
    check_code_policy(store, yaml_text)
    if sample_rows is not None and int(sample_rows) < 1:
        raise ValidationError("run.error.sample", value=sample_rows)
    now = clock.resolve(now)
    run_id = uuid.uuid4().hex
    paths = run_paths(store.config.namespace_dir(namespace), run_id)
    paths["run_dir"].mkdir(parents=True, mode=0o700)
    paths["log"].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = paths["config"].with_suffix(".part")
    tmp.write_text(yaml_text, encoding="utf-8")
    tmp.replace(paths["config"])
    try:
        return _insert(store, principal, run_id, paths, namespace=namespace, pipeline_name=pipeline_name,
                       pipeline_id=pipeline_id, input_dataset_id=input_dataset_id, sample_rows=sample_rows,
                       save_output_as=save_output_as, trigger=trigger, deployment_id=deployment_id,
                       retry_of=retry_of, attempt=attempt, scheduled_for=scheduled_for, now=now)
    except BaseException:
        shutil.rmtree(paths["run_dir"], ignore_errors=True)  # nothing half-queued stays behind
        raise


def _insert(store: Store, principal: Principal, run_id: str, paths: dict[str, Path], *, namespace: str,
            pipeline_name: str, pipeline_id: str | None, input_dataset_id: str | None, sample_rows: int | None,
            save_output_as: str | None, trigger: Trigger, deployment_id: str | None, retry_of: str | None,
            attempt: int, scheduled_for: datetime | None, now: datetime) -> dict[str, Any]:
    with store.transaction() as tx:
        if pipeline_id and not tx.execute("SELECT 1 FROM pipelines WHERE id = ? AND namespace = ?",
                                          [pipeline_id, namespace]):
            raise NotFound("run.error.pipeline_elsewhere", pipeline=pipeline_id, namespace=namespace)
        tx.execute_write(
            "INSERT INTO runs (id, namespace, pipeline_id, pipeline_name, deployment_id, trigger, status,"
            " input_dataset_id, sample_rows, save_output_as, run_dir, log_path, progress_path, config_path,"
            " output_path, queued_at, retry_of, attempt, scheduled_for, created_by)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [run_id, namespace, pipeline_id, pipeline_name, deployment_id, Trigger(trigger).value,
             RunStatus.QUEUED.value, input_dataset_id, sample_rows, save_output_as, str(paths["run_dir"]),
             str(paths["log"]), str(paths["progress"]), str(paths["config"]), str(paths["output"]), now,
             retry_of, attempt, scheduled_for, principal.username])
        audit.record(tx, principal, "run.queue", resource_type="run", resource_id=run_id, namespace=namespace,
                     detail={"pipeline": pipeline_name, "input": input_dataset_id, "sample": sample_rows,
                             "trigger": Trigger(trigger).value}, now=now)
        return _public(_row(tx, run_id))


def check_code_policy(store: Store, yaml_text: str) -> None:
    """Refuse a pipeline with code operations when an admin turned them off (`allow_code_operations`);
    checked when a run is queued and again when it starts (the setting may change in between)."""
    from core import pipelines

    if store.config["allow_code_operations"]:
        return
    code = [op["name"] for op in pipelines.summary(yaml_text) if op["type"].startswith("code_")]
    if code:
        raise ValidationError("run.error.code_disabled", ops=", ".join(code))


def get(store: Store, principal: Principal, run_id: str) -> dict[str, Any]:
    with store.read() as tx:
        row = _row(tx, run_id)
    require(principal, Action.VIEW, row["namespace"])
    return _public(row)


def list_runs(store: Store, principal: Principal, namespace: str | None = None, *, status: str | None = None,
              pipeline: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
    """Newest first, within the namespaces the caller may see (one namespace when given); `offset` pages
    back through a history longer than one `limit`."""
    found = _run_filter(store, principal, namespace, status, pipeline)
    if found is None:
        return []
    where, params = found
    params += [max(1, min(int(limit), 10_000)), max(0, int(offset))]
    with store.read() as tx:
        return [_public(r) for r in tx.execute(
            f"SELECT * FROM runs WHERE {where} ORDER BY queued_at DESC, id LIMIT ? OFFSET ?", params)]


def count_runs(store: Store, principal: Principal, namespace: str | None = None, *, status: str | None = None,
               pipeline: str | None = None) -> int:
    """How many runs `list_runs` would page through with the same filters (for "1–100 of 2,345")."""
    found = _run_filter(store, principal, namespace, status, pipeline)
    if found is None:
        return 0
    where, params = found
    with store.read() as tx:
        return int(tx.execute(f"SELECT count(*) AS n FROM runs WHERE {where}", params)[0]["n"])


def _run_filter(store: Store, principal: Principal, namespace: str | None, status: str | None,
                pipeline: str | None) -> tuple[str, list[Any]] | None:
    """The WHERE clause of a run listing, checked against the caller's rights; None when they see nothing."""
    if namespace is not None:
        require(principal, Action.VIEW, namespace)
        spaces = [namespace]
    else:
        with store.read() as tx:
            names = [r["name"] for r in tx.execute("SELECT name FROM namespaces")]
        spaces = visible_namespaces(principal, names)
    if not spaces:
        return None
    where = f"namespace IN ({', '.join('?' * len(spaces))})"
    params: list[Any] = list(spaces)
    if status:
        where += " AND status = ?"
        params.append(RunStatus(status).value)
    if pipeline:
        where += " AND (pipeline_name = ? OR pipeline_id = ?)"
        params += [pipeline, pipeline]
    return where, params


def cancel(store: Store, principal: Principal, run_id: str, now: datetime | None = None) -> dict[str, Any]:
    """A queued run is cancelled at once; a running one is flagged and its worker stops it (bounded)."""
    now = clock.resolve(now)
    with store.transaction() as tx:
        row = _row(tx, run_id)
        require(principal, Action.CANCEL_RUN, row["namespace"])
        status = RunStatus(row["status"])
        if status in TERMINAL:
            return _public(row)
        if status == RunStatus.QUEUED:
            row = _transition(tx, run_id, RunStatus.CANCELLED, now, error_category=ErrorCategory.CANCELLED.value,
                              error=json.dumps({"key": "run.cancelled_by", "params": {"user": principal.username}}))
        else:
            tx.execute_write("UPDATE runs SET cancel_requested = TRUE WHERE id = ?", [run_id])
            row = _row(tx, run_id)
        audit.record(tx, principal, "run.cancel", resource_type="run", resource_id=run_id,
                     namespace=row["namespace"], detail={"was": status.value}, now=now)
    if status == RunStatus.RUNNING:
        try:  # the flag lets docetl stop cooperatively; the stored request alone still ends the run
            (Path(row["run_dir"]) / "cancel").touch()
        except OSError:
            pass
    return _public(row)


# -- the worker's side (trusted callers: the service and the in-process executor) ---------------------
def claim_next(store: Store, worker: str, max_running: int, now: datetime | None = None) -> dict[str, Any] | None:
    """The oldest queued run → running for `worker`, if fewer than `max_running` are running (FIFO)."""
    now = clock.resolve(now)
    with store.transaction() as tx:
        running = tx.execute("SELECT count(*) AS n FROM runs WHERE status = ?", [RunStatus.RUNNING.value])[0]["n"]
        if running >= max_running:
            return None
        queued = tx.execute("SELECT id FROM runs WHERE status = ? ORDER BY queued_at, id LIMIT 1",
                            [RunStatus.QUEUED.value])
        if not queued:
            return None
        return _public(_transition(tx, queued[0]["id"], RunStatus.RUNNING, now, worker=worker))


def claim(store: Store, run_id: str, worker: str, now: datetime | None = None) -> dict[str, Any] | None:
    """This queued run → running for `worker` (the in-process path); None when someone else has it."""
    with store.transaction() as tx:
        try:
            return _public(_transition(tx, run_id, RunStatus.RUNNING, clock.resolve(now), worker=worker))
        except RunConflict:
            return None


def finish(store: Store, run_id: str, status: RunStatus, *, error: dict[str, Any] | None = None,
           error_category: ErrorCategory | None = None, now: datetime | None = None,
           **metrics: Any) -> dict[str, Any]:
    """running → a terminal status with the run's figures (cost, tokens, rows, output, warnings)."""
    allowed = {"cost", "tokens_prompt", "tokens_completion", "input_rows", "output_rows", "output_dataset_id",
               "output_path", "warnings"}
    unknown = set(metrics) - allowed
    if unknown:
        raise TypeError(f"unknown run fields: {sorted(unknown)}")
    fields = dict(metrics)
    if "warnings" in fields:
        fields["warnings"] = json.dumps(fields["warnings"], ensure_ascii=False)
    if error is not None:
        fields["error"] = json.dumps(error, ensure_ascii=False, default=str)
    if error_category is not None:
        fields["error_category"] = ErrorCategory(error_category).value
    with store.transaction() as tx:
        return _public(_transition(tx, run_id, RunStatus(status), clock.resolve(now), **fields))


def cancel_requested(store: Store, run_id: str) -> bool:
    with store.read() as tx:
        found = tx.execute("SELECT cancel_requested FROM runs WHERE id = ?", [run_id])
    return bool(found and found[0]["cancel_requested"])


def reclaim_lost(store: Store, is_alive: Callable[[str | None], bool] = workers.alive,
                 now: datetime | None = None) -> list[str]:
    """Runs left `running` by a worker that is gone → failed / worker_lost, each with an event."""
    now = clock.resolve(now)
    lost: list[str] = []
    with store.transaction() as tx:
        for row in tx.execute("SELECT id, worker, namespace FROM runs WHERE status = ?", [RunStatus.RUNNING.value]):
            if is_alive(row["worker"]):
                continue
            _transition(tx, row["id"], RunStatus.FAILED, now, error_category=ErrorCategory.WORKER_LOST.value,
                        error=json.dumps({"key": "run.error.worker_lost", "params": {}}))
            record_event(tx, "worker_lost", run_id=row["id"], namespace=row["namespace"],
                         detail={"worker": row["worker"]}, now=now)
            lost.append(row["id"])
    return lost


def set_output_dataset(store: Store, run_id: str, dataset_id: str) -> None:
    """The dataset saved from a finished run's output (its latest one); not a status change."""
    with store.transaction() as tx:
        tx.execute_write("UPDATE runs SET output_dataset_id = ? WHERE id = ?", [dataset_id, run_id])


def get_trusted(store: Store, run_id: str) -> dict[str, Any]:
    """A run for the worker and the executor (no caller to check: they act for the run's creator,
    whose rights were checked when it was queued)."""
    with store.read() as tx:
        return _public(_row(tx, run_id))


def running_of(store: Store, worker: str) -> list[str]:
    """The ids of the runs `worker` has marked running."""
    with store.read() as tx:
        return [r["id"] for r in tx.execute("SELECT id FROM runs WHERE status = ? AND worker = ?",
                                            [RunStatus.RUNNING.value, worker])]


def running_count(store: Store) -> int:
    with store.read() as tx:
        return tx.execute("SELECT count(*) AS n FROM runs WHERE status = ?", [RunStatus.RUNNING.value])[0]["n"]


def progress(run: dict[str, Any]) -> dict[str, Any] | None:
    """The executor's latest progress snapshot for a run (None before the first one)."""
    try:
        return json.loads(Path(run["progress_path"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log_tail(run: dict[str, Any], max_bytes: int = 64_000) -> str:
    """The end of a run's log (bounded: a page never loads a whole multi-megabyte log)."""
    path = Path(run["log_path"])
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text if size <= max_bytes else text[text.find("\n") + 1:]


def error_message(error: dict[str, Any] | None, lang: str) -> str:
    """A run's stored error (catalog key + params, or raw text) in the reader's language."""
    from core.i18n import t

    if not error:
        return ""
    if error.get("key"):
        return t(error["key"], lang, **(error.get("params") or {}))
    return str(error.get("message", ""))
