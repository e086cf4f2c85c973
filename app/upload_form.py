"""The Data Center's upload form: pick a file → preview it (sheet, header row, range) → import it in
the background. Reads widgets, calls core, renders; the page shows the import's progress and outcome."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import streamlit as st

import shell
from core import datasets
from core.errors import WorkbenchError
from shell import T


def show(ctx: shell.Ctx, ns: str) -> None:
    """The form, for a caller allowed to upload into `ns` (core checks again on import)."""
    spares = shell.import_spares()  # the standby import child starts while the user picks a file
    with st.expander(T("datacenter.upload"), expanded=True):
        n = st.session_state.setdefault("dc_upload_n", 0)
        upload = st.file_uploader(T("datacenter.file"), type=["xlsx", "xlsm", "xls", "csv", "json"], key=f"dc_upload_{n}",
                                  max_upload_size=int(ctx.config["dataset_max_mb"]))  # the browser says the limit
        if upload is not None:
            if st.session_state.get("dc_file") != upload.file_id:  # a new file: forget the last one's options
                for key in ("dc_sheet", "dc_name"):
                    st.session_state.pop(key, None)
                st.session_state["dc_file"] = upload.file_id
            data = upload.getvalue()
            _preview = partial(datasets.preview_bytes, data, upload.name, max_mb=int(ctx.config["dataset_max_mb"]))
            try:
                base = _preview()
                sheet = None
                if base["sheets"]:
                    sheet = shell.choose(st, T("datacenter.sheet"), {
                        s["name"]: s["name"] + (f" ({T('datacenter.hidden')})" if s["hidden"] else "")
                        for s in base["sheets"]}, "dc_sheet", base["sheet"])
                    if sheet != base["sheet"]:
                        base = _preview(sheet=sheet)
                if st.session_state.get("dc_for") != (upload.file_id, sheet):  # another file or sheet: detect again
                    for key in ("dc_header", "dc_start", "dc_end"):
                        st.session_state.pop(key, None)
                    st.session_state["dc_for"] = (upload.file_id, sheet)
                options: dict[str, Any] = {"sheet": sheet}
                if base["header_row"] is not None:
                    left, mid, right = st.columns(3)
                    options["header_row"] = int(left.number_input(T("datacenter.header_row"), min_value=1, step=1,
                                                                  value=base["header_row"], key="dc_header"))
                    options["start_row"] = mid.number_input(T("datacenter.start_row"), min_value=1, step=1,
                                                            value=None, key="dc_start")
                    options["end_row"] = right.number_input(T("datacenter.end_row"), min_value=1, step=1,
                                                            value=None, key="dc_end")
                shown = base if options.get("header_row") == base["header_row"] and not (
                    options.get("start_row") or options.get("end_row")) else _preview(**options)
                st.caption(T("datacenter.preview_caption", format=shown["format"], header_row=shown["header_row"] or "—",
                             total=shown["total_rows"] if shown["total_rows"] is not None else "?"))
                st.dataframe([{T("datacenter.column"): c["name"], T("datacenter.type"): T(f"datacenter.type.{c['type']}")}
                              for c in shown["columns"]], hide_index=True)
                st.dataframe(shown["rows"], hide_index=True)
                for warning in shown["warnings"]:
                    st.warning(warning)
                name = st.text_input(T("datacenter.name"), value=Path(datasets.safe_filename(upload.name)).stem,
                                     key="dc_name")
                if st.button(T("datacenter.import"), key="dc_import", type="primary"):
                    made = datasets.create_upload(ctx.store, ctx.principal, ns, upload.name, data, name=name,
                                                  config={**options, "header_row": shown["header_row"]})
                    datasets.ingest_in_background(ctx.store, made["id"], spares)
                    st.session_state.update(dc_watch=made["id"], dc_pick_next=made["name"], dc_upload_n=n + 1)
                    st.rerun()
            except WorkbenchError as exc:
                shell.show_error(exc)
