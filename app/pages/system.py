"""System (platform admins): settings with their sources, where the data lives, and LLM provider keys."""
from __future__ import annotations

import streamlit as st

import shell
from core import llm_settings, settings
from core.config import Config
from core.errors import WorkbenchError
from shell import T

ctx = shell.current()
st.title(T("system.title"))
try:
    rows = settings.describe(ctx.store, ctx.principal, Config.from_env())
    info = settings.system_info(ctx.store, ctx.principal)
except WorkbenchError as exc:
    shell.show_error(exc)
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric(T("system.users"), info["users"])
m2.metric(T("system.namespaces"), info["namespaces"])
m3.metric(T("system.store_size"), f"{info['store_bytes'] / 1_048_576:.1f} MB")
m4.metric(T("system.schema_version"), info["schema_version"])
st.markdown(f"{T('system.home')}: `{info['home']}`  \n{T('system.store')}: `{info['store_path']}`")
s1, s2, s3 = st.columns(3)
s1.metric(T("system.service"), T("system.service_up") if info["service_alive"] else T("system.service_down"),
          help=T("system.service_help", pid=info["service_pid"] or "—",
                 age=f"{info['service_heartbeat_age']:.0f}" if info["service_heartbeat_age"] is not None else "—"))
s2.metric(T("system.running_runs"), info["running_runs"])
s3.metric(T("system.llm_in_flight"), f"{info['llm_in_flight']} / {info['llm_max_inflight']}")

st.subheader(T("system.settings"))
st.dataframe([{T("system.key"): r["key"], T("system.effective"): str(r["effective"]),
               T("system.source"): T("system.src_admin") if r["override"] is not None else T("system.src_env_default"),
               T("system.env"): r["env"], T("system.default"): str(r["default"]),
               T("system.help"): T(f"setting.{r['key']}")} for r in rows], hide_index=True, width="stretch")

editable = [r for r in rows if r["admin"]]
with st.form("edit_setting"):
    key = shell.choose(st, T("system.key"), {r["key"]: f"{r['key']} — {T('setting.' + r['key'])}" for r in editable},
                       "set_key")
    value = st.text_input(T("system.new_value"), key="set_value")
    save, reset = st.columns(2)
    try:
        if save.form_submit_button(T("common.save"), type="primary"):
            settings.update(ctx.store, ctx.principal, key, value)
            st.rerun()
        if reset.form_submit_button(T("system.reset")):
            settings.reset(ctx.store, ctx.principal, key)
            st.rerun()
    except WorkbenchError as exc:
        shell.show_error(exc)

# -- LLM providers: keys are write-only here (core masks them); the defaults are ordinary settings --------
st.subheader(T("llm.title"))
st.caption(T("llm.intro"))
try:
    keys = llm_settings.list_keys(ctx.store, ctx.principal)
except WorkbenchError as exc:
    shell.show_error(exc)
    st.stop()
if notice := st.session_state.pop("llm_notice", None):
    st.success(notice)
if problem := st.session_state.pop("llm_problem", None):
    st.error(problem)
if keys:
    st.dataframe([{T("llm.name"): k["name"], T("llm.stored_value"): k["masked"] or T("llm.unreadable"),
                   T("llm.updated_at"): shell.fmt_time(k["updated_at"]), T("llm.updated_by"): k["updated_by"] or ""}
                  for k in keys], hide_index=True, width="stretch")
else:
    st.caption(T("llm.no_keys"))

# the inputs get fresh keys after every submit: the typed secret leaves the session (and the browser)
n = st.session_state.setdefault("llm_form_n", 0)
with st.form("llm_key"):
    c1, c2 = st.columns(2)
    name = c1.text_input(T("llm.name"), key=f"llm_name_{n}", placeholder="OPENAI_API_KEY")
    secret = c2.text_input(T("llm.value"), key=f"llm_value_{n}", type="password", autocomplete="off")
    if st.form_submit_button(T("llm.save_key"), type="primary"):
        try:
            llm_settings.set_key(ctx.store, ctx.principal, name, secret)
            st.session_state["llm_notice"] = T("llm.saved", name=name.strip())
        except WorkbenchError as exc:
            st.session_state["llm_problem"] = exc.message(ctx.lang)
        st.session_state["llm_form_n"] = n + 1
        st.rerun()

if keys:
    which = st.selectbox(T("llm.delete_which"), [k["name"] for k in keys], key="llm_del_name")
    if shell.confirm_button(T("llm.delete"), "llm_delete", T("llm.confirm_delete", name=which)):
        try:
            llm_settings.delete_key(ctx.store, ctx.principal, which)
            st.session_state["llm_notice"] = T("llm.deleted", name=which)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)

effective = {r["key"]: r["effective"] for r in rows}
with st.form("llm_defaults"):
    st.markdown(f"**{T('llm.defaults')}**")
    model = st.text_input(T("llm.default_model"), value=str(effective["llm_default_model"]), key="llm_model")
    base = st.text_input(T("llm.api_base"), value=str(effective["llm_api_base"]), key="llm_base")
    if st.form_submit_button(T("common.save")):
        try:
            for setting, new in (("llm_default_model", model.strip()), ("llm_api_base", base.strip())):
                if new != effective[setting]:
                    settings.update(ctx.store, ctx.principal, setting, new)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)
