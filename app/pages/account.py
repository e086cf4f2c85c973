"""My account: profile, language and timezone, password."""
from __future__ import annotations

import streamlit as st

import shell
from core import users
from core.errors import WorkbenchError
from core.i18n import LANGUAGES
from shell import T

COMMON_TIMEZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "UTC",
                    "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles"]

ctx = shell.current()
me = users.get(ctx.store, ctx.principal, ctx.principal.username)
st.title(T("account.title"))
if ctx.must_change_password:
    st.warning(T("account.must_change"))

with st.form("password_form", clear_on_submit=True):
    st.subheader(T("account.change_password"))
    current = st.text_input(T("account.current_password"), type="password", key="pw_current")
    new = st.text_input(T("account.new_password"), type="password", key="pw_new",
                        help=T("account.password_rule", min=ctx.config["password_min_length"]))
    confirm = st.text_input(T("account.confirm_password"), type="password", key="pw_confirm")
    if st.form_submit_button(T("account.change_password"), type="primary"):
        if new != confirm:
            st.error(T("account.mismatch"))
        else:
            try:
                shell.refresh_session(users.change_password(ctx.store, ctx.principal, current, new))
                st.session_state["wb_flash"] = T("account.password_changed")
                st.rerun()
            except WorkbenchError as exc:
                shell.show_error(exc)
if flash := st.session_state.pop("wb_flash", None):
    st.success(flash)

if not ctx.must_change_password:
    with st.form("profile_form"):
        st.subheader(T("account.profile"))
        st.text_input(T("account.username"), value=me["username"], disabled=True)
        display = st.text_input(T("account.display_name"), value=me["display_name"] or "", key="pf_display")
        email = st.text_input(T("account.email"), value=me["email"] or "", key="pf_email")
        lang = shell.choose(st, T("shell.language"), LANGUAGES, "pf_lang", ctx.lang)
        zones = COMMON_TIMEZONES if ctx.tz in COMMON_TIMEZONES else [ctx.tz, *COMMON_TIMEZONES]
        tz = st.selectbox(T("account.timezone"), zones, index=zones.index(ctx.tz), key="pf_tz",
                          accept_new_options=True)
        if st.form_submit_button(T("common.save")):
            try:
                users.set_preferences(ctx.store, ctx.principal, language=lang, timezone=tz,
                                      email=email or None, display_name=display or None)
                st.session_state["wb_lang"] = lang
                st.rerun()
            except WorkbenchError as exc:
                shell.show_error(exc)
    st.caption(T("account.last_login", time=shell.fmt_time(me["last_login_at"])))
