"""Execute: choose or create a pipeline, edit and check its YAML, run it on a Data Center dataset, watch it."""
from __future__ import annotations

import streamlit as st

import run_view
import shell
from core import datasets, execute, pipelines, runs
from core.errors import WorkbenchError
from core.permissions import Action, can
from shell import T

ctx = shell.current()
st.title(T("execute.title"))
ns = shell.namespace()
if not ns:
    st.info(T("execute.no_namespace"))
    st.stop()
if flash := st.session_state.pop("ex_flash", None):
    st.success(flash)
may_edit, may_run = can(ctx.principal, Action.EDIT_PIPELINE, ns), can(ctx.principal, Action.RUN, ns)


def _done(message: str, pick: str | None = None) -> None:
    st.session_state.update(ex_flash=message, **({"ex_pick_next": pick} if pick else {}))
    st.rerun()


found = pipelines.list_pipelines(ctx.store, ctx.principal, ns)
# -- a new pipeline ---------------------------------------------------------------------------------------
if may_edit:
    with st.expander(T("execute.new"), expanded=not found):
        shipped = {tpl["name"]: tpl for tpl in pipelines.templates()}
        template = shell.choose(st, T("execute.template"), {**{n: tpl["title"][ctx.lang] for n, tpl in shipped.items()},
                                                            "": T("execute.blank")}, "ex_template")
        st.caption(shipped[template]["description"][ctx.lang] if template else T("execute.blank_help"))
        new_name = st.text_input(T("execute.name"), key="ex_new_name", placeholder=T("execute.name_auto"))
        if st.button(T("execute.create"), key="ex_create", type="primary"):
            try:
                made = (pipelines.create_from_template(ctx.store, ctx.principal, ns, template, new_name.strip() or None,
                                                       lang=ctx.lang) if template else
                        pipelines.create(ctx.store, ctx.principal, ns, new_name, pipelines.blank_yaml()))
                _done(T("execute.created", name=made["name"]), made["name"])
            except WorkbenchError as exc:
                shell.show_error(exc)
if not found:
    st.info(T("execute.empty"))
    st.stop()

# -- the pipeline -----------------------------------------------------------------------------------------
by_name = {p["name"]: p for p in found}
if st.session_state.get("ex_pick_next") in by_name:  # just created, renamed or duplicated: show that one
    st.session_state["ex_pick"] = st.session_state.pop("ex_pick_next")
picked = st.selectbox(T("execute.pipeline"), list(by_name), key="ex_pick")
pipe = by_name.get(picked, found[0])
st.caption(" · ".join(x for x in [pipe["description"], T("execute.updated", time=shell.fmt_time(pipe["updated_at"])),
                                  T(f"run.status.{pipe['last_run_status']}") if pipe["last_run_status"] else ""] if x))
if may_edit:
    with st.expander(T("execute.manage")):
        other = st.text_input(T("execute.new_name"), key=f"ex_other_{pipe['id']}")
        left, right = st.columns(2)
        try:
            if left.button(T("execute.rename"), key="ex_rename"):
                done = pipelines.rename(ctx.store, ctx.principal, pipe["id"], other)
                _done(T("execute.renamed", name=done["name"]), done["name"])
            if right.button(T("execute.duplicate"), key="ex_duplicate"):
                done = pipelines.duplicate(ctx.store, ctx.principal, pipe["id"], other)
                _done(T("execute.duplicated", name=done["name"]), done["name"])
            if can(ctx.principal, Action.DELETE_RESOURCE, ns) and shell.confirm_button(
                    T("execute.delete"), "ex_delete", T("execute.confirm_delete", name=pipe["name"])):
                pipelines.delete(ctx.store, ctx.principal, pipe["id"])
                st.session_state.pop("ex_pick", None)
                _done(T("execute.deleted", name=pipe["name"]))
        except WorkbenchError as exc:
            shell.show_error(exc)

# -- the YAML: edit, check, outline, save -------------------------------------------------------------------
try:
    saved = pipelines.read_yaml(ctx.store, ctx.principal, pipe["id"])
except WorkbenchError as exc:
    shell.show_error(exc)
    saved = ""
st.html("<style>[class*='st-key-ex_yaml_'] textarea {font-family: 'Source Code Pro', monospace}</style>")
text = st.text_area(T("execute.yaml"), value=saved, height=420, key=f"ex_yaml_{pipe['id']}", disabled=not may_edit)
problems = pipelines.validate(text)
if problems:
    st.error("\n".join(f"- {T('execute.at_line', line=p.line) if p.line else ''}{p.message(ctx.lang)}"
                       for p in problems))
else:
    st.success(T("execute.valid"))
outline = pipelines.summary(text)
if outline:
    st.dataframe([{T("execute.op"): o["name"], T("execute.op_type"): o["type"], T("execute.llm"): "✓" if o["llm"] else "—",
                   T("execute.model"): o["model"] or "—", T("execute.prompt"): o["prompt"] or "—",
                   T("execute.outputs"): ", ".join(f"{f['name']}: {f['type']}" for f in o["output"]) or "—"}
                  for o in outline], hide_index=True, width="stretch")
if not problems and st.button(T("execute.docetl_check"), key="ex_docetl_check", help=T("execute.docetl_check_help")):
    with st.spinner(T("execute.docetl_checking")):
        deep = pipelines.docetl_check(text)
    if deep:
        st.error("\n".join(f"- {p.message(ctx.lang)}" for p in deep))
    else:
        st.success(T("execute.docetl_ok"))
if may_edit:
    if text != saved:
        st.caption(T("execute.unsaved"))
    if st.button(T("common.save"), key="ex_save", disabled=bool(problems) or text == saved):
        try:
            pipelines.update(ctx.store, ctx.principal, pipe["id"], yaml_text=text)
            _done(T("execute.saved", name=pipe["name"]))
        except WorkbenchError as exc:
            shell.show_error(exc)

# -- run it --------------------------------------------------------------------------------------------------
st.subheader(T("execute.run_title"))
known = datasets.list_datasets(ctx.store, ctx.principal, ns)
ready = {d["id"]: d for d in known if d["ingest_status"] == datasets.IngestStatus.READY.value}
if not ready:
    st.info(T("execute.no_dataset"))
else:
    dataset_id = shell.choose(st, T("execute.dataset"), {i: T("execute.dataset_label", name=d["name"], rows=d["row_count"])
                                                         for i, d in ready.items()}, f"ex_dataset_{pipe['id']}",
                              pipe["input_dataset_id"])
    head = run_view.records(ready[dataset_id]["path"]) or []
    st.caption(T("execute.preview", shown=min(5, len(head)), rows=len(head)))
    st.dataframe(head[:5], hide_index=True)
    if may_run:
        left, right = st.columns(2)
        sample = left.number_input(T("execute.sample"), min_value=1, step=1, value=None, key="ex_sample",
                                   help=T("execute.sample_help"))
        save_as = right.text_input(T("execute.save_as"), key="ex_save_as", help=T("execute.save_as_help"))
        if text != saved:
            st.caption(T("execute.run_saves"))
        if st.button(T("execute.run"), key="ex_run", type="primary", icon=":material/play_arrow:",
                     disabled=bool(problems)):
            try:
                if text != saved or dataset_id != pipe["input_dataset_id"]:
                    pipelines.update(ctx.store, ctx.principal, pipe["id"], yaml_text=text, input_dataset_id=dataset_id)
                execute.submit(ctx.store, ctx.principal, ns, pipe["id"], input_dataset=dataset_id,
                               sample_rows=int(sample) if sample else None, save_output_as=save_as.strip() or None)
                _done(T("execute.queued", name=pipe["name"]))
            except WorkbenchError as exc:
                shell.show_error(exc)

# -- the latest run of this pipeline -----------------------------------------------------------------------
latest = runs.list_runs(ctx.store, ctx.principal, ns, pipeline=pipe["id"], limit=1)
if latest:
    st.subheader(T("execute.latest"))
    run_view.show(ctx, latest[0], "ex")
    st.page_link("pages/runs.py", label=T("execute.all_runs"), icon=":material/history:")
