"""System (platform admins): settings with their sources, and where the data lives."""
from __future__ import annotations

import streamlit as st

import shell
from core import settings
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
