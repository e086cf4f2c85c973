"""Audit log: what is recorded, query filters, CSV/JSON export, atomicity with the change, scrubbing."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from conftest import PASSWORD
from core import audit, auth, namespaces, users
from core.errors import AuthenticationFailed, PermissionDenied, ValidationError
from core.principal import Principal
from core.store import Store

T = datetime(2031, 1, 1, tzinfo=timezone.utc)


def h(hours: float) -> datetime:
    return T + timedelta(hours=hours)


@pytest.fixture
def history(store: Store, admin: Principal) -> Principal:
    """A known sequence of events at known times (after the fixture's own bootstrap rows)."""
    namespaces.create(store, admin, "alpha", now=h(1))
    namespaces.create(store, admin, "beta", now=h(2))
    users.create(store, admin, "eve", PASSWORD, now=h(3))
    namespaces.add_member(store, admin, "alpha", "eve", "namespace_admin", now=h(4))
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(store, "eve", "not-her-password", client=Principal.anonymous(ip="192.0.2.1"), now=h(5))
    eve = auth.authenticate(store, "eve", PASSWORD, client=Principal.anonymous(ip="192.0.2.1"), now=h(6)).principal
    namespaces.add_member(store, admin, "beta", "eve", "viewer", now=h(7))
    return eve


def actions(rows: list[dict]) -> list[tuple[str, str | None]]:
    return [(r["action"], r["resource_id"]) for r in rows]


def test_time_range_is_since_inclusive_until_exclusive(store: Store, admin: Principal, history) -> None:
    rows = audit.query(store, admin, since=h(2), until=h(4))
    assert actions(rows) == [("user.create", "eve"), ("namespace.create", "beta")]
    assert [r["occurred_at"] for r in rows] == [h(3), h(2)]


def test_filter_by_actor(store: Store, admin: Principal, history) -> None:
    assert actions(audit.query(store, admin, actor="eve")) == [("auth.login", "eve"), ("auth.login_failed", "eve")]
    assert audit.query(store, admin, actor="nobody") == []


def test_filter_by_action_with_wildcard(store: Store, admin: Principal, history) -> None:
    assert actions(audit.query(store, admin, action="auth.*", since=T)) == [
        ("auth.login", "eve"), ("auth.login_failed", "eve")]
    assert actions(audit.query(store, admin, action="member.grant")) == [
        ("member.grant", "eve"), ("member.grant", "eve")]
    assert {r["action"] for r in audit.query(store, admin, action="*.create")} == {
        "namespace.create", "user.create"}


def test_filter_by_namespace_and_success(store: Store, admin: Principal, history) -> None:
    assert actions(audit.query(store, admin, namespace="alpha")) == [
        ("member.grant", "eve"), ("namespace.create", "alpha")]
    failed = audit.query(store, admin, success=False)
    assert actions(failed) == [("auth.login_failed", "eve")]
    assert failed[0]["ip"] == "192.0.2.1"
    assert all(r["success"] for r in audit.query(store, admin, success=True))
    combined = audit.query(store, admin, actor="admin", namespace="beta", action="member.*")
    assert [json.loads(r["detail"]) for r in combined] == [{"before": None, "after": "viewer"}]


def test_newest_first_with_limit_and_offset(store: Store, admin: Principal, history) -> None:
    everything = audit.query(store, admin)
    assert [r["occurred_at"] for r in everything] == sorted((r["occurred_at"] for r in everything), reverse=True)
    assert audit.query(store, admin, limit=2, offset=1) == everything[1:3]
    for bad in (0, -1, 100_001):
        with pytest.raises(ValidationError) as caught:
            audit.query(store, admin, limit=bad)
        assert caught.value.key == "error.limit"


def test_namespace_admin_reads_only_own_namespaces(store: Store, admin: Principal, history) -> None:
    eve = history  # namespace admin of alpha, viewer of beta
    rows = audit.query(store, eve)
    assert {r["namespace"] for r in rows} == {"alpha"}
    with pytest.raises(PermissionDenied):
        audit.query(store, eve, namespace="beta")
    assert actions(audit.query(store, eve, namespace="alpha", action="namespace.*")) == [("namespace.create", "alpha")]


def test_rows_carry_every_seed_field(store: Store, admin: Principal) -> None:
    client = replace(admin, ip="198.51.100.4", user_agent="Mozilla/5.0 test", request_id="req-42")
    namespaces.create(store, client, "alpha", now=h(0))
    row = audit.query(store, admin, action="namespace.create")[0]
    assert tuple(row) == audit.COLUMNS
    assert {k: row[k] for k in audit.COLUMNS if k not in ("id", "detail")} == {
        "occurred_at": h(0), "actor_user_id": admin.user_id, "actor_username": "admin",
        "action": "namespace.create", "resource_type": "namespace", "resource_id": "alpha", "namespace": "alpha",
        "success": True, "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 test", "request_id": "req-42"}


# -- export ---------------------------------------------------------------------------------------------
@pytest.fixture
def awkward(store: Store, admin: Principal) -> list[dict]:
    """Rows whose detail holds Chinese text, commas, quotes and a newline."""
    namespaces.create(store, admin, "alpha", now=h(0))
    users.create(store, admin, "wang", PASSWORD, now=h(1))
    wang = auth.authenticate(store, "wang", PASSWORD, now=h(2)).principal
    users.set_preferences(store, wang, display_name='王 "小明", 测试\n第二行', now=h(3))
    return audit.query(store, admin, since=h(0))


def test_json_export_round_trip(awkward: list[dict]) -> None:
    parsed = json.loads(audit.export(awkward, "json"))
    assert len(parsed) == len(awkward) == 4
    for original, back in zip(awkward, parsed):
        assert list(back) == list(audit.COLUMNS)
        assert datetime.fromisoformat(back["occurred_at"]) == original["occurred_at"]
        assert {k: v for k, v in back.items() if k != "occurred_at"} == {
            k: v for k, v in original.items() if k != "occurred_at"}
    assert json.loads(parsed[0]["detail"])["display_name"]["after"] == '王 "小明", 测试\n第二行'


def test_csv_export_round_trip(awkward: list[dict]) -> None:
    text = audit.export(awkward, "csv")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == audit.COLUMNS
    back = list(reader)
    assert len(back) == len(awkward)
    for original, row in zip(awkward, back):
        assert int(row["id"]) == original["id"]
        assert datetime.fromisoformat(row["occurred_at"]) == original["occurred_at"]
        assert row["action"] == original["action"]
        assert row["success"] == str(original["success"])
        assert row["detail"] == (original["detail"] or "")
    assert json.loads(back[0]["detail"])["display_name"]["after"] == '王 "小明", 测试\n第二行'


def test_export_of_nothing_and_unknown_format(store: Store, admin: Principal) -> None:
    assert json.loads(audit.export([], "json")) == []
    assert list(csv.reader(io.StringIO(audit.export([], "csv")))) == [list(audit.COLUMNS)]
    with pytest.raises(ValidationError) as caught:
        audit.export([], "xml")
    assert caught.value.key == "error.export_format"


# -- atomic with the change --------------------------------------------------------------------------------
def test_failure_after_the_audit_insert_rolls_back_change_and_audit(store: Store, admin: Principal) -> None:
    users.create(store, admin, "eve", PASSWORD)
    audit_count = store.execute("SELECT count(*) AS n FROM audit_logs")[0]["n"]
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as tx:
            tx.execute_write("UPDATE users SET display_name = 'Changed' WHERE username = 'eve'")
            audit.record(tx, admin, "user.rename", resource_type="user", resource_id="eve")
            assert tx.scalar("SELECT count(*) FROM audit_logs WHERE action = 'user.rename'") == 1
            raise RuntimeError("boom")
    assert store.execute("SELECT display_name FROM users WHERE username = 'eve'")[0]["display_name"] == "eve"
    assert store.execute("SELECT count(*) AS n FROM audit_logs")[0]["n"] == audit_count


def test_a_failing_audit_write_undoes_the_change(store: Store, admin: Principal) -> None:
    """users.create inserts the user, then the audit row; when the audit insert fails, no user remains."""
    unrecordable = replace(admin, ip=object())  # the audit insert cannot store this client address
    with pytest.raises(duckdb.Error):
        users.create(store, unrecordable, "eve", PASSWORD)
    assert store.execute("SELECT count(*) AS n FROM users WHERE username = 'eve'")[0]["n"] == 0
    with pytest.raises(duckdb.Error):
        namespaces.create(store, unrecordable, "alpha")
    assert namespaces.list_visible(store, admin) == []


def test_a_refused_change_leaves_no_success_row(store: Store, admin: Principal) -> None:
    before = audit.query(store, admin)
    with pytest.raises(ValidationError):
        users.set_active(store, admin, "admin", False)
    assert audit.query(store, admin) == before


def test_record_now(store: Store, admin: Principal) -> None:
    audit.record_now(store, admin, "sql.query", namespace="alpha", success=False, detail={"error": "timeout"},
                     now=h(0))
    row = audit.query(store, admin, action="sql.query")[0]
    assert (row["occurred_at"], row["namespace"], row["success"], json.loads(row["detail"])) == (
        h(0), "alpha", False, {"error": "timeout"})


# -- scrubbing ------------------------------------------------------------------------------------------
def test_scrub_hides_secret_looking_keys_at_any_depth() -> None:
    detail = {"user": "bob", "password": "p1", "New_Password": "p2", "API_KEY": "k", "openai_apikey": "k2",
              "nested": {"token": "t", "ok": 1, "deeper": [{"cookie_key": "c", "name": "x"}]},
              "password_hash": "$2b$12$abc", "client_secret": "s", "items": ["plain", 2]}
    assert audit.scrub(detail) == {
        "user": "bob", "password": "***", "New_Password": "***", "API_KEY": "***", "openai_apikey": "***",
        "nested": {"token": "***", "ok": 1, "deeper": [{"cookie_key": "***", "name": "x"}]},
        "password_hash": "***", "client_secret": "***", "items": ["plain", 2]}
    assert audit.scrub("plain") == "plain"
    assert audit.scrub(None) is None


def test_recorded_details_are_scrubbed(store: Store, admin: Principal) -> None:
    audit.record_now(store, admin, "settings.llm", detail={"provider": "openai", "api_key": "sk-live-123456",
                                                           "headers": {"Authorization_token": "Bearer xyz"}})
    text = json.dumps(store.execute("SELECT * FROM audit_logs"), default=str)
    assert "sk-live-123456" not in text and "Bearer xyz" not in text
    assert json.loads(audit.query(store, admin, action="settings.llm")[0]["detail"])["provider"] == "openai"


def test_action_filter_treats_underscore_and_percent_literally(store, admin) -> None:
    with store.transaction() as tx:
        for action in ("user.reset_password", "user.resetXpassword", "user.reset%password"):
            audit.record(tx, admin, action)
    assert [r["action"] for r in audit.query(store, admin, action="user.reset_password")] == ["user.reset_password"]
    assert [r["action"] for r in audit.query(store, admin, action="user.reset%password")] == ["user.reset%password"]
    assert len(audit.query(store, admin, action="user.reset*")) == 3
