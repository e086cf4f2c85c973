"""Audit log: filter, read, export (platform admins: all; namespace admins: their namespaces)."""
from __future__ import annotations

from datetime import datetime, time, timedelta

import streamlit as st

import shell
from core import audit, clock
from core.errors import WorkbenchError
from shell import T

ctx = shell.current()
st.title(T("audit.title"))
zone = clock.zone(ctx.tz)
today = datetime.now(zone).date()
c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
period = c1.date_input(T("audit.period"), value=(today - timedelta(days=7), today), key="au_period")
actor = c2.text_input(T("audit.actor"), key="au_actor")
action = c3.text_input(T("audit.action"), key="au_action", help=T("audit.action_help"))
allowed = audit.readable_namespaces(ctx.principal, [ns["name"] for ns in shell.visible_namespaces(ctx)])
namespace = shell.choose(c4, T("shell.namespace"), {None: T("audit.all"), **{n: n for n in allowed}}, "au_ns")
success = shell.choose(c5, T("audit.success"), {None: T("audit.all"), True: T("audit.ok"), False: T("audit.failed")},
                       "au_ok")

start, end = (period if isinstance(period, tuple) and len(period) == 2 else (period[0], period[0])) if period else (today, today)
try:
    rows = audit.query(ctx.store, ctx.principal, since=datetime.combine(start, time.min, zone),
                       until=datetime.combine(end + timedelta(days=1), time.min, zone), actor=actor.strip().lower() or None,
                       action=action.strip() or None, namespace=namespace, success=success, limit=5000)
except WorkbenchError as exc:
    shell.show_error(exc)
    st.stop()

st.caption(T("audit.count", n=len(rows)))
st.dataframe([{T("audit.time"): shell.fmt_time(r["occurred_at"]), T("audit.actor"): r["actor_username"] or "",
               T("audit.action"): r["action"], T("audit.resource"): f"{r['resource_type'] or ''}:{r['resource_id'] or ''}",
               T("shell.namespace"): r["namespace"] or "", T("audit.success"): "✓" if r["success"] else "✗",
               T("audit.ip"): r["ip"] or "", T("audit.detail"): r["detail"] or ""} for r in rows],
             hide_index=True, width="stretch")
d1, d2 = st.columns(2)
d1.download_button(T("audit.export_csv"), audit.export(rows, "csv"), file_name="audit.csv", mime="text/csv",
                   key="au_csv")
d2.download_button(T("audit.export_json"), audit.export(rows, "json"), file_name="audit.json",
                   mime="application/json", key="au_json")
