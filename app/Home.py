"""DocETL Workbench entry point: resolve the session, then route to the pages this user may use."""
from __future__ import annotations

import streamlit as st

import shell
from core import auth, users
from core.errors import WorkbenchError
from core.permissions import Action, can, can_somewhere
from shell import T

st.set_page_config(page_title="DocETL Workbench", page_icon=":material/account_tree:", layout="wide")


def pages_for(ctx: shell.Ctx) -> dict[str, list]:
    """Navigation from the user's permissions (hiding is convenience; core checks every action).

    Every url_path differs from its file name on purpose: Streamlit still discovers app/pages/ the legacy
    way and would otherwise run a page file directly, without the session checks of this script.
    """
    p = ctx.principal
    account = st.Page("pages/account.py", title=T("nav.account"), icon=":material/person:", url_path="me",
                      default=ctx.must_change_password)
    if ctx.must_change_password:
        return {"": [account]}
    settings = [account, st.Page("pages/namespaces.py", title=T("nav.namespaces"),
                                        icon=":material/folder_shared:", url_path="spaces")]
    if can(p, Action.MANAGE_USERS):
        settings.insert(1, st.Page("pages/users.py", title=T("nav.users"), icon=":material/group:",
                                                url_path="people"))
    if can(p, Action.READ_AUDIT_ALL) or can_somewhere(p, Action.READ_AUDIT):
        settings.append(st.Page("pages/audit.py", title=T("nav.audit"), icon=":material/receipt_long:",
                                 url_path="audit-log"))
    if can(p, Action.MANAGE_SETTINGS):
        settings.append(st.Page("pages/system.py", title=T("nav.system"), icon=":material/settings:",
                                 url_path="system-settings"))
    overview = st.Page("pages/overview.py", title=T("nav.overview"), icon=":material/home:", url_path="home",
                       default=True)
    workbench = [overview]
    if can_somewhere(p, Action.VIEW):
        workbench.append(st.Page("pages/data_center.py", title=T("nav.data_center"), icon=":material/database:",
                                 url_path="data"))
        workbench.append(st.Page("pages/execute.py", title=T("nav.execute"), icon=":material/play_circle:",
                                 url_path="execute-pipeline"))
        workbench.append(st.Page("pages/runs.py", title=T("nav.runs"), icon=":material/history:",
                                 url_path="run-history"))
    return {T("nav.section.workbench"): workbench, T("nav.section.settings"): settings}


def sidebar(ctx: shell.Ctx) -> None:
    """Who is signed in, the namespace switcher, the language switch and logout."""
    side = st.sidebar
    side.markdown(f"**{ctx.display_name}** · `{ctx.principal.username}`")
    names = [ns["name"] for ns in shell.visible_namespaces(ctx)]
    if names:
        current = shell.namespace() if shell.namespace() in names else names[0]
        st.session_state["wb_namespace"] = side.selectbox(T("shell.namespace"), names, index=names.index(current),
                                                          key="wb_ns_picker")
    else:
        side.caption(T("shell.no_namespace"))
    chosen = shell.language_picker(ctx, side)
    if chosen:
        users.set_preferences(ctx.store, ctx.principal, language=chosen)
        st.rerun()
    side.button(T("shell.logout"), key="wb_logout", on_click=shell.sign_out, icon=":material/logout:")


def route() -> None:
    ctx = shell.start()
    if ctx.principal is None:
        first = auth.needs_bootstrap(ctx.store)
        page = st.Page("pages/bootstrap.py" if first else "pages/login.py", title=T("nav.login"),
                       url_path="welcome" if first else "signin", default=True)
        nav = st.navigation([page], position="hidden")
    else:
        st.session_state["_wb_nav"] = pages_for(ctx)
        nav = st.navigation(st.session_state["_wb_nav"])
        sidebar(ctx)
    shell.run(nav)


try:
    route()
except WorkbenchError as exc:  # e.g. "metadata store busy": say so in words, never a traceback
    shell.show_error(exc)
