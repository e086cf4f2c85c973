"""The one execute function every trigger ends in, and the supervision of a run in a child process.

`execute(store, run_id)` runs a claimed run in *this* process: input from the Data Center (optionally
the first N rows), the pipeline snapshot bound to the run's own paths, docetl offline-safe with all
output captured to the run log, progress polled from docetl's ProgressTracker into `progress.json`,
every LLM request under the machine-wide limiter, then the figures and an error category recorded
through `core.runs` and, when asked, the output saved as a `pipeline_generated` dataset.

The scheduler service does not call it directly: docetl keeps process-global state (the active
tracker, `os.environ`, threads it cannot stop), so each run gets its own child process
(`python -m core.execute RUN_ID`, started by `start_child`). A child that ignores a cancel is killed
after a grace period (`supervise`), and it dies with its parent (PR_SET_PDEATHSIG), so a killed
service leaves no orphan still spending tokens. `--in-process` callers (CLI, notebook) call `execute`
themselves; cancellation is then cooperative only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time as _time
import traceback
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TextIO

from core import clock, datasets, llm_limiter, runs, workers
from core.errors import ValidationError, WorkbenchError
from core.runs import ErrorCategory, RunStatus
from core.store import Store

PROGRESS_INTERVAL = 0.5  # seconds between progress snapshots (and cancel-flag checks)
_ROOT = str(Path(__file__).resolve().parent.parent)


class RunFailed(Exception):
    """A run stopped for a reason with a category; `key`/`params` make its message translatable."""

    def __init__(self, category: ErrorCategory, key: str, **params: Any) -> None:
        super().__init__(f"{category.value}: {key} {params}")
        self.category, self.key, self.params = category, key, params


# -- submitting, waiting, running here (the CLI, notebooks and the page use these) ---------------------
def submit(store: Store, principal: Any, namespace: str, pipeline: str, *, input_dataset: str | None = None,
           sample_rows: int | None = None, save_output_as: str | None = None,
           trigger: runs.Trigger = runs.Trigger.MANUAL) -> dict[str, Any]:
    """Queue a run of a pipeline given by name or id, or by a YAML file path (registered on the fly:
    created, or its YAML updated when a pipeline of that name exists). The input is a Data Center
    dataset (name or id), else the pipeline's own input dataset. Validated before anything is queued."""
    from core import pipelines
    from core.permissions import Action, require

    require(principal, Action.RUN, namespace)
    record = _pipeline_for(store, principal, namespace, pipeline)
    yaml_text = pipelines.read_yaml(store, principal, record["id"])
    pipelines.check(yaml_text)
    dataset_id = record.get("input_dataset_id")
    if input_dataset:
        dataset_id = datasets.find(store, principal, namespace, input_dataset)["id"]
    if not dataset_id:  # refused now rather than queued to fail: every run reads a Data Center dataset
        raise ValidationError("run.error.no_input")
    if save_output_as:
        require(principal, Action.UPLOAD_DATASET, namespace)
    return runs.enqueue(store, principal, namespace=namespace, pipeline_name=record["name"],
                        pipeline_id=record["id"], yaml_text=yaml_text, input_dataset_id=dataset_id,
                        sample_rows=sample_rows, save_output_as=save_output_as, trigger=trigger)


def _pipeline_for(store: Store, principal: Any, namespace: str, ref: str) -> dict[str, Any]:
    from core import pipelines

    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        text = Path(ref).read_text(encoding="utf-8")
        name = pipelines.normalize_name(Path(ref).stem)
        try:
            found = pipelines.find(store, principal, namespace, name)
        except WorkbenchError:
            return pipelines.create(store, principal, namespace, name, text)
        if pipelines.read_yaml(store, principal, found["id"]) != text:
            return pipelines.update(store, principal, found["id"], yaml_text=text)
        return found
    return pipelines.find(store, principal, namespace, ref)


def wait(store: Store, principal: Any, run_id: str, *, poll: float = 0.5,
         timeout: float | None = None) -> dict[str, Any]:
    """Block until the run reaches a terminal status (or `timeout` seconds pass) and return it."""
    deadline = None if timeout is None else _time.monotonic() + timeout
    while True:
        run = runs.get(store, principal, run_id)
        if RunStatus(run["status"]) in runs.TERMINAL:
            return run
        if deadline is not None and _time.monotonic() >= deadline:
            return run
        _time.sleep(poll)


def run_here(store: Store, principal: Any, run_id: str) -> dict[str, Any]:
    """Execute a queued run in this process (`--in-process`), under the same global LLM limiter.
    It counts toward the platform's running runs, and its worker is this process, so if this process
    dies the service records it as worker_lost. Cancellation is cooperative only here."""
    from core.permissions import Action, require

    run = runs.get(store, principal, run_id)
    require(principal, Action.RUN, run["namespace"])
    if runs.claim(store, run_id, workers.identity()) is None:
        raise WorkbenchError("run.error.not_running", run=run_id, status=runs.get(store, principal, run_id)["status"])
    return execute(store, run_id)


# -- environment ---------------------------------------------------------------------------------------
_SECRET_SUFFIXES = ("_API_KEY", "_API_TOKEN", "_SECRET_KEY", "_ACCESS_KEY")


def docetl_environment(store: Store, *, with_keys: bool = True) -> dict[str, str]:
    """What docetl and litellm need to run here offline and headless (docetl-notes), plus the stored
    provider keys when the pipeline calls a model. Set before docetl is imported: its cache path is
    computed at import."""
    from core import llm_settings

    env = {"DOCETL_HOME_DIR": str(store.config.home), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "USE_FRONTEND": "true", "TOKENIZERS_PARALLELISM": "false"}
    if with_keys:
        env.update(llm_settings.run_environment(store))
    return env


def import_docetl() -> Any:
    """Import docetl with the offline fixes applied first (tiktoken, litellm's debug prints)."""
    import litellm.litellm_core_utils.default_encoding  # noqa: F401  (points tiktoken at bundled files)
    import litellm

    litellm.suppress_debug_info = True
    from docetl.runner import DSLRunner

    return DSLRunner


# -- the execute function ----------------------------------------------------------------------------
def execute(store: Store, run_id: str, *, now: Callable[[], datetime] | None = None,
            isolated: bool = False) -> dict[str, Any]:
    """Run a claimed (`running`) run to its end and record the outcome; returns the finished run.
    `isolated` says this process exists for this run alone (the service's child)."""
    run = _trusted_run(store, run_id)
    paths = runs.run_paths(store.config.namespace_dir(run["namespace"]), run_id)
    with open(paths["log"], "a", encoding="utf-8", buffering=1) as log:
        _log(log, f"run {run_id} of pipeline {run['pipeline_name']!r} started by {run['created_by']}")
        try:
            outcome = _execute(store, run, paths, log, isolated)
        except RunFailed as exc:
            _log(log, f"run failed ({exc.category.value}): {exc.key} {exc.params}")
            return _finish_failed(store, run, paths, exc, now)
        except BaseException as exc:  # anything unexpected: recorded, never a run stuck `running`
            _log(log, "unexpected error:\n" + traceback.format_exc())
            failed = _classify(exc, Counter())
            _finish_failed(store, run, paths, failed, now)
            if not isinstance(exc, Exception):
                raise
            return runs.get_trusted(store, run_id)
    return _finish_completed(store, run, paths, outcome, now)


def _execute(store: Store, run: dict[str, Any], paths: dict[str, Path], log: TextIO,
             isolated: bool) -> dict[str, Any]:
    from core import pipelines

    yaml_text = paths["config"].read_text(encoding="utf-8")
    try:
        runs.check_code_policy(store, yaml_text)
    except WorkbenchError as exc:
        raise RunFailed(ErrorCategory.CONFIG, exc.key, **exc.params) from exc
    input_path, input_rows = _input(store, run, paths)
    config = pipelines.parse_yaml(yaml_text)
    uses_llm = any(op["llm"] for op in pipelines.summary(yaml_text))
    config = pipelines.bind(config, input_path=str(input_path), output_path=str(paths["output"]),
                            intermediate_dir=str(paths["intermediates"]))
    _own_files_only(config, store.config.namespace_dir(run["namespace"]))
    config.setdefault("default_model", store.config["llm_default_model"])
    if store.config["llm_api_base"] and "default_lm_api_base" not in config:
        config["default_lm_api_base"] = store.config["llm_api_base"]
    write_progress(paths["progress"], _starting(config))  # the page shows the operations while docetl loads
    if isolated and not uses_llm:  # no model is called: no provider key for the pipeline's code to read
        for name in [k for k in os.environ if k.endswith(_SECRET_SUFFIXES)]:
            del os.environ[name]
    os.environ.update(docetl_environment(store, with_keys=uses_llm))
    _log(log, f"input: {input_rows} rows; importing docetl")
    DSLRunner = import_docetl()
    limiter = llm_limiter.LLMLimiter.from_config(store.config)
    if isolated:  # a process of its own: hold slots only while a request is really on the wire
        llm_limiter.install_http(limiter)
    else:
        llm_limiter.install(limiter)
    tally = _ErrorTally.install()
    return _run_docetl(DSLRunner, config, paths, log, tally, input_rows, int(store.config["run_max_threads"]))


def _run_docetl(DSLRunner: Any, config: dict[str, Any], paths: dict[str, Path], log: TextIO,
                tally: "_ErrorTally", input_rows: int, run_threads: int) -> dict[str, Any]:
    from rich.console import Console
    from docetl.progress.tracker import ProgressTracker, set_active_tracker

    console = Console(file=log, force_terminal=False, color_system=None, width=120)
    try:
        runner = DSLRunner(config, max_threads=int(run_threads), console=console)
    except Exception as exc:
        raise RunFailed(ErrorCategory.CONFIG, "run.error.config", detail=_short(exc)) from exc
    tracker = ProgressTracker(concurrency=runner.max_threads)
    runner.progress_tracker = tracker
    set_active_tracker(tracker)
    tracker.pipeline_start(runner.list_pipeline_operations())
    monitor = _Monitor(runner, tracker, paths)
    monitor.start()
    try:
        cost = runner.load_run_save()
    except BaseException as exc:
        monitor.stop()
        if monitor.cancelled:
            raise RunFailed(ErrorCategory.CANCELLED, "run.error.cancelled") from exc
        raise _classify(exc, tally.counts) from exc
    finally:
        monitor.stop()
        set_active_tracker(None)
    if monitor.cancelled:
        raise RunFailed(ErrorCategory.CANCELLED, "run.error.cancelled")
    usage = runner.total_token_usage
    output_rows = _count_rows(paths["output"])
    warnings = _dropped(tracker.snapshot().to_dict(), input_rows, output_rows, tally.counts)
    if input_rows and output_rows == 0 and tally.counts:
        raise _classify(None, tally.counts)
    return {"cost": float(cost or 0.0), "input_rows": input_rows, "output_rows": output_rows,
            "tokens_prompt": sum(u["prompt_tokens"] for u in usage.values()),
            "tokens_completion": sum(u["completion_tokens"] for u in usage.values()),
            "warnings": warnings, "output_path": str(paths["output"])}


# -- inputs ------------------------------------------------------------------------------------------
def _trusted_run(store: Store, run_id: str) -> dict[str, Any]:
    run = runs.get_trusted(store, run_id)
    if run["status"] != RunStatus.RUNNING.value:
        raise WorkbenchError("run.error.not_running", run=run_id, status=run["status"])
    return run


def _input(store: Store, run: dict[str, Any], paths: dict[str, Path]) -> tuple[Path, int]:
    """The run's input JSON: the dataset's normalized file, or its first `sample_rows` rows."""
    if not run["input_dataset_id"]:
        raise RunFailed(ErrorCategory.VALIDATION, "run.error.no_input")
    try:
        path = datasets.ready_path(store, run["input_dataset_id"], run["namespace"])
    except WorkbenchError as exc:
        raise RunFailed(ErrorCategory.VALIDATION, exc.key, **exc.params) from exc
    records = json.loads(path.read_text(encoding="utf-8"))
    if run["sample_rows"]:
        records = records[: int(run["sample_rows"])]
        path = paths["run_dir"] / "input.json"
        datasets.write_records(path, records)
    return path, len(records)


def _starting(config: dict[str, Any]) -> dict[str, Any]:
    """A first progress snapshot in docetl's shape, written before docetl is imported (seconds)."""
    types = {op.get("name"): op.get("type") for op in config.get("operations") or [] if isinstance(op, dict)}
    names = [(step.get("name"), op if isinstance(op, str) else next(iter(op), "?"))
             for step in (config.get("pipeline") or {}).get("steps") or [] for op in step.get("operations") or []]
    ops = [{"step": step, "name": f"{step}/{op}", "type": types.get(op), "status": "queued", "total": None,
            "completed": 0, "errors": 0, "out_count": None, "cost": 0.0} for step, op in names]
    return {"finished": False, "starting": True, "elapsed": 0.0, "total_cost": 0.0, "ops": ops}


def _own_files_only(config: dict[str, Any], namespace_dir: Path) -> None:
    """Every file a bound pipeline reads lies in the run's own namespace: a path typed into the YAML
    (another namespace, the platform store, /etc) is refused, never read."""
    home = namespace_dir.resolve()
    for name, dataset in (config.get("datasets") or {}).items():
        path = dataset.get("path") if isinstance(dataset, dict) else None
        if path and not Path(path).resolve().is_relative_to(home):
            raise RunFailed(ErrorCategory.VALIDATION, "run.error.foreign_path", dataset=str(name))


def _count_rows(path: Path) -> int:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return len(data) if isinstance(data, list) else 0


# -- outcome ---------------------------------------------------------------------------------------------
def _finish_completed(store: Store, run: dict[str, Any], paths: dict[str, Path], outcome: dict[str, Any],
                      now: Callable[[], datetime] | None) -> dict[str, Any]:
    if run["save_output_as"]:
        try:
            saved = datasets.register_generated(store, _owner(store, run), run["namespace"], run["save_output_as"],
                                                paths["output"], lineage=lineage(run))
            outcome["output_dataset_id"] = saved["id"]
        except Exception as exc:  # a finished run stays completed; the user can save its output later
            outcome["warnings"] = [*outcome["warnings"], {"key": "run.warning.not_saved",
                                                          "params": {"detail": str(exc)[:300]}}]
    _write_result(paths, {"status": "completed", **outcome})
    return runs.finish(store, run["id"], RunStatus.COMPLETED, now=now() if now else None, **outcome)


def lineage(run: dict[str, Any]) -> dict[str, Any]:
    """Where a generated dataset came from: the pipeline, the run, its output file and its input."""
    return {"pipeline_id": run["pipeline_id"], "pipeline": run["pipeline_name"], "run_id": run["id"],
            "output": run["output_path"], "input_dataset_id": run["input_dataset_id"]}


def save_output(store: Store, principal: Any, run_id: str, name: str) -> dict[str, Any]:
    """Save a completed run's output to the Data Center afterwards (the page's "save" button): only a
    completed run (a cancelled or failed run's partial output is never registered); the run then
    points at the dataset it produced."""
    run = runs.get(store, principal, run_id)
    if run["status"] != RunStatus.COMPLETED.value:
        raise ValidationError("run.error.not_completed", status=run["status"])
    saved = datasets.register_generated(store, principal, run["namespace"], name, Path(run["output_path"]),
                                        lineage=lineage(run))
    runs.set_output_dataset(store, run_id, saved["id"])
    return saved


def _finish_failed(store: Store, run: dict[str, Any], paths: dict[str, Path], failed: RunFailed,
                   now: Callable[[], datetime] | None) -> dict[str, Any]:
    status = RunStatus.CANCELLED if failed.category == ErrorCategory.CANCELLED else RunStatus.FAILED
    _write_result(paths, {"status": status.value, "category": failed.category.value})
    try:
        return runs.finish(store, run["id"], status, error={"key": failed.key, "params": failed.params},
                           error_category=failed.category, now=now() if now else None)
    except runs.RunConflict:  # the supervisor already recorded it (e.g. killed after a cancel)
        return runs.get_trusted(store, run["id"])


def _owner(store: Store, run: dict[str, Any]) -> Any:
    """The run's creator as they are now: saving the output is checked against today's rights."""
    from core import auth
    from core.principal import OPERATOR_USERNAME, Principal

    if run["created_by"] == OPERATOR_USERNAME:
        return Principal.operator()
    with store.read() as tx:
        found = tx.execute("SELECT * FROM users WHERE username = ? AND active", [run["created_by"]])
        if not found:
            return Principal.anonymous()
        return auth.principal_for(tx, found[0])


def _write_result(paths: dict[str, Path], result: dict[str, Any]) -> None:
    tmp = paths["result"].with_suffix(".part")
    tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
    tmp.replace(paths["result"])


def _dropped(snapshot: dict[str, Any], input_rows: int, output_rows: int, errors: Counter) -> list[dict[str, Any]]:
    """Warnings a user must see: documents docetl dropped after failed retries, LLM errors along the way."""
    warnings: list[dict[str, Any]] = []
    for op in snapshot.get("ops", []):
        if op.get("errors"):
            warnings.append({"key": "run.warning.op_errors", "params": {"op": op["name"], "n": op["errors"]}})
        total, out = op.get("total"), op.get("out_count")
        if op.get("type") in ("map", "parallel_map", "extract") and total and out is not None and out < total:
            warnings.append({"key": "run.warning.dropped", "params": {"op": op["name"], "n": total - out,
                                                                      "total": total}})
    if errors:
        warnings.append({"key": "run.warning.llm_errors", "params": {
            "summary": ", ".join(f"{name} × {n}" for name, n in errors.most_common(5))}})
    return warnings


_CATEGORY_BY_ERROR = {
    "RateLimitError": ErrorCategory.RATE_LIMIT, "Timeout": ErrorCategory.TIMEOUT,
    "APITimeoutError": ErrorCategory.TIMEOUT, "APIConnectionError": ErrorCategory.NETWORK,
    "InternalServerError": ErrorCategory.SERVER_ERROR, "ServiceUnavailableError": ErrorCategory.SERVER_ERROR,
    "BadGatewayError": ErrorCategory.SERVER_ERROR, "APIError": ErrorCategory.SERVER_ERROR,
    "AuthenticationError": ErrorCategory.CONFIG, "NotFoundError": ErrorCategory.CONFIG,
    "BadRequestError": ErrorCategory.CONFIG, "PermissionDeniedError": ErrorCategory.CONFIG,
}


def _classify(exc: BaseException | None, llm_errors: Counter) -> RunFailed:
    """The error category the retry policy uses: the exception's own kind, else the LLM errors seen."""
    import asyncio

    if isinstance(exc, RunFailed):
        return exc
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return RunFailed(ErrorCategory.CANCELLED, "run.error.cancelled")
    if exc is not None:
        for cls in type(exc).__mro__:
            if cls.__name__ in _CATEGORY_BY_ERROR:
                return RunFailed(_CATEGORY_BY_ERROR[cls.__name__], "run.error.llm", detail=_short(exc))
        if _from_user_code(exc):
            return RunFailed(ErrorCategory.USER_CODE, "run.error.user_code", detail=_short(exc))
        if type(exc).__name__ in ("ValidationError", "ValueError", "KeyError", "TypeError") and not llm_errors:
            return RunFailed(ErrorCategory.CONFIG, "run.error.config", detail=_short(exc))
    if llm_errors:
        name = llm_errors.most_common(1)[0][0]
        return RunFailed(_CATEGORY_BY_ERROR.get(name, ErrorCategory.SERVER_ERROR), "run.error.llm_all_failed",
                         detail=name)
    return RunFailed(ErrorCategory.USER_CODE if exc is not None else ErrorCategory.SERVER_ERROR,
                     "run.error.unexpected", detail=_short(exc) if exc is not None else "")


def _from_user_code(exc: BaseException) -> bool:
    """True when the traceback passes through code the pipeline defined (code_* operations are
    compiled from strings, so their frames have no real file)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<"):
            return True
        tb = tb.tb_next
    return False


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _log(log: TextIO, message: str) -> None:
    log.write(f"[{clock.utcnow().isoformat(timespec='seconds')}] {message}\n")


# -- live progress and cancellation ----------------------------------------------------------------------
class _Monitor(threading.Thread):
    """Every PROGRESS_INTERVAL: write docetl's progress snapshot atomically and honour the cancel flag."""

    def __init__(self, runner: Any, tracker: Any, paths: dict[str, Path]) -> None:
        super().__init__(name="wb-progress", daemon=True)
        self.runner, self.tracker, self.paths = runner, tracker, paths
        self.cancelled = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(PROGRESS_INTERVAL):
            self.tick()

    def tick(self) -> None:
        if self.paths["cancel"].exists() and not self.cancelled:
            self.cancelled = True
            self.runner.is_cancelled = True
        try:
            snapshot = self.tracker.snapshot().to_dict()
            write_progress(self.paths["progress"], snapshot)
        except (RuntimeError, OSError):  # a dict changed size under us, a full disk: the next tick will do
            return

    def stop(self) -> None:
        """Stop the thread, then take one last snapshot (never two writers of the progress file)."""
        if not self._halt.is_set():
            self._halt.set()
            if self.is_alive() and threading.current_thread() is not self:
                self.join()
            self.tick()


def write_progress(path: Path, snapshot: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
    tmp.write_text(json.dumps(snapshot, default=str), encoding="utf-8")
    tmp.replace(path)


class _ErrorTally:
    """Counts the exceptions docetl's LLM calls raise (docetl retries, then drops the document, so the
    run itself may not fail): the run's error category and warnings come from here."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    @classmethod
    def install(cls) -> "_ErrorTally":
        """Wrap docetl's (already limited) `completion` once per process; later runs only swap the tally."""
        from docetl.operations.utils import api

        tally = cls()
        holder = getattr(api, "_wb_tally_holder", None)
        if holder is not None:
            holder[0] = tally
            return tally
        holder = api._wb_tally_holder = [tally]
        original = api.completion

        def completion(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except Exception as exc:
                active = holder[0]
                with active._lock:
                    active.counts[type(exc).__name__] += 1
                raise

        # the limiter's marker: its hook sees docetl's call site as already wrapped (the limiter is inside)
        completion.__llm_limiter_original__ = getattr(original, "__llm_limiter_original__", original)  # type: ignore[attr-defined]
        api.completion = completion
        return tally


# -- a run in its own process ----------------------------------------------------------------------------
def start_child(store: Store, run: dict[str, Any]) -> subprocess.Popen:
    """`python -m core.execute RUN_ID` for a claimed run; its output goes to the run log."""
    env = {**os.environ, "DOCETL_HOME_DIR": str(store.config.home), "PYTHONPATH": _ROOT}
    log = open(run["log_path"], "ab")
    try:
        # cwd is the run's folder: docetl calls load_dotenv(), which must not find a stray .env elsewhere
        return subprocess.Popen([sys.executable, "-m", "core.execute", run["id"]], cwd=run["run_dir"], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent())
    finally:
        log.close()


def _die_with_parent() -> Callable[[], None]:
    """What the child runs before exec: SIGKILL when the parent (the service) dies (Linux prctl), and
    exit at once if it already has. Everything is looked up here, in the parent: importing in a forked
    child of a threaded process can deadlock."""
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        prctl = None
    parent = os.getpid()

    def in_child() -> None:
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def supervise(store: Store, run_id: str, child: subprocess.Popen, *, cancel_grace: float,
              cancel_seen: dict[str, float], now: datetime | None = None, timeout_minutes: float = 0) -> bool:
    """One look at a child: kill it when a cancel was ignored for `cancel_grace` seconds or the run
    outlived `timeout_minutes` (0: no limit; docetl retries a permanent 429 forever), and record an
    end the child could not record itself. True when the child is gone."""
    code = child.poll()
    if code is None:
        if timeout_minutes and _overdue(store, run_id, timeout_minutes, now):
            _kill(child)
            try:
                runs.finish(store, run_id, RunStatus.FAILED, error_category=ErrorCategory.TIMEOUT, now=now,
                            error={"key": "run.error.run_timeout", "params": {"minutes": f"{timeout_minutes:g}"}})
            except runs.RunConflict:
                pass
            cancel_seen.pop(run_id, None)
            return True
        if runs.cancel_requested(store, run_id):
            first = cancel_seen.setdefault(run_id, _time.monotonic())
            if _time.monotonic() - first >= cancel_grace:
                _kill(child)
                _finish_lost(store, run_id, cancelled=True, now=now)
                return True
        return False
    _finish_lost(store, run_id, cancelled=runs.cancel_requested(store, run_id), now=now)
    cancel_seen.pop(run_id, None)
    return True


def _overdue(store: Store, run_id: str, minutes: float, now: datetime | None) -> bool:
    started = runs.get_trusted(store, run_id)["started_at"]
    return started is not None and (clock.resolve(now) - started).total_seconds() > minutes * 60


def stop_child(store: Store, run_id: str, child: subprocess.Popen) -> None:
    """The service is stopping: end the child and record its run as failed/worker_lost (retryable,
    unlike a user's cancel), never left running."""
    _kill(child)
    _finish_lost(store, run_id, cancelled=runs.cancel_requested(store, run_id), now=None)


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait()


def record_lost(store: Store, run_id: str) -> None:
    """A running run whose process is gone or never started: recorded, never left running."""
    _finish_lost(store, run_id, cancelled=runs.cancel_requested(store, run_id), now=None)


def _finish_lost(store: Store, run_id: str, *, cancelled: bool, now: datetime | None) -> None:
    """The child is gone; when it did not record an end itself, record one now."""
    run = runs.get_trusted(store, run_id)
    if run["status"] != RunStatus.RUNNING.value:
        return
    try:
        result = json.loads((Path(run["run_dir"]) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {}
    try:
        if result.get("status") == RunStatus.COMPLETED.value:  # it finished; only recording it failed
            figures = {k: result[k] for k in ("cost", "tokens_prompt", "tokens_completion", "input_rows",
                                              "output_rows", "output_path", "warnings", "output_dataset_id")
                       if k in result}
            runs.finish(store, run_id, RunStatus.COMPLETED, now=now, **figures)
        elif cancelled:
            runs.finish(store, run_id, RunStatus.CANCELLED, error_category=ErrorCategory.CANCELLED,
                        error={"key": "run.error.cancelled", "params": {}}, now=now)
        else:
            runs.finish(store, run_id, RunStatus.FAILED, error_category=ErrorCategory.WORKER_LOST,
                        error={"key": "run.error.crashed", "params": {}}, now=now)
    except runs.RunConflict:
        pass


def main(argv: list[str] | None = None) -> int:
    """`python -m core.execute RUN_ID`: the child process of one run."""
    from core.config import Config
    from core.settings import open_store

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.execute RUN_ID", file=sys.stderr)
        return 2
    store = open_store(Config.from_env())
    run = execute(store, args[0], isolated=True)
    return 0 if run["status"] in (RunStatus.COMPLETED.value, RunStatus.CANCELLED.value) else 1


if __name__ == "__main__":
    sys.exit(main())
