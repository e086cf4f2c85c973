"""One run on a page (Execute and Runs): live while queued or running, its results once finished.

Reads through core, acts through core (cancel, save the output to the Data Center); core checks rights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

import shell
from core import datasets, execute, runs, service_control
from core.errors import WorkbenchError
from core.permissions import Action, can
from shell import T

PAGE_SIZE = 50
LOG_BYTES = 64_000  # the log shown is its last 64 KB: a page never loads a whole log
LIVE_LINES = 40  # while a run is active: its last lines
ACTIVE = frozenset({runs.RunStatus.QUEUED.value, runs.RunStatus.RUNNING.value})


@st.cache_resource(max_entries=4, show_spinner=False)  # read-only here: no copy per run
def _load(path: str, mtime: float) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def records(path: str | None) -> list[dict[str, Any]] | None:
    """A JSON list of records (a dataset or a run's output), read once per file version; None if absent."""
    file = Path(path) if path else None
    if file is None or not file.is_file():
        return None
    return _load(str(file), file.stat().st_mtime)


def service_notice(ctx: shell.Ctx) -> None:
    """Queued runs wait for the scheduler service: say so (a notice, not an error) when none is alive."""
    if not service_control.status(ctx.config)["alive"]:
        st.info(T("run.service_down"), icon=":material/schedule:")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def label(run: dict[str, Any], status: bool = True) -> str:
    """How a run is named: when, which pipeline, (its status,) a short id. Pickers leave the status out,
    so a choice survives the run finishing."""
    parts = [shell.fmt_time(run["queued_at"]), run["pipeline_name"], run["id"][:8]]
    if status:
        parts.insert(2, T(f"run.status.{run['status']}"))
    return " · ".join(parts)


def show(ctx: shell.Ctx, run: dict[str, Any], key: str) -> None:
    """The run as it is now: refreshing itself every second while active, static once finished."""
    if run["status"] in ACTIVE:
        st.fragment(_live, run_every=1.0)(ctx, run["id"], key)
    else:
        _finished(ctx, run, key)


def _live(ctx: shell.Ctx, run_id: str, key: str) -> None:
    """The same few containers on every tick (the page does not flicker as the status moves on). A
    tick that fails (the store busy for a moment) says so in words; the next tick tries again."""
    try:
        _live_tick(ctx, run_id, key)
    except WorkbenchError as exc:
        shell.show_error(exc)
    except OSError as exc:
        st.warning(T("run.refresh_failed", detail=str(exc)[:200]))


def _live_tick(ctx: shell.Ctx, run_id: str, key: str) -> None:
    run = runs.get(ctx.store, ctx.principal, run_id)
    if run["status"] not in ACTIVE:
        shell.rerun_unprompted()  # it just finished: the whole page once more, then it stays still
    with st.container():
        st.markdown(f"**{T('run.status.' + run['status'])}** · {label(run, status=False)}")
        if run["status"] == runs.RunStatus.QUEUED.value:
            st.caption(T("run.queued_since", time=shell.fmt_time(run["queued_at"])))
            service_notice(ctx)
        elif run["cancel_requested"]:
            st.warning(T("run.cancel_requested"))
        else:
            st.caption(T("run.running_since", time=shell.fmt_time(run["started_at"])))
    with st.container():
        progress(run)
    with st.container():
        if can(ctx.principal, Action.CANCEL_RUN, run["namespace"]) and not run["cancel_requested"]:
            if st.button(T("run.cancel"), key=f"{key}_cancel_{run_id}", icon=":material/stop_circle:"):
                try:
                    runs.cancel(ctx.store, ctx.principal, run_id)
                    st.rerun()
                except WorkbenchError as exc:
                    shell.show_error(exc)
    tail = runs.log_tail(run, LOG_BYTES).splitlines()[-LIVE_LINES:]  # the newest lines, without scrolling
    st.code("\n".join(tail) or T("run.no_log"), language=None)


def progress(run: dict[str, Any]) -> None:
    """One bar per operation: done/total documents, errors and cost so far (docetl's tracker)."""
    snap = runs.progress(run)
    if not snap:
        st.caption(T("run.no_progress"))
        return
    for op in snap.get("ops") or []:
        total, done = op.get("total"), op.get("completed") or 0
        share = min(1.0, done / total) if total else (1.0 if op.get("status") == "done" else 0.0)
        st.progress(share, text=T("run.op_progress", name=op.get("name", ""), type=op.get("type") or op.get("op_type"),
                                  done=done, total="?" if total is None else total, errors=op.get("errors") or 0,
                                  cost=f"{op.get('cost') or 0:.4f}"))
    st.caption(T("run.progress_total", elapsed=duration(snap.get("elapsed")), cost=f"{snap.get('total_cost') or 0:.4f}"))


def _finished(ctx: shell.Ctx, run: dict[str, Any], key: str) -> None:
    status, message = run["status"], runs.error_message(run["error"], ctx.lang)
    if status == runs.RunStatus.COMPLETED.value:
        st.success(T("run.completed", rows_in=run["input_rows"] or 0, rows_out=run["output_rows"] or 0,
                     duration=duration(run["duration_seconds"]), cost=f"{run['cost'] or 0:.4f}"))
    elif status == runs.RunStatus.FAILED.value:
        category = T(f"run.category.{run['error_category']}") if run["error_category"] else "—"
        st.error(T("run.failed", category=category, message=message or "—"))
    else:
        st.warning(T(f"run.status.{status}") + (f": {message}" if message else ""))
    for warning in run["warnings"]:
        st.warning(T(warning["key"], **(warning.get("params") or {})), icon=":material/warning:")
    if status == runs.RunStatus.COMPLETED.value:
        _output(ctx, run, key)
    with st.expander(T("run.progress")):
        progress(run)
    with st.expander(T("run.log")):
        st.code(runs.log_tail(run, LOG_BYTES) or T("run.no_log"), language=None, height=400)


def _output(ctx: shell.Ctx, run: dict[str, Any], key: str) -> None:
    """The output, 50 rows a page; downloads; saving it to the Data Center (editors and up)."""
    rows = records(run["output_path"])
    if rows is None:
        st.info(T("run.no_output"))
        return
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = int(st.number_input(T("run.page", pages=pages, rows=len(rows)), min_value=1, max_value=pages, value=1,
                               step=1, key=f"{key}_page_{run['id']}"))
    st.dataframe(rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], hide_index=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    stem = f"{run['pipeline_name']}-{run['id'][:8]}"
    one, two, three = st.columns(3)
    one.download_button(T("datacenter.download_json"), lambda: Path(run["output_path"]).read_bytes(), f"{stem}.json",
                        "application/json", key=f"{key}_dl_json")
    two.download_button(T("datacenter.download_csv"), lambda: datasets.export(rows, columns, "csv"), f"{stem}.csv",
                        "text/csv", key=f"{key}_dl_csv")
    three.download_button(T("datacenter.download_xlsx"), lambda: datasets.export(rows, columns, "xlsx"), f"{stem}.xlsx",
                          "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", key=f"{key}_dl_xlsx")
    if not can(ctx.principal, Action.UPLOAD_DATASET, run["namespace"]):
        return
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    name = left.text_input(T("run.save_name"), value=f"{run['pipeline_name']}_output", key=f"{key}_save_name_{run['id']}")
    if right.button(T("run.save_to_dc"), key=f"{key}_save_{run['id']}", icon=":material/database:"):
        try:
            saved = execute.save_output(ctx.store, ctx.principal, run["id"], name)
            st.success(T("run.saved", name=saved["name"], rows=saved["row_count"]))
        except WorkbenchError as exc:
            shell.show_error(exc)


def metadata(ctx: shell.Ctx, run: dict[str, Any], known: list[dict[str, Any]]) -> None:
    """Who, when, how long, how much, what went in and what came out (lineage), as a two-column table."""
    names = {d["id"]: d["name"] for d in known}
    made = [d["name"] for d in known if (d["lineage"] or {}).get("run_id") == run["id"]]
    if run["output_dataset_id"] and run["output_dataset_id"] not in {d["id"] for d in known}:
        made.append(T("run.deleted_dataset"))
    tokens = (run["tokens_prompt"] or 0, run["tokens_completion"] or 0)
    facts = [("run.field.status", T(f"run.status.{run['status']}")), ("run.field.pipeline", run["pipeline_name"]),
             ("run.field.trigger", T(f"run.trigger.{run['trigger']}")), ("run.field.by", run["created_by"] or "—"),
             ("run.field.queued", shell.fmt_time(run["queued_at"])), ("run.field.started", shell.fmt_time(run["started_at"])),
             ("run.field.finished", shell.fmt_time(run["finished_at"])), ("run.field.duration", duration(run["duration_seconds"])),
             ("run.field.cost", f"${run['cost'] or 0:.4f}"), ("run.field.tokens", T("run.tokens", prompt=tokens[0],
                                                                                   completion=tokens[1])),
             ("run.field.rows", f"{run['input_rows'] if run['input_rows'] is not None else '—'} → "
                                f"{run['output_rows'] if run['output_rows'] is not None else '—'}"),
             ("run.field.sample", str(run["sample_rows"] or "—")), ("run.field.attempt", str(run["attempt"])),
             ("run.field.input", names.get(run["input_dataset_id"], run["input_dataset_id"] or "—")),
             ("run.field.output", ", ".join(made) or "—"), ("run.field.worker", run["worker"] or "—"),
             ("run.field.category", T(f"run.category.{run['error_category']}") if run["error_category"] else "—"),
             ("run.field.error", runs.error_message(run["error"], ctx.lang) or "—"),
             ("run.field.id", run["id"])]
    st.dataframe([{T("run.detail.field"): T(k), T("run.detail.value"): str(v)} for k, v in facts], hide_index=True,
                 width="stretch", height=35 * (len(facts) + 1) + 3)
