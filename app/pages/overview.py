"""Overview: who you are, your namespaces and what your role lets you do in each."""
from __future__ import annotations

import streamlit as st

import shell
from core.permissions import NAMESPACE_RULES, Action, can
from shell import T

ctx = shell.current()
st.title(T("overview.title", name=ctx.display_name))
spaces = shell.visible_namespaces(ctx)
if not spaces:
    st.info(T("overview.no_namespace"))
    st.stop()

cols = st.columns(min(len(spaces), 4))
for i, ns in enumerate(spaces):
    with cols[i % len(cols)].container(border=True):
        st.markdown(f"**{ns['name']}**")
        st.caption(ns["description"] or "—")
        st.markdown(T(f"role.{ns['role']}"))

current = shell.namespace()
if current:
    st.subheader(T("overview.can_title", namespace=current))
    st.dataframe(
        [{T("overview.action"): T(f"action.{a.value}"), T("overview.allowed"): "✓" if can(ctx.principal, a, current) else "—"}
         for a in NAMESPACE_RULES],
        hide_index=True, width="content")
if ctx.principal.is_platform_admin:
    st.caption(T("overview.admin_note"))
