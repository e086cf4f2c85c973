"""Users (platform admins): create, disable/enable, reset password, unlock, admin flag."""
from __future__ import annotations

import streamlit as st

import shell
from core import auth, users
from core.errors import WorkbenchError
from shell import T

ctx = shell.current()
st.title(T("users.title"))
try:
    rows = users.list_all(ctx.store, ctx.principal)
except WorkbenchError as exc:
    shell.show_error(exc)
    st.stop()

if shown := st.session_state.pop("wb_temp_password", None):
    st.success(T("users.temp_password", user=shown[0]))
    st.code(shown[1], language=None)
    st.caption(T("users.temp_password_once"))

st.dataframe([{T("account.username"): r["username"], T("account.display_name"): r["display_name"],
               T("account.email"): r["email"] or "", T("users.active"): "✓" if r["active"] else "✗",
               T("users.admin"): "✓" if r["is_platform_admin"] else "",
               T("users.must_change"): "✓" if r["must_change_password"] else "",
               T("users.last_login"): shell.fmt_time(r["last_login_at"])} for r in rows],
             hide_index=True, width="stretch")

with st.expander(T("users.create"), expanded=False), st.form("create_user", clear_on_submit=True):
    username = st.text_input(T("account.username"), key="cu_username")
    display = st.text_input(T("account.display_name"), key="cu_display")
    email = st.text_input(T("account.email"), key="cu_email")
    is_admin = st.checkbox(T("users.admin"), key="cu_admin")
    password = st.text_input(T("users.initial_password"), type="password", key="cu_password",
                             help=T("users.initial_password_help"))
    if st.form_submit_button(T("users.create"), type="primary"):
        temporary = not password
        try:
            users.create(ctx.store, ctx.principal, username, password or (password := users.temporary_password(ctx.config["password_min_length"])),
                         email=email or None, display_name=display or None, is_platform_admin=is_admin,
                         must_change_password=temporary)
            if temporary:
                st.session_state["wb_temp_password"] = (username.strip().lower(), password)
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)

st.subheader(T("users.manage"))
target = st.selectbox(T("account.username"), [r["username"] for r in rows], key="mu_user")
row = next(r for r in rows if r["username"] == target)
locked = auth.locked_until(ctx.store, ctx.principal, target)
if locked:
    st.warning(T("users.locked_until", time=shell.fmt_time(locked)))
cols = st.columns(4)
try:
    with cols[0]:
        label = T("users.disable") if row["active"] else T("users.enable")
        if shell.confirm_button(label, "mu_active", T("users.confirm_active", user=target, action=label)):
            users.set_active(ctx.store, ctx.principal, target, not row["active"])
            st.rerun()
    with cols[1]:
        if shell.confirm_button(T("users.reset_password"), "mu_reset", T("users.confirm_reset", user=target)):
            st.session_state["wb_temp_password"] = (target, users.reset_password(ctx.store, ctx.principal, target))
            st.rerun()
    with cols[2]:
        label = T("users.revoke_admin") if row["is_platform_admin"] else T("users.grant_admin")
        if shell.confirm_button(label, "mu_admin", T("users.confirm_admin", user=target, action=label)):
            users.set_platform_admin(ctx.store, ctx.principal, target, not row["is_platform_admin"])
            st.rerun()
    with cols[3]:
        if locked and st.button(T("users.unlock"), key="mu_unlock"):
            auth.unlock(ctx.store, ctx.principal, target)
            st.rerun()
except WorkbenchError as exc:
    shell.show_error(exc)
