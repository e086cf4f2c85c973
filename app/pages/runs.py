"""Runs: a namespace's run history with filters, and one run in detail (metadata, lineage, progress, log)."""
from __future__ import annotations

import streamlit as st

import run_view
import shell
from core import datasets, pipelines, runs
from shell import T

PAGE_SIZE = 100
ctx = shell.current()
st.title(T("history.title"))
ns = shell.namespace()
if not ns:
    st.info(T("execute.no_namespace"))
    st.stop()

names = {p["id"]: p["name"] for p in pipelines.list_pipelines(ctx.store, ctx.principal, ns)}
left, right = st.columns(2)
status = shell.choose(left, T("history.status"), {None: T("history.all"), **{
    s.value: T(f"run.status.{s.value}") for s in runs.RunStatus}}, "rh_status")
pipeline = shell.choose(right, T("history.pipeline"), {None: T("history.all"), **names}, "rh_pipeline")
total = runs.count_runs(ctx.store, ctx.principal, ns, status=status, pipeline=pipeline)
pages = max(1, -(-total // PAGE_SIZE))
page = 1
if pages > 1:  # older runs stay reachable, a page at a time
    page = int(st.number_input(T("datacenter.page", pages=pages), min_value=1, max_value=pages, value=1, step=1,
                               key=f"rh_page_{status}_{pipeline}_{pages}"))  # a filter change starts at page 1
    st.caption(T("history.range", first=(page - 1) * PAGE_SIZE + 1, last=min(page * PAGE_SIZE, total), total=total))
found = runs.list_runs(ctx.store, ctx.principal, ns, status=status, pipeline=pipeline, limit=PAGE_SIZE,
                       offset=(page - 1) * PAGE_SIZE)
st.dataframe([{T("run.field.queued"): shell.fmt_time(r["queued_at"]), T("run.field.pipeline"): r["pipeline_name"],
               T("run.field.status"): T(f"run.status.{r['status']}"), T("run.field.trigger"): T(f"run.trigger.{r['trigger']}"),
               T("run.field.by"): r["created_by"] or "—", T("run.field.duration"): run_view.duration(r["duration_seconds"]),
               T("run.field.rows"): f"{r['input_rows'] if r['input_rows'] is not None else '—'} → "
                                    f"{r['output_rows'] if r['output_rows'] is not None else '—'}",
               T("run.field.cost"): f"${r['cost'] or 0:.4f}", T("run.field.id"): r["id"][:8]} for r in found],
             hide_index=True, width="stretch")
if not found:
    st.info(T("history.empty"))
    st.stop()

by_id = {r["id"]: r for r in found}
run_id = shell.choose(st, T("history.pick"), {i: run_view.label(r, status=False) for i, r in by_id.items()}, "rh_pick")
run = runs.get(ctx.store, ctx.principal, run_id)  # fresh: the list may be a second old
st.subheader(run_view.label(run))
run_view.metadata(ctx, run, datasets.list_datasets(ctx.store, ctx.principal, ns))
run_view.show(ctx, run, "rh")
