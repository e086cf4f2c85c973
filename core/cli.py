"""`python -m core`: the operator's command line.

It acts as the local operator (who has the files anyway), audited as such; with `--user NAME` (password
from DOCETL_WB_PASSWORD) it acts with that user's permissions. Errors: exit 1 and one clear line (for the
dataset, pipeline, run and runs commands with `--json`: one `{"error": ...}` line on stdout).

`run` exits 0 only when the run completed, 1 when it failed or was cancelled, 2 for usage mistakes.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, NoReturn, Sequence, TextIO

import duckdb

from core import audit, auth, datasets, execute, namespaces, pipelines, readers, runs, service_control, settings, users
from core.config import Config
from core.errors import PermissionDenied, ValidationError, WorkbenchError
from core.principal import Principal
from core.settings import open_store
from core.store import Store


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    raise WorkbenchError("cli.error.password_stdin")


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False, default=_json_default))
    elif isinstance(data, list):
        for row in data:
            print("\t".join("" if v is None else _plain(v) for v in row.values()))
    elif isinstance(data, dict):
        for k, v in data.items():
            print(f"{k}: {v}")
    elif data is not None:
        print(data)


def cmd_init(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.count(store)  # opens, creates and migrates the store
    return {"home": str(store.config.home), "store": str(store.path), "users": users.count(store)}


def cmd_user_add(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    password = _read_password(args)
    if who.is_operator and auth.needs_bootstrap(store) and args.admin:
        return auth.create_first_admin(store, args.name, password, email=args.email, display_name=args.display_name,
                                       client=who)
    return users.create(store, who, args.name, password, email=args.email, display_name=args.display_name,
                        is_platform_admin=args.admin)


def cmd_user_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{k: r[k] for k in ("username", "display_name", "email", "active", "is_platform_admin")}
            for r in users.list_all(store, who)]


def cmd_user_disable(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.set_active(store, who, args.name, False)
    return f"disabled {args.name}"


def cmd_user_enable(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.set_active(store, who, args.name, True)
    return f"enabled {args.name}"


def cmd_user_reset(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    temporary = users.reset_password(store, who, args.name)
    return {"username": args.name, "temporary_password": temporary} if args.json else temporary


def cmd_user_unlock(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    auth.unlock(store, who, args.name)
    return f"unlocked {args.name}"


def cmd_user_unlock_address(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    auth.unlock_address(store, who, args.address)
    return f"unlocked address {args.address}"


def cmd_ns_create(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    row = namespaces.create(store, who, args.name, args.description or "")
    return {"name": row["name"], "path": str(store.config.namespace_dir(row["name"]))}


def cmd_ns_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{"name": r["name"], "role": r["role"], "description": r["description"]}
            for r in namespaces.list_visible(store, who)]


def cmd_member_add(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    namespaces.add_member(store, who, args.namespace, args.member, args.role)
    return f"{args.member} is {args.role} in {args.namespace}"


def cmd_member_remove(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    namespaces.remove_member(store, who, args.namespace, args.member)
    return f"removed {args.member} from {args.namespace}"


def cmd_audit_export(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    rows = audit.query(store, who, action=args.action, actor=args.actor, namespace=args.namespace, limit=args.limit)
    sys.stdout.write(audit.export(rows, args.format))
    return None


class _UsageError(Exception):
    """A usage mistake found by argparse; `main` says it in the command's error format."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are errors too: one line, exit 2 (subcommand parsers inherit this)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{_one_line(message)} (see: {self.prog} --help)")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def cmd_settings_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{"key": r["key"], "effective": r["effective"], "override": r["override"], "env": r["env"]}
            for r in settings.describe(store, who, store.config)]


def cmd_settings_set(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return f"{args.key} = {settings.update(store, who, args.key, args.value)}"


def cmd_settings_reset(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    """The way back from an override that locked people out: the environment or default applies again."""
    settings.reset(store, who, args.key)
    return f"{args.key} reset"


def _ingest_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("sheet", args.sheet), ("header_row", args.header_row), ("start_row", args.start_row),
                              ("end_row", args.end_row)) if v is not None}


def cmd_dataset_preview(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return readers.preview(args.path, limit=args.limit, max_mb=int(store.config["dataset_max_mb"]),
                            **_ingest_config(args))


def cmd_dataset_import(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    """Upload a local file into a namespace and wait for its import."""
    path = Path(args.path)
    made = datasets.create_upload(store, who, args.namespace, path.name, path.read_bytes(), name=args.name,
                                  config=_ingest_config(args))
    done = datasets.ingest(store, made["id"]) or datasets.get(store, who, made["id"])
    if done["error"]:  # registered as failed; the command itself fails with the reason
        raise ValidationError(done["error"]["key"], **done["error"]["params"])
    return {"id": done["id"], "name": done["name"], "status": done["ingest_status"], "row_count": done["row_count"],
            "columns": done["schema"] or [], "path": done["path"], "error": None}


def cmd_dataset_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{k: r[k] for k in ("id", "name", "source", "ingest_status", "row_count", "updated_at")}
            for r in datasets.list_datasets(store, who, args.namespace)]


def cmd_pipeline_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{k: r[k] for k in PIPELINE_COLUMNS} for r in pipelines.list_pipelines(store, who, args.namespace)]


PIPELINE_COLUMNS = ("id", "name", "description", "state", "input_dataset_id", "last_run_status", "last_run_at",
                    "updated_at")


# -- runs ------------------------------------------------------------------------------------------------
class Report(NamedTuple):
    """What a command prints (`data` as JSON, else `text` or aligned `key: value` lines) and its exit status."""
    data: Any
    code: int = 0
    text: str | None = None


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The contract of `run --wait` (and `Workbench.run`): the error in English words, null when none."""
    completed = run["status"] == runs.RunStatus.COMPLETED.value
    return {"run_id": run["id"], "status": run["status"], "cost": run["cost"],
            "output_path": run["output_path"] if completed else None, "output_rows": run["output_rows"],
            "error": runs.error_message(run["error"], "en") or None}


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """One line of `runs list` (and a row of `Workbench.runs()`)."""
    return {"id": run["id"], "namespace": run["namespace"], "pipeline": run["pipeline_name"],
            "status": run["status"], "trigger": run["trigger"], "created_by": run["created_by"],
            "queued_at": run["queued_at"], "started_at": run["started_at"], "finished_at": run["finished_at"],
            "duration_seconds": run["duration_seconds"], "cost": run["cost"], "input_rows": run["input_rows"],
            "output_rows": run["output_rows"], "error": runs.error_message(run["error"], "en") or None}


RUN_ROW_COLUMNS = tuple(run_row({k: None for k in ("id", "namespace", "pipeline_name", "status", "trigger",
                                                    "created_by", "queued_at", "started_at", "finished_at",
                                                    "duration_seconds", "cost", "input_rows", "output_rows",
                                                    "error")}))


def run_details(run: dict[str, Any]) -> dict[str, Any]:
    """`runs show` (and `Workbench.run_info`): the record, its error and warnings in words, its progress."""
    from core.i18n import t

    keys = ("namespace", "pipeline_id", "status", "trigger", "created_by", "deployment_id", "attempt", "retry_of",
            "input_dataset_id", "sample_rows", "save_output_as", "output_dataset_id", "queued_at", "started_at",
            "finished_at", "duration_seconds", "cost", "tokens_prompt", "tokens_completion", "input_rows",
            "output_rows", "output_path", "log_path", "cancel_requested", "error_category")
    out = {"run_id": run["id"], "pipeline": run["pipeline_name"], **{k: run.get(k) for k in keys}}
    out["error"] = runs.error_message(run["error"], "en") or None
    out["warnings"] = [t(w["key"], "en", **(w.get("params") or {})) if isinstance(w, dict) and w.get("key")
                       else str(w) for w in run["warnings"] or []]
    out["progress"] = runs.progress(run)
    return out


def _aligned(data: dict[str, Any]) -> str:
    width = max((len(k) for k in data), default=0) + 1
    return "\n".join(f"{k + ':':<{width}} {_plain(v)}" for k, v in data.items())


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def progress_text(status: str, snapshot: dict[str, Any] | None) -> str:
    """One line: the run's status and completed/total per operation (docetl's progress snapshot)."""
    if not snapshot or not snapshot.get("ops"):
        return f"{status} ..."
    parts = []
    for op in snapshot["ops"]:
        total = op.get("total")
        parts.append(f"{op.get('name')} {op.get('completed') or 0}/{'?' if total is None else total}")
    return f"{status}: " + " | ".join(parts)


class _ProgressLine:
    """A line on the terminal's stderr, rewritten in place while a run goes on."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.width, self.started = stream, 0, time.monotonic()

    def show(self, run: dict[str, Any]) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        elapsed = f"[{time.monotonic() - self.started:.0f}s] "
        text = (elapsed + progress_text(run["status"], runs.progress(run)))[:max(10, columns)]
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


@contextmanager
def _output_to_log(log_path: str) -> Iterator[TextIO]:
    """While a run executes here, whatever docetl and litellm print (some of it escapes the run's own
    console) goes to the run log, so stdout carries only the result; yields the terminal's stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", encoding="utf-8", errors="replace")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.close()


def run_in_process(store: Store, who: Principal, run: dict[str, Any], *, show_progress: bool = False,
                   quiet: bool = True) -> dict[str, Any]:
    """`execute.run_here` for a just-queued run, its stray output in the run log (`quiet`), with a
    progress line on the terminal when asked. Should a scheduler service claim the run first (it polls
    the queue), the run is followed there instead."""
    try:
        return _run_here(store, who, run, show_progress, quiet)
    except WorkbenchError as exc:
        if exc.key != "run.error.not_running":
            raise
    print(f"note: the scheduler service took run {run['id']} first; waiting for it there", file=sys.stderr)
    return execute.wait(store, who, run["id"])


def _run_here(store: Store, who: Principal, run: dict[str, Any], show_progress: bool,
              quiet: bool) -> dict[str, Any]:
    if not quiet:
        return execute.run_here(store, who, run["id"])
    with _output_to_log(run["log_path"]) as terminal:
        line = _ProgressLine(terminal) if show_progress else None
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                line.show({**run, "status": "running"})

        ticker = threading.Thread(target=tick, name="wb-cli-progress", daemon=True) if line else None
        if ticker:
            ticker.start()
        try:
            return execute.run_here(store, who, run["id"])
        finally:
            stop.set()
            if ticker:
                ticker.join()
                line.close()


def ensure_service(store: Store) -> str | None:
    """Queued runs need the scheduler service: start one when the setting allows and none is alive.
    Returns a note for the user (or None); never fails the caller."""
    config = store.config
    try:
        if not config["autostart_service"]:
            if not service_control.leader_alive(config):
                return ("no scheduler service is running for this home; the run waits in the queue until one"
                        " starts (python -m scheduler_service)")
            return None
        if service_control.ensure_running(config):
            return f"started the scheduler service (log: {service_control.service_log_path(config)})"
    except Exception as exc:  # the run is queued either way; say why the service did not start
        return f"could not start the scheduler service ({_one_line(exc)}); start it with python -m scheduler_service"
    return None


def _wait_for(store: Store, who: Principal, run_id: str, line: _ProgressLine | None) -> dict[str, Any]:
    try:
        while True:
            run = execute.wait(store, who, run_id, timeout=1.0 if line else None)
            if runs.RunStatus(run["status"]) in runs.TERMINAL:
                return run
            if line:
                line.show(run)
    except KeyboardInterrupt:
        if line:
            line.close()
        print(f"note: stopped waiting; run {run_id} goes on (stop it with: python -m core runs cancel {run_id})",
              file=sys.stderr)
        raise
    finally:
        if line:
            line.close()


def cmd_run(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    run = execute.submit(store, who, args.namespace, args.pipeline, input_dataset=args.input,
                         sample_rows=args.sample, save_output_as=args.save_output, trigger=runs.Trigger.CLI)
    show = not args.json and sys.stderr.isatty()
    if args.in_process:
        done = run_in_process(store, who, run, show_progress=show)
    else:
        note = ensure_service(store)
        if note:
            print(f"note: {note}", file=sys.stderr)
        if not args.wait:
            return Report({"run_id": run["id"], "status": run["status"]})
        done = _wait_for(store, who, run["id"], _ProgressLine(sys.stderr) if show else None)
    if not args.json:
        for warning in run_details(done)["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    return Report(run_summary(done), 0 if done["status"] == runs.RunStatus.COMPLETED.value else 1)


def cmd_runs_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    rows = [run_row(r) for r in runs.list_runs(store, who, args.namespace, status=args.status,
                                                 pipeline=args.pipeline, limit=args.limit, offset=args.offset)]
    if args.json:
        return Report(rows)
    keys = ("id", "namespace", "pipeline", "status", "trigger", "queued_at", "duration_seconds", "cost", "error")
    return Report(rows, text="\n".join("\t".join("" if r[k] is None else _plain(r[k]) for k in keys) for r in rows))


def cmd_runs_show(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    run = runs.get(store, who, args.run_id)
    details = run_details(run)
    if args.log:
        details["log"] = runs.log_tail(run)
    if args.json:
        return Report(details)
    plain = {k: v for k, v in details.items() if k not in ("warnings", "progress", "log")}
    lines = [_aligned(plain)]
    lines += [f"warning: {w}" for w in details["warnings"]]
    if details["progress"]:
        lines.append("progress: " + progress_text(run["status"], details["progress"]))
    if args.log:
        lines += ["--- log (end) ---", details["log"].rstrip("\n")]
    return Report(details, text="\n".join(lines))


def cmd_runs_cancel(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    before = runs.get(store, who, args.run_id)["status"]
    run = runs.cancel(store, who, args.run_id)
    data = {"run_id": run["id"], "status": run["status"], "cancel_requested": bool(run["cancel_requested"])}
    if before in {s.value for s in runs.TERMINAL}:
        text = f"run {run['id']} had already ended ({run['status']})"
    elif run["status"] == runs.RunStatus.CANCELLED.value:
        text = f"cancelled {run['id']}"
    else:
        text = f"cancel requested for {run['id']} ({run['status']}); it stops shortly"
    return Report(data, text=text)


def _positive(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def _not_negative(text: str) -> int:
    return _positive(text, least=0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="DocETL Workbench command line")
    parser.add_argument("--user", dest="acting_user", help="act as this user (password from DOCETL_WB_PASSWORD)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(group: Any, name: str, func: Callable, **kw: Any) -> argparse.ArgumentParser:
        p = group.add_parser(name, **kw)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return p

    add(sub, "init", cmd_init, help="create the home layout and the metadata store")
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    p = add(user, "add", cmd_user_add)
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--email")
    p.add_argument("--display-name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    add(user, "list", cmd_user_list)
    for name, func in (("disable", cmd_user_disable), ("enable", cmd_user_enable),
                       ("reset-password", cmd_user_reset), ("unlock", cmd_user_unlock)):
        add(user, name, func).add_argument("name")
    add(user, "unlock-address", cmd_user_unlock_address).add_argument("address")
    ns = sub.add_parser("namespace", help="manage namespaces").add_subparsers(dest="action", required=True)
    p = add(ns, "create", cmd_ns_create)
    p.add_argument("name")
    p.add_argument("--description")
    add(ns, "list", cmd_ns_list)
    member = sub.add_parser("member", help="manage memberships").add_subparsers(dest="action", required=True)
    p = add(member, "add", cmd_member_add)
    p.add_argument("namespace")
    p.add_argument("member", metavar="USER")
    p.add_argument("--role", required=True, choices=["namespace_admin", "editor", "viewer"])
    p = add(member, "remove", cmd_member_remove)
    p.add_argument("namespace")
    p.add_argument("member", metavar="USER")
    aud = sub.add_parser("audit", help="audit log").add_subparsers(dest="action", required=True)
    p = add(aud, "export", cmd_audit_export)
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--action", help="action, * as wildcard (e.g. auth.*)")
    p.add_argument("--actor")
    p.add_argument("--namespace")
    p.add_argument("--limit", type=int, default=100_000)
    data = sub.add_parser("dataset", help="Data Center").add_subparsers(dest="action", required=True)
    add(data, "list", cmd_dataset_list).add_argument("--namespace", required=True)
    for name, func in (("preview", cmd_dataset_preview), ("import", cmd_dataset_import)):
        p = add(data, name, func)
        p.add_argument("path")
        p.add_argument("--sheet")
        p.add_argument("--header-row", type=_positive)
        p.add_argument("--start-row", type=_positive)
        p.add_argument("--end-row", type=_positive)
        if name == "preview":
            p.add_argument("--limit", type=_not_negative, default=20)
        else:
            p.add_argument("--namespace", required=True)
            p.add_argument("--name")
    pipe = sub.add_parser("pipeline", help="pipelines").add_subparsers(dest="action", required=True)
    add(pipe, "list", cmd_pipeline_list).add_argument("--namespace", required=True)
    p = add(sub, "run", cmd_run, help="run a pipeline (queued for the scheduler service, or --in-process)")
    p.add_argument("pipeline", metavar="PIPELINE", help="pipeline name or id, or a YAML file (registered on the fly)")
    p.add_argument("--namespace", required=True)
    p.add_argument("--input", metavar="DATASET", help="Data Center dataset (name or id); default: the pipeline's")
    p.add_argument("--sample", type=_positive, metavar="N", help="run on the first N rows only")
    p.add_argument("--save-output", metavar="NAME", help="save the output as a Data Center dataset")
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 0 only when it completed")
    p.add_argument("--in-process", action="store_true", help="execute here, not in the service (implies --wait)")
    run_cmds = sub.add_parser("runs", help="runs").add_subparsers(dest="action", required=True)
    p = add(run_cmds, "list", cmd_runs_list)
    p.add_argument("--namespace")
    p.add_argument("--status", choices=[s.value for s in runs.RunStatus])
    p.add_argument("--pipeline", help="pipeline name or id")
    p.add_argument("--limit", type=_positive, default=50)
    p.add_argument("--offset", type=_not_negative, default=0, help="skip this many of the newest runs")
    p = add(run_cmds, "show", cmd_runs_show)
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--log", action="store_true", help="also print the end of the run's log")
    add(run_cmds, "cancel", cmd_runs_cancel).add_argument("run_id", metavar="RUN_ID")
    conf = sub.add_parser("settings", help="admin settings").add_subparsers(dest="action", required=True)
    add(conf, "list", cmd_settings_list)
    p = add(conf, "set", cmd_settings_set)
    p.add_argument("key")
    p.add_argument("value")
    add(conf, "reset", cmd_settings_reset).add_argument("key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:  # with --json, the JSON-contract commands answer in JSON here too
        command = next((a for a in argv if a in JSON_ERROR_COMMANDS), None)
        return _fail(argparse.Namespace(json="--json" in argv, command=command), str(exc), code=2)
    try:
        store = open_store(Config.from_env())
        who = Principal.operator()
        if args.acting_user:
            password = os.environ.get("DOCETL_WB_PASSWORD")
            if not password:
                raise WorkbenchError("cli.error.password_env")
            who = auth.authenticate(store, args.acting_user, password).principal
            if who.must_change_password:
                raise PermissionDenied("auth.error.must_change_password")
        result = args.func(store, who, args)
        if isinstance(result, Report):
            if args.json:
                print(json.dumps(result.data, ensure_ascii=False, default=_json_default))
            elif result.text is not None:
                if result.text:
                    print(result.text)
            else:
                print(_aligned(result.data))
            return result.code
        _print(result, args.json)
        return 0
    except WorkbenchError as exc:
        return _fail(args, _one_line(exc))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(args, f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})")
    except duckdb.Error as exc:  # e.g. a damaged or foreign database file
        return _fail(args, f"metadata store: {_one_line(exc)}")


JSON_ERROR_COMMANDS = frozenset({"dataset", "pipeline", "run", "runs"})


def _fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    """Exit `code` (1; 2 for usage) with one line: `{"error": ...}` on stdout for the JSON-contract
    commands with --json, else `error: ...` on stderr."""
    if args.json and args.command in JSON_ERROR_COMMANDS:
        print(json.dumps({"error": message}, ensure_ascii=False))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code
