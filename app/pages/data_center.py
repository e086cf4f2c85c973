"""Data Center: a namespace's datasets — list, upload → preview → import, detail, download, edit, delete."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

import shell
import upload_form
from core import clock, datasets, tabular
from core.errors import WorkbenchError
from core.permissions import Action, can
from shell import T

PAGE_SIZE = 50
ctx = shell.current()
st.title(T("datacenter.title"))
ns = shell.namespace()
if not ns:
    st.info(T("datacenter.no_namespace"))
    st.stop()
if watched := st.session_state.get("dc_watch"):  # an import this session started: say how it ended
    try:
        job = datasets.get(ctx.store, ctx.principal, watched)
    except WorkbenchError:
        job = None
    if job is None or job["ingest_status"] in (datasets.IngestStatus.READY.value, datasets.IngestStatus.FAILED.value):
        st.session_state.pop("dc_watch")
        if job and job["ingest_status"] == datasets.IngestStatus.READY.value:
            st.session_state["dc_flash"] = T("datacenter.imported", name=job["name"], rows=job["row_count"])
        elif job:
            st.error(T("datacenter.import_failed") + " " + datasets.error_message(job["error"], ctx.lang))
if flash := st.session_state.pop("dc_flash", None):
    st.success(flash)


@st.cache_resource(max_entries=4, show_spinner=False)  # read-only here: no copy per run
def _records(path: str, mtime: float) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@st.fragment(run_every=1.0)
def _watch_import(dataset_id: str) -> None:
    """While an import runs in the background: its status and elapsed time, refreshed every second;
    the whole page reruns once it has ended."""
    try:
        job = datasets.get(ctx.store, ctx.principal, dataset_id)
    except WorkbenchError:  # deleted meanwhile (by someone else): the whole page shows what is left
        shell.rerun_unprompted()
    if job["ingest_status"] not in (datasets.IngestStatus.PENDING.value, datasets.IngestStatus.PROCESSING.value):
        shell.rerun_unprompted()
    seconds = max(0, int((clock.utcnow() - job["created_at"]).total_seconds()))
    st.progress(0.1 if job["ingest_status"] == datasets.IngestStatus.PENDING.value else 0.5,
                text=T("datacenter.import_running", status=T(f"datacenter.status.{job['ingest_status']}"),
                       seconds=seconds))


try:
    datasets.sync_legacy(ctx.store, ctx.principal, ns)
except WorkbenchError as exc:
    shell.show_error(exc)

# -- upload → preview → import -------------------------------------------------------------------------
if can(ctx.principal, Action.UPLOAD_DATASET, ns):
    upload_form.show(ctx, ns)

# -- the list --------------------------------------------------------------------------------------------
everything = datasets.list_datasets(ctx.store, ctx.principal, ns)
left, mid, right = st.columns(3)
source = shell.choose(left, T("datacenter.source"), {None: T("datacenter.all"), **{
    s.value: T(f"datacenter.source.{s.value}") for s in datasets.Source}}, "dc_source")
search = mid.text_input(T("datacenter.search"), key="dc_search")
tags = sorted({tag for d in everything for tag in d["tags"]})
tag = shell.choose(right, T("datacenter.tag"), {None: T("datacenter.all"), **{x: x for x in tags}}, "dc_tag")
found = datasets.matching(everything, source=source, search=search, tag=tag)
st.dataframe([{T("datacenter.name"): d["name"], T("datacenter.source"): T(f"datacenter.source.{d['source']}"),
               T("datacenter.status"): T(f"datacenter.status.{d['ingest_status']}"), T("datacenter.rows"): d["row_count"],
               T("datacenter.columns"): len(d["schema"] or []), T("datacenter.tags"): ", ".join(d["tags"]),
               T("datacenter.updated"): shell.fmt_time(d["updated_at"])} for d in found],
             hide_index=True, width="stretch")
if not found:
    st.info(T("datacenter.empty"))
    st.stop()

# -- one dataset -----------------------------------------------------------------------------------------
by_name = {d["name"]: d for d in found}
if st.session_state.get("dc_pick_next") in by_name:  # just imported or renamed: show that one
    st.session_state["dc_pick"] = st.session_state.pop("dc_pick_next")
picked = st.selectbox(T("datacenter.pick"), list(by_name), key="dc_pick")
d = by_name[picked] if picked in by_name else found[0]
st.subheader(d["name"])
st.caption(" · ".join([T(f"datacenter.source.{d['source']}"), T(f"datacenter.status.{d['ingest_status']}"),
                       d["created_by"], shell.fmt_time(d["created_at"])]))
if d["description"]:
    st.markdown(d["description"])
if d["ingest_status"] in (datasets.IngestStatus.PENDING.value, datasets.IngestStatus.PROCESSING.value):
    _watch_import(d["id"])
if d["ingest_status"] == datasets.IngestStatus.FAILED.value:
    st.error(datasets.error_message(d["error"], ctx.lang))
if d["schema"]:
    st.dataframe([{T("datacenter.column"): c["name"], T("datacenter.type"): T(f"datacenter.type.{c['type']}")}
                  for c in d["schema"]],
                 hide_index=True)
if d["lineage"]:
    st.markdown(f"**{T('datacenter.lineage')}**")
    st.json(d["lineage"])
path = Path(d["path"])
if d["ingest_status"] == datasets.IngestStatus.READY.value and path.is_file():
    records = _records(str(path), path.stat().st_mtime)
    pages = max(1, -(-len(records) // PAGE_SIZE))
    page = int(st.number_input(T("datacenter.page", pages=pages), min_value=1, max_value=pages, value=1, step=1,
                               key="dc_page"))
    st.dataframe(records[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], hide_index=True)
    columns = [c["name"] for c in d["schema"] or []] or tabular.column_names(records[:1000])
    one, two, three = st.columns(3)
    one.download_button(T("datacenter.download_json"), path.read_bytes, f"{d['name']}.json", "application/json",
                        key="dc_dl_json")
    two.download_button(T("datacenter.download_csv"), lambda: datasets.export(records, columns, "csv"), f"{d['name']}.csv", "text/csv",
                        key="dc_dl_csv")
    three.download_button(T("datacenter.download_xlsx"), lambda: datasets.export(records, columns, "xlsx"), f"{d['name']}.xlsx",
                          "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", key="dc_dl_xlsx")

if can(ctx.principal, Action.UPLOAD_DATASET, ns):
    with st.expander(T("datacenter.edit")), st.form("dc_edit"):
        new_name = st.text_input(T("datacenter.name"), value=d["name"], key=f"dc_edit_name_{d['id']}")
        description = st.text_area(T("datacenter.description"), value=d["description"] or "", key=f"dc_edit_desc_{d['id']}")
        new_tags = st.text_input(T("datacenter.tags"), value=", ".join(d["tags"]), help=T("datacenter.tags_help"),
                                 key=f"dc_edit_tags_{d['id']}")
        if st.form_submit_button(T("common.save"), type="primary"):
            try:
                saved = datasets.update(ctx.store, ctx.principal, d["id"], name=new_name, description=description,
                                        tags=new_tags.replace("，", ",").split(","))
                st.session_state.update(dc_flash=T("datacenter.saved"), dc_pick_next=saved["name"])
                st.rerun()
            except WorkbenchError as exc:
                shell.show_error(exc)

if can(ctx.principal, Action.DELETE_RESOURCE, ns):
    if shell.confirm_button(T("datacenter.delete"), "dc_delete", T("datacenter.confirm_delete", name=d["name"])):
        try:
            datasets.delete(ctx.store, ctx.principal, d["id"])
            st.session_state.update(dc_flash=T("datacenter.deleted", name=d["name"]))
            st.session_state.pop("dc_pick", None)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)
