"""Login (and self-registration when an admin allows it)."""
from __future__ import annotations

import streamlit as st

import shell
from core import auth
from core.errors import WorkbenchError
from shell import T

ctx = shell.current(login_required=False)
left, right = st.columns([3, 1])
left.title(T("login.title"))
left.caption(T("login.subtitle"))
if shell.language_picker(ctx, right):
    st.rerun()
if problem := st.session_state.pop("wb_logout_error", None):
    st.warning(problem)

with st.form("login_form"):
    username = st.text_input(T("login.username"), key="login_username", autocomplete="username")
    password = st.text_input(T("login.password"), type="password", key="login_password",
                             autocomplete="current-password")
    submitted = st.form_submit_button(T("login.submit"), type="primary")
if submitted:
    if not username or not password:
        st.warning(T("login.missing"))
    else:
        try:
            result = auth.authenticate(ctx.store, username, password, shell.client())
        except WorkbenchError as exc:
            shell.show_error(exc)
        else:
            shell.sign_in(result)
            st.rerun()

if ctx.config["allow_registration"]:
    with st.expander(T("register.title")):
        with st.form("register_form", clear_on_submit=False):
            new_user = st.text_input(T("account.username"), key="reg_username")
            display = st.text_input(T("account.display_name"), key="reg_display")
            email = st.text_input(T("account.email"), key="reg_email")
            pw1 = st.text_input(T("account.new_password"), type="password", key="reg_pw1")
            pw2 = st.text_input(T("account.confirm_password"), type="password", key="reg_pw2")
            if st.form_submit_button(T("register.submit")):
                if pw1 != pw2:
                    st.error(T("account.mismatch"))
                else:
                    try:
                        auth.register(ctx.store, new_user, pw1, email=email or None, display_name=display or None,
                                      client=shell.client())
                        st.success(T("register.done"))
                    except WorkbenchError as exc:
                        shell.show_error(exc)
