"""First start: no user exists yet, so the first person here creates the administrator."""
from __future__ import annotations

import streamlit as st

import shell
from core import auth
from core.errors import WorkbenchError
from shell import T

ctx = shell.current(login_required=False)
left, right = st.columns([3, 1])
left.title(T("bootstrap.title"))
if shell.language_picker(ctx, right):
    st.rerun()
st.info(T("bootstrap.explain", home=str(ctx.config.docetl_dir)))

with st.form("bootstrap_form"):
    username = st.text_input(T("account.username"), value="admin", key="boot_username")
    display = st.text_input(T("account.display_name"), key="boot_display")
    email = st.text_input(T("account.email"), key="boot_email")
    pw1 = st.text_input(T("account.new_password"), type="password", key="boot_pw1",
                        help=T("account.password_rule", min=ctx.config["password_min_length"]))
    pw2 = st.text_input(T("account.confirm_password"), type="password", key="boot_pw2")
    submitted = st.form_submit_button(T("bootstrap.submit"), type="primary")
if submitted:
    if pw1 != pw2:
        st.error(T("account.mismatch"))
    else:
        try:
            auth.create_first_admin(ctx.store, username, pw1, email=email or None, display_name=display or None,
                                    client=shell.client())
            shell.sign_in(auth.authenticate(ctx.store, username, pw1, shell.client()))
            st.rerun()
        except WorkbenchError as exc:
            shell.show_error(exc)
