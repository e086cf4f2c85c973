"""Namespaces and their members: create (platform admins), grant and revoke roles (namespace admins)."""
from __future__ import annotations

import streamlit as st

import shell
from core import namespaces, users
from core.errors import WorkbenchError
from core.permissions import Action, can
from core.principal import Role
from shell import T

ctx = shell.current()
st.title(T("namespaces.title"))
spaces = shell.visible_namespaces(ctx)
st.dataframe([{T("namespaces.name"): ns["name"], T("namespaces.description"): ns["description"],
               T("namespaces.my_role"): T(f"role.{ns['role']}"), T("namespaces.created"): shell.fmt_time(ns["created_at"])}
              for ns in spaces], hide_index=True, width="stretch")

if can(ctx.principal, Action.MANAGE_NAMESPACES):
    with st.expander(T("namespaces.create")), st.form("create_ns", clear_on_submit=True):
        name = st.text_input(T("namespaces.name"), key="ns_name", help=T("namespaces.name_help"))
        description = st.text_input(T("namespaces.description"), key="ns_description")
        if st.form_submit_button(T("namespaces.create"), type="primary"):
            try:
                namespaces.create(ctx.store, ctx.principal, name, description)
                st.rerun()
            except WorkbenchError as exc:
                shell.show_error(exc)

if not spaces:
    st.stop()
names = [ns["name"] for ns in spaces]
chosen = st.selectbox(T("shell.namespace"), names, key="ns_members_of",
                      index=names.index(shell.namespace()) if shell.namespace() in names else 0)
st.subheader(T("namespaces.members", namespace=chosen))
members = namespaces.list_members(ctx.store, ctx.principal, chosen)
st.dataframe([{T("account.username"): m["username"], T("account.display_name"): m["display_name"],
               T("namespaces.role"): T(f"role.{m['role']}"), T("namespaces.since"): shell.fmt_time(m["created_at"])}
              for m in members], hide_index=True, width="stretch")
if not can(ctx.principal, Action.MANAGE_MEMBERS, chosen):
    st.stop()

roles = [r.value for r in Role]
with st.form("grant_member"):
    left, right = st.columns(2)
    people = [u["username"] for u in users.directory(ctx.store, ctx.principal)]
    who = left.selectbox(T("namespaces.user"), people, key="gm_user", accept_new_options=False)
    role = shell.choose(right, T("namespaces.role"), {r: T(f"role.{r}") for r in roles}, "gm_role")
    if st.form_submit_button(T("namespaces.grant"), type="primary"):
        try:
            namespaces.add_member(ctx.store, ctx.principal, chosen, who, role)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)

if members:
    gone = st.selectbox(T("namespaces.remove_who"), [m["username"] for m in members], key="rm_user")
    if shell.confirm_button(T("namespaces.remove"), "rm_member", T("namespaces.confirm_remove", user=gone, namespace=chosen)):
        try:
            namespaces.remove_member(ctx.store, ctx.principal, chosen, gone)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)
