"""Session plumbing shared by Home.py and the pages: the store, the signed-in user, translation.

Rules live in core; this module only keeps Streamlit session state in step with core's answers.
streamlit-authenticator writes and deletes the login cookie; core decides whether a cookie still counts.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import streamlit as st
import streamlit_authenticator as stauth

from core import auth, clock, datasets, namespaces, sandbox, service_control
from core.config import Config
from core.errors import WorkbenchError
from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, t
from core.principal import Principal
from core.settings import open_store
from core.store import Store

_CTX = "_wb_ctx"
_LIVE = "_wb_live"  # set only while Home.py routes this run
_COOKIE_SET, _COOKIE_DELETE = "wb_cookie_set", "wb_cookie_delete"  # component keys no page may reuse


@dataclass(frozen=True)
class Ctx:
    """What one script run knows: the store, the actor, and how to speak to them."""

    store: Store
    principal: Principal | None
    lang: str
    tz: str
    display_name: str = ""
    must_change_password: bool = False
    reads: dict[str, Any] = field(default_factory=dict, compare=False)  # this run's reads, done once

    @property
    def config(self) -> Config:
        return self.store.config


def T(key: str, /, **params: Any) -> str:
    """Translate for the current session."""
    return t(key, _lang(), **params)


def _lang() -> str:
    ctx = st.session_state.get(_CTX)
    return ctx.lang if ctx else st.session_state.get("wb_lang", DEFAULT_LANGUAGE)


def current(login_required: bool = True) -> Ctx:
    """This run's context. A page file run on its own (Streamlit's legacy `pages/` discovery, e.g. a
    deep link on a fresh server) goes back through Home.py, which checks the session first."""
    ctx = st.session_state.get(_CTX)
    if not st.session_state.get(_LIVE) or ctx is None:
        st.switch_page("Home.py")
    if login_required and ctx.principal is None:
        st.stop()
    return ctx


def run(nav: Any) -> None:
    """Run the chosen page, marking the run as routed by Home.py."""
    st.session_state[_LIVE] = True
    try:
        nav.run()
    finally:
        st.session_state.pop(_LIVE, None)


def visible_namespaces(ctx: Ctx) -> list[dict[str, Any]]:
    """The user's namespaces, read once per run (the sidebar and the page both need them)."""
    if "namespaces" not in ctx.reads:
        ctx.reads["namespaces"] = namespaces.list_visible(ctx.store, ctx.principal)
    return ctx.reads["namespaces"]


def namespace() -> str | None:
    """The namespace chosen in the sidebar switcher."""
    return st.session_state.get("wb_namespace")


def show_error(exc: WorkbenchError) -> None:
    st.error(exc.message(_lang()))


def fmt_time(value: datetime | None) -> str:
    ctx = st.session_state.get(_CTX)
    return clock.format_local(value, ctx.tz if ctx else "Asia/Shanghai")


def client() -> Principal:
    """The browser's address and agent, for lockout throttling and audit."""
    headers, ip = st.context.headers, st.context.ip_address
    agent = headers.get("User-Agent") if headers else None
    return Principal.anonymous().with_client(ip if isinstance(ip, str) else None,
                                             agent if isinstance(agent, str) else None, uuid.uuid4().hex[:12])


def _cookie_key(config: Config) -> str:
    try:
        override = st.secrets.get("auth", {}).get("cookie_key")
    except (FileNotFoundError, KeyError, AttributeError):
        override = None
    except Exception:  # streamlit raises its own parse error for a broken secrets.toml
        override = None
    return auth.cookie_key(config, override)


def _authenticator(store: Store, username: str) -> stauth.Authenticate:
    return stauth.Authenticate(auth.authenticator_credentials(store, username), auth.COOKIE_NAME,
                               _cookie_key(store.config), float(store.config["cookie_expiry_days"]),
                               auto_hash=False, login_sleep_time=0)


def _cookie_manager(store: Store, username: str) -> Any:
    """streamlit-authenticator's cookie manager (a browser component), built over the store's credentials."""
    return _authenticator(store, username).cookie_controller.cookie_model.cookie_manager


def _write_cookie(store: Store, username: str) -> None:
    """Write the login cookie with streamlit-authenticator's cookie manager; core signs it (with `iat`)."""
    days = float(store.config["cookie_expiry_days"])
    manager = _cookie_manager(store, username)
    manager.set(auth.COOKIE_NAME, auth.issue_cookie(username, _cookie_key(store.config), days), key=_COOKIE_SET,
                expires_at=datetime.now() + timedelta(days=days))


def start() -> Ctx:
    """Resolve this run's context: restore or re-check the session, then remember it for the pages."""
    store = open_store(Config.from_env())
    who = client()
    result = None
    username, login_at = st.session_state.get("wb_username"), st.session_state.get("wb_login_at")
    if username and login_at:
        result = auth.resume(store, username, login_at, who)
        if result is None:  # disabled, or logged out / password changed elsewhere
            _forget()
    elif not st.session_state.get("logout"):
        token = st.context.cookies.get(auth.COOKIE_NAME) if st.context.cookies else None
        if token:
            result = auth.resume_from_cookie(store, token, _cookie_key(store.config), who)
            if result:
                _remember(result)
    if st.session_state.get("wb_delete_cookie"):
        if not _cookie_done("wb_delete_cookie", _COOKIE_DELETE):
            try:
                _cookie_manager(store, "").delete(auth.COOKIE_NAME, key=_COOKIE_DELETE)
            except KeyError:  # rendered the delete; the manager's own copy of the cookies just lacked it
                pass
    elif result and st.session_state.get("wb_set_cookie"):
        if not _cookie_done("wb_set_cookie", _COOKIE_SET):
            _write_cookie(store, result.principal.username)
    lang = (result.language if result and result.language else None) or st.session_state.get(
        "wb_lang", store.config["default_language"])
    ctx = Ctx(store=store, principal=result.principal if result else None, lang=lang,
              tz=(result.timezone if result and result.timezone else store.config["default_timezone"]),
              display_name=result.display_name if result else "",
              must_change_password=bool(result and result.must_change_password))
    st.session_state[_CTX] = ctx
    if ctx.principal is not None:
        _keep_service_running(store)
    return ctx


@st.cache_resource(ttl=10, show_spinner=False)
def _service_checked(home: str) -> float:
    """At most one look per home every 10 s, whatever the number of sessions (the cache is shared)."""
    return clock.utcnow().timestamp()


@st.cache_resource(show_spinner=False)
def import_spares() -> sandbox.Spares:
    """This server's standby import child (shared by its sessions), started when the Data Center first
    shows, so that an upload's import skips the child's start."""
    spares = datasets.import_spares()
    spares.warm()
    return spares


def _keep_service_running(store: Store) -> None:
    """Queued runs and imports need the scheduler service: start one when none is alive (setting
    `autostart_service`), so `make run` is all a user needs."""
    if not store.config["autostart_service"]:
        return
    key = str(store.config.home)
    first = _service_checked(key)
    if st.session_state.get("wb_service_checked") == first:
        return
    st.session_state["wb_service_checked"] = first
    try:
        service_control.ensure_running(store.config)
    except OSError:  # cannot start it (permissions, resources): pages still work, runs wait queued
        pass


def _cookie_done(pending: str, component_key: str) -> bool:
    """The cookie manager writes or deletes the cookie from a browser component that acts only once its
    frame has loaded; a rerun before that (its own cookie read triggers one) unmounts it and the write or
    delete is lost. So a pending one is rendered on every run until the browser confirms it (the
    component's value, under its key, turns True); the run that brings the confirmation no longer renders
    it. No `st.rerun()` here: it re-queues this page and would swallow a page the user just clicked."""
    if st.session_state.get(component_key) is True:
        st.session_state.pop(pending, None)
        return True
    return False


def rerun_unprompted() -> None:
    """`st.rerun()` for a rerun no click asked for (a run that just finished). `st.rerun()` re-queues
    this page, and Streamlit folds it with a request already waiting (the page the user just clicked)
    into one rerun of *this* page: the click would be lost. An element first is a yield point, where a
    waiting request takes over the run."""
    st.empty()
    st.rerun()


def sign_in(result: auth.LoginResult) -> None:
    """After core accepted the password: remember the session and write the cookie on the next runs."""
    _remember(result)
    st.session_state.pop("wb_delete_cookie", None)
    st.session_state["wb_set_cookie"] = True
    st.session_state["logout"] = False


def _remember(result: auth.LoginResult) -> None:
    st.session_state.update(wb_username=result.principal.username, wb_login_at=result.login_at,
                            authentication_status=True, username=result.principal.username,
                            name=result.display_name)


def _forget() -> None:
    for key in ("wb_username", "wb_login_at", "wb_namespace", "wb_set_cookie", _CTX):
        st.session_state.pop(key, None)
    st.session_state.update(authentication_status=None, username=None, name=None)


def sign_out() -> None:
    """Logout button callback: end every session of this user (core); the cookie goes on this run."""
    ctx = st.session_state.get(_CTX)
    try:
        if ctx and ctx.principal:
            auth.logout(ctx.store, ctx.principal)
    except WorkbenchError as exc:  # this browser is signed out anyway; other sessions may outlive it
        st.session_state["wb_logout_error"] = exc.message(ctx.lang)
    finally:
        _forget()
        st.session_state.update(logout=True, wb_delete_cookie=True)


def refresh_session(epoch: datetime) -> None:
    """After your own password change: this session stays, with a fresh cookie."""
    st.session_state["wb_login_at"] = epoch
    st.session_state["wb_set_cookie"] = True


def choose(where: Any, label: str, choices: dict[Any, str], key: str, current: Any = None) -> Any:
    """A selectbox over display labels that returns the chosen value (people and AppTest pick by label)."""
    values, labels = list(choices), list(choices.values())
    picked = where.selectbox(label, labels, index=values.index(current) if current in choices else 0, key=key)
    return values[labels.index(picked)]


def language_picker(ctx: Ctx, where: Any, key: str = "wb_lang_picker") -> str | None:
    """A language switch showing each language in its own script; returns the new code, if changed."""
    code = choose(where, T("shell.language"), LANGUAGES, key, ctx.lang)
    if code != ctx.lang:
        st.session_state["wb_lang"] = code
        return code
    return None


def confirm_button(label: str, key: str, prompt: str) -> bool:
    """A two-step button for consequential actions: True only on the confirming click."""
    flag = f"wb_confirm_{key}"
    if st.session_state.get(flag):
        st.warning(prompt)
        yes, no = st.columns(2)
        if yes.button(T("common.confirm"), key=f"{key}_yes", type="primary"):
            st.session_state.pop(flag)
            return True
        if no.button(T("common.cancel"), key=f"{key}_no"):
            st.session_state.pop(flag)
            st.rerun()
        return False
    if st.button(label, key=key):
        st.session_state[flag] = True
        st.rerun()
    return False
