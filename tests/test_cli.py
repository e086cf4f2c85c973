"""`python -m core` in a real subprocess: the operator's commands, `--user` with that user's rights,
and errors that are one clear line (never a traceback)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PASSWORD, ROOT
from core import auth

ADMIN_PW = "admin-password-1"


def run(home: Path, *args: str, stdin: str | None = None, password: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCETL_")}
    env.update(DOCETL_HOME_DIR=str(home), DOCETL_WB_BCRYPT_ROUNDS="4")
    if password is not None:
        env["DOCETL_WB_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "core", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, exactly one stderr line starting with `error:`, no traceback; returns the line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def as_json(result: subprocess.CompletedProcess):
    return json.loads(ok(result))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def ready(home: Path) -> Path:
    """A home with an admin, `alpha`, and a viewer and an editor in it."""
    ok(run(home, "user", "add", "Root", "--admin", "--password-stdin", stdin=ADMIN_PW + "\n"))
    ok(run(home, "namespace", "create", "alpha", "--description", "First team"))
    for name in ("vic", "eddie"):
        ok(run(home, "user", "add", name, "--password-stdin", stdin=PASSWORD + "\n"))
    ok(run(home, "member", "add", "alpha", "vic", "--role", "viewer"))
    ok(run(home, "member", "add", "alpha", "eddie", "--role", "editor"))
    return home


def audit_rows(home: Path, *extra: str) -> list[dict]:
    return as_json(run(home, "audit", "export", "--format", "json", *extra))


def test_init_creates_the_store(home: Path) -> None:
    info = as_json(run(home, "--json", "init"))
    assert info["users"] == 0
    assert Path(info["store"]) == home.resolve() / ".docetl" / "_platform" / "platform.duckdb"
    assert Path(info["store"]).is_file()
    assert as_json(run(home, "init", "--json"))["users"] == 0  # idempotent, --json after the command too


def test_first_admin_and_user_list(home: Path) -> None:
    ok(run(home, "user", "add", "Root", "--admin", "--email", "root@example.com", "--password-stdin",
           stdin=ADMIN_PW + "\n"))
    ok(run(home, "user", "add", "bob", "--display-name", "Bob B", "--password-stdin", stdin=PASSWORD + "\n"))
    listed = as_json(run(home, "user", "list", "--json"))
    assert listed == [
        {"username": "bob", "display_name": "Bob B", "email": None, "active": True, "is_platform_admin": False},
        {"username": "root", "display_name": "root", "email": "root@example.com", "active": True,
         "is_platform_admin": True}]
    plain = ok(run(home, "user", "list")).splitlines()
    assert [line.split("\t")[0] for line in plain] == ["bob", "root"]
    created = [r for r in audit_rows(home) if r["action"] == "user.create"]
    assert [(r["actor_username"], r["resource_id"]) for r in created] == [("local-operator", "bob")]
    assert any(r["action"] == "user.bootstrap_admin" and r["resource_id"] == "root" for r in audit_rows(home))


def test_password_from_stdin_only(home: Path) -> None:
    one_error(run(home, "user", "add", "bob", stdin=""), "password-stdin")
    one_error(run(home, "user", "add", "bob", "--password-stdin", stdin="short\n"), "too short")
    one_error(run(home, "user", "add", "Bad Name", "--password-stdin", stdin=PASSWORD + "\n"), "invalid username")
    assert as_json(run(home, "--json", "user", "list")) == []


def test_disable_and_reset_password(ready: Path) -> None:
    ok(run(ready, "user", "disable", "vic"))
    assert {u["username"]: u["active"] for u in as_json(run(ready, "--json", "user", "list"))}["vic"] is False
    one_error(run(ready, "--user", "vic", "namespace", "list", password=PASSWORD), "wrong username or password")
    ok(run(ready, "user", "enable", "vic"))
    temporary = ok(run(ready, "user", "reset-password", "vic")).strip()
    assert len(temporary) >= 12 and "\n" not in temporary
    one_error(run(ready, "--user", "vic", "namespace", "list", password=PASSWORD), "wrong username or password")
    # a temporary password opens nothing but the password change
    one_error(run(ready, "--user", "vic", "--json", "namespace", "list", password=temporary), "temporary password")
    again = as_json(run(ready, "--json", "user", "reset-password", "vic"))
    assert again["username"] == "vic" and again["temporary_password"] != temporary
    assert temporary not in json.dumps(audit_rows(ready))
    one_error(run(ready, "user", "disable", "ghost"), "ghost")


def test_namespaces_and_members(ready: Path) -> None:
    ok(run(ready, "namespace", "create", "beta"))
    assert (ready / ".docetl" / "beta" / "pipelines" / "configs").is_dir()
    assert [n["name"] for n in as_json(run(ready, "--json", "namespace", "list"))] == ["alpha", "beta"]
    ok(run(ready, "member", "add", "beta", "vic", "--role", "editor"))
    assert as_json(run(ready, "--user", "vic", "--json", "namespace", "list", password=PASSWORD)) == [
        {"name": "alpha", "role": "viewer", "description": "First team"},
        {"name": "beta", "role": "editor", "description": ""}]
    ok(run(ready, "member", "remove", "beta", "vic"))
    assert [n["name"] for n in as_json(run(ready, "--user", "vic", "--json", "namespace", "list",
                                           password=PASSWORD))] == ["alpha"]
    one_error(run(ready, "member", "remove", "beta", "vic"), "not a member")
    one_error(run(ready, "namespace", "create", "alpha"), "already exists")
    one_error(run(ready, "namespace", "create", "Bad/Name"), "invalid namespace name")
    one_error(run(ready, "member", "add", "gamma", "vic", "--role", "viewer"), "gamma")
    one_error(run(ready, "member", "add", "beta", "vic", "--role", "owner"), "owner")


def test_audit_export_csv_and_json(ready: Path) -> None:
    rows = audit_rows(ready)
    assert {"user.bootstrap_admin", "namespace.create", "user.create", "member.grant"} <= {r["action"] for r in rows}
    text = ok(run(ready, "audit", "export", "--format", "csv"))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in parsed] == [r["id"] for r in rows]
    assert [r["action"] for r in parsed] == [r["action"] for r in rows]
    grants = audit_rows(ready, "--action", "member.*", "--namespace", "alpha")
    assert [(r["action"], r["resource_id"], r["actor_username"]) for r in grants] == [
        ("member.grant", "eddie", "local-operator"), ("member.grant", "vic", "local-operator")]
    assert audit_rows(ready, "--actor", "nobody") == []


def test_user_flag_acts_with_that_users_permissions(ready: Path) -> None:
    one_error(run(ready, "--user", "vic", "namespace", "create", "beta", password=PASSWORD), "permission denied", "vic")
    one_error(run(ready, "--user", "vic", "user", "list", password=PASSWORD), "permission denied")
    one_error(run(ready, "--user", "vic", "member", "add", "alpha", "eddie", "--role", "namespace_admin",
                  password=PASSWORD), "permission denied")
    one_error(run(ready, "--user", "eddie", "audit", "export", password=PASSWORD), "permission denied")
    assert [n["name"] for n in as_json(run(ready, "--json", "namespace", "list"))] == ["alpha"]
    # the admin, logged in, may; and is audited under their own name
    ok(run(ready, "--user", "root", "member", "add", "alpha", "eddie", "--role", "namespace_admin",
           password=ADMIN_PW))
    grant = audit_rows(ready, "--action", "member.grant")[0]
    assert (grant["actor_username"], grant["resource_id"]) == ("root", "eddie")
    # now a namespace admin: reads alpha's audit rows only
    rows = as_json(run(ready, "--user", "eddie", "audit", "export", "--format", "json", password=PASSWORD))
    assert rows and {r["namespace"] for r in rows} == {"alpha"}


def test_user_flag_needs_the_password_in_the_environment(ready: Path) -> None:
    one_error(run(ready, "--user", "vic", "namespace", "list"), "DOCETL_WB_PASSWORD")
    one_error(run(ready, "--user", "vic", "namespace", "list", password="not-it"), "wrong username or password")
    one_error(run(ready, "--user", "nobody", "namespace", "list", password="not-it"), "wrong username or password")
    failures = [r for r in audit_rows(ready) if r["action"] == "auth.login_failed"]
    assert {r["resource_id"] for r in failures} == {"vic", auth._unknown("nobody")}


def test_unlock(ready: Path) -> None:
    for _ in range(5):
        run(ready, "--user", "vic", "namespace", "list", password="not-it")
    one_error(run(ready, "--user", "vic", "namespace", "list", password=PASSWORD), "locked")
    ok(run(ready, "user", "unlock", "vic"))
    ok(run(ready, "--user", "vic", "namespace", "list", password=PASSWORD))


@pytest.mark.parametrize("args", [(), ("user",), ("user", "frobnicate"), ("member", "add", "alpha"),
                                  ("audit", "export", "--format", "xml"), ("--bogus", "init")])
def test_usage_mistakes_are_one_line(home: Path, args: tuple[str, ...]) -> None:
    one_error(run(home, *args))


def test_damaged_store_is_one_line(home: Path) -> None:
    db = home / ".docetl" / "_platform" / "platform.duckdb"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database" * 100)
    one_error(run(home, "user", "list"), "metadata store")


def test_bad_setting_in_environment_is_one_line(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "core", "init"], capture_output=True, text=True, cwd=ROOT,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("DOCETL_")},
                                 "DOCETL_HOME_DIR": str(home), "DOCETL_WB_LOGIN_MAX_FAILURES": "lots"},
                            timeout=120)
    one_error(result, "login_max_failures", "lots")


def test_settings_set_and_reset_from_the_command_line(tmp_path: Path) -> None:
    """The way back when an override went wrong: the operator resets it without the app."""
    env = {**os.environ, "DOCETL_HOME_DIR": str(tmp_path), "DOCETL_WB_BCRYPT_ROUNDS": "4"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    assert cli("settings", "set", "login_max_failures", "3").returncode == 0
    listed = json.loads(cli("settings", "list", "--json").stdout)
    assert {r["key"]: r["effective"] for r in listed}["login_max_failures"] == 3
    bad = cli("settings", "set", "login_failure_window_minutes", "1000000000000")
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert cli("settings", "reset", "login_max_failures").returncode == 0
    listed = json.loads(cli("settings", "list", "--json").stdout)
    assert {r["key"]: r["effective"] for r in listed}["login_max_failures"] == 5


def test_dataset_preview_and_import_speak_json(tmp_path: Path) -> None:
    env = {**os.environ, "DOCETL_HOME_DIR": str(tmp_path / "home"), "DOCETL_WB_BCRYPT_ROUNDS": "4"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    data = tmp_path / "sales.csv"
    data.write_text("报表\n\n地区,金额\n华东,100\n华北,200\n", encoding="utf-8")
    assert cli("namespace", "create", "demo").returncode == 0
    seen = json.loads(cli("dataset", "preview", str(data), "--json").stdout)
    assert set(seen) == {"format", "sheets", "sheet", "header_row", "columns", "rows", "total_rows", "warnings"}
    assert seen["header_row"] == 3 and seen["rows"][0] == {"地区": "华东", "金额": 100}
    done = json.loads(cli("dataset", "import", str(data), "--namespace", "demo", "--json").stdout)
    assert done["status"] == "ready" and done["row_count"] == 2 and Path(done["path"]).is_file()
    assert set(done) == {"id", "name", "status", "row_count", "columns", "path", "error"}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for args in (("dataset", "preview", str(bad), "--json"),
                 ("dataset", "import", str(bad), "--namespace", "demo", "--json")):
        result = cli(*args)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and "list of objects" in json.loads(lines[0])["error"]
    for args in (("dataset", "preview", str(data), "--header-row", "-1", "--json"),  # usage: JSON too, exit 2
                 ("dataset", "import", str(data), "--namespace", "demo", "--end-row", "0", "--json"),
                 ("dataset", "preview", str(data), "--start-row", "5", "--end-row", "2", "--json")):
        result = cli(*args)
        assert result.returncode in (1, 2) and "Traceback" not in result.stdout + result.stderr, args
        [line] = result.stdout.strip().splitlines()
        assert "at least 1" in json.loads(line)["error"] or "before the start row" in json.loads(line)["error"]
