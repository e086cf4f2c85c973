"""The notebook entry: `Workbench.open()` acts as the local operator, `Workbench.login()` as a user
with exactly that user's permissions; tables come back as polars DataFrames."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import PASSWORD
from core import Workbench, audit, settings
from core.errors import AuthenticationFailed, LockedOut, PermissionDenied


@pytest.fixture
def nb_home(tmp_path: Path) -> Path:
    """A home given explicitly (not the one in DOCETL_HOME_DIR)."""
    path = tmp_path / "notebook-home"
    path.mkdir()
    return path


@pytest.fixture
def wb(nb_home: Path) -> Workbench:
    wb = Workbench.open(home=nb_home)
    wb.create_user("root", PASSWORD, is_platform_admin=True)
    wb.create_namespace("alpha", "Team alpha")
    wb.create_namespace("beta")
    for name, ns, role in (("vic", "alpha", "viewer"), ("nina", "alpha", "namespace_admin"),
                           ("otto", "beta", "editor")):
        wb.create_user(name, PASSWORD)
        wb.add_member(ns, name, role)
    return wb


def test_open_acts_as_the_operator_in_the_given_home(wb: Workbench, nb_home: Path, home: Path) -> None:
    assert wb.principal.is_operator
    assert wb.store.config.home == nb_home.resolve()
    assert (nb_home / ".docetl" / "_platform" / "platform.duckdb").is_file()
    assert not (home / ".docetl" / "_platform" / "platform.duckdb").exists()
    assert "local-operator" in repr(wb)
    log = wb.audit(action="namespace.create")
    assert isinstance(log, pl.DataFrame)
    assert log["actor_username"].to_list() == ["local-operator", "local-operator"]


def test_tables_are_dataframes(wb: Workbench) -> None:
    people = wb.users()
    assert isinstance(people, pl.DataFrame)
    assert sorted(people["username"].to_list()) == ["nina", "otto", "root", "vic"]
    assert "password_hash" not in people.columns
    spaces = wb.namespaces()
    assert spaces["name"].to_list() == ["alpha", "beta"]
    assert spaces.filter(pl.col("name") == "alpha")["description"].item() == "Team alpha"
    members = wb.members("alpha")
    assert dict(zip(members["username"], members["role"])) == {"nina": "namespace_admin", "vic": "viewer"}
    assert isinstance(wb.settings(), pl.DataFrame) and "login_max_failures" in wb.settings()["key"].to_list()
    empty = wb.audit(actor="nobody")
    assert empty.height == 0 and tuple(empty.columns) == audit.COLUMNS


def test_operator_manages_accounts(wb: Workbench) -> None:
    wb.disable_user("vic")
    with pytest.raises(AuthenticationFailed):
        Workbench.login("vic", PASSWORD, home=wb.store.config.home)
    wb.enable_user("vic")
    temporary = wb.reset_password("vic")
    vic = Workbench.login("vic", temporary, home=wb.store.config.home)
    assert vic.principal.username == "vic"
    wb.remove_member("alpha", "vic")
    assert "vic" not in wb.members("alpha")["username"].to_list()


def test_login_enforces_the_users_permissions(wb: Workbench) -> None:
    home = wb.store.config.home
    vic = Workbench.login("vic", PASSWORD, home=home)
    assert not vic.principal.is_operator and "vic" in repr(vic)
    assert vic.namespaces()["name"].to_list() == ["alpha"]
    assert vic.members("alpha")["username"].to_list() == ["nina", "vic"]
    def state() -> list[list[dict]]:
        return [wb.users().sort("username").to_dicts(), wb.namespaces().to_dicts(), wb.members("alpha").to_dicts()]

    before = state()
    for attempt in (vic.users, vic.settings, vic.audit, lambda: vic.create_namespace("gamma"),
                    lambda: vic.create_user("mallory", PASSWORD), lambda: vic.add_member("alpha", "otto", "viewer"),
                    lambda: vic.remove_member("alpha", "nina"), lambda: vic.members("beta"),
                    lambda: vic.reset_password("nina"), lambda: vic.disable_user("nina")):
        with pytest.raises(PermissionDenied):
            attempt()
    assert state() == before


def test_namespace_admin_in_a_notebook(wb: Workbench) -> None:
    nina = Workbench.login("nina", PASSWORD, home=wb.store.config.home)
    nina.add_member("alpha", "otto", "editor")
    assert wb.members("alpha").filter(pl.col("username") == "otto")["role"].item() == "editor"
    log = nina.audit()
    assert set(log["namespace"].to_list()) == {"alpha"}
    with pytest.raises(PermissionDenied):
        nina.add_member("beta", "vic", "viewer")
    with pytest.raises(PermissionDenied):
        nina.users()


def test_platform_admin_login(wb: Workbench) -> None:
    root = Workbench.login("root", PASSWORD, home=wb.store.config.home)
    root.create_user("newbie", PASSWORD)
    assert "newbie" in wb.users()["username"].to_list()
    assert root.audit(action="user.create")["actor_username"].to_list()[0] == "root"


def test_login_has_the_same_lockout_as_the_login_page(wb: Workbench) -> None:
    home = wb.store.config.home
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            Workbench.login("vic", "not-the-password", home=home)
    with pytest.raises(LockedOut):
        Workbench.login("vic", "not-the-password", home=home)
    with pytest.raises(LockedOut):
        Workbench.login("vic", PASSWORD, home=home)
    assert wb.audit(action="auth.lockout")["resource_id"].to_list() == ["vic"]


def test_open_from_environment(home: Path) -> None:
    """Without `home`, DOCETL_HOME_DIR decides (set by the fixture)."""
    wb = Workbench.open()
    assert wb.store.config.home == home.resolve()
    wb.create_namespace("alpha")
    assert (home / ".docetl" / "alpha" / "files").is_dir()


def test_settings_table_separates_environment_and_override(nb_home: Path) -> None:
    environ = {"DOCETL_HOME_DIR": str(nb_home), "DOCETL_WB_BCRYPT_ROUNDS": "4", "DOCETL_WB_LOGIN_MAX_FAILURES": "9"}
    first = Workbench.open(environ=environ)
    settings.update(first.store, first.principal, "login_max_failures", 4)
    wb = Workbench.open(environ=environ)
    row = wb.settings().filter(pl.col("key") == "login_max_failures").to_dicts()[0]
    assert (row["default"], row["environment"], row["override"], row["effective"]) == ("5", "9", "4", "4")
    assert wb.store.config["login_max_failures"] == 4


def test_a_notebook_session_follows_changes_made_elsewhere(wb: Workbench, nb_home: Path) -> None:
    """Rights are re-checked on every call: a revoked membership or a disabled account applies at once."""
    from core.errors import WorkbenchError

    nina = Workbench.login("nina", PASSWORD, home=nb_home)
    assert "alpha" in nina.namespaces()["name"].to_list()
    wb.remove_member("alpha", "nina")
    assert nina.namespaces().is_empty()
    with pytest.raises(PermissionDenied):
        nina.members("alpha")
    wb.disable_user("nina")
    with pytest.raises(WorkbenchError) as ended:
        nina.namespaces()
    assert ended.value.key == "auth.error.session_ended"


def test_a_temporary_password_allows_nothing_but_changing_it(wb: Workbench, nb_home: Path) -> None:
    temporary = wb.reset_password("nina")
    nina = Workbench.login("nina", temporary, home=nb_home)
    with pytest.raises(PermissionDenied) as caught:
        nina.members("alpha")
    assert caught.value.key == "auth.error.must_change_password"
    assert nina.namespaces().is_empty()
    nina.change_password(temporary, "nina-new-password-1")
    assert "alpha" in nina.namespaces()["name"].to_list()
    assert not nina.members("alpha").is_empty()


def test_preview_and_import_from_a_notebook(wb: Workbench, tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("成绩单\n\n姓名,分数\n张三,90\n李四,85\n", encoding="utf-8")
    seen = wb.preview_excel(path)
    assert seen["header_row"] == 3 and seen["total_rows"] == 2
    assert "张三" in seen._repr_html_() and "header row 3" in seen._repr_html_()
    done = wb.import_dataset(path, "alpha", name="scores")
    assert done["ingest_status"] == "ready" and done["row_count"] == 2
    assert wb.datasets("alpha")["name"].to_list() == ["scores"]


def _sample_orders(wb: Workbench) -> dict:
    from conftest import ROOT

    done = wb.import_dataset(ROOT / "data" / "templates" / "sample_orders.xlsx", "alpha", name="orders")
    assert done["ingest_status"] == "ready"
    return done


@pytest.mark.timeout(300)
def test_run_in_process_from_a_notebook(wb: Workbench, nb_home: Path) -> None:
    """One real run, in a child Python (docetl changes process-global state: never in pytest's own)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    _sample_orders(wb)
    script = ("import json, sys\n"
              "from core import Workbench\n"
              f"wb = Workbench.login('nina', {PASSWORD!r}, home={str(nb_home)!r})\n"
              "result = wb.run('offline_demo', input='orders', in_process=True)\n"
              "print('RESULT ' + json.dumps(result))\n")
    template = ROOT / "data" / "templates" / "offline_demo.yaml"
    wb.run(str(template), "alpha", input="orders", wait=False)  # registers `offline_demo`, stays queued
    env = {**os.environ, "DOCETL_WB_AUTOSTART_SERVICE": "0"}
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=240)
    assert child.returncode == 0, child.stderr
    result = json.loads([line for line in child.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert set(result) == {"run_id", "status", "cost", "output_path", "output_rows", "error"}
    assert result["status"] == "completed" and result["error"] is None

    done = wb.runs("alpha", status="completed")
    assert isinstance(done, pl.DataFrame)
    assert done.select("id", "trigger", "created_by").rows() == [(result["run_id"], "notebook", "nina")]
    info = wb.run_info(result["run_id"], log=True)
    assert info["output_rows"] == result["output_rows"] and "started by nina" in info["log"]
    output = wb.run_output(result["run_id"])
    assert isinstance(output, pl.DataFrame) and output.height == result["output_rows"]
    assert {"region", "total_amount"} <= set(output.columns)
    assert wb.pipelines("alpha").select("name", "last_run_status").rows() == [("offline_demo", "completed")]


def test_runs_from_a_notebook_queue_list_and_cancel(wb: Workbench, nb_home: Path) -> None:
    from conftest import ROOT

    from core.errors import NotFound, ValidationError

    assert wb.runs().is_empty() and "status" in wb.runs().columns
    assert wb.pipelines("alpha").is_empty()
    _sample_orders(wb)
    template = str(ROOT / "data" / "templates" / "offline_demo.yaml")
    queued = wb.run(template, "alpha", input="orders", sample=10, wait=False)
    assert queued["status"] == "queued"
    nina = Workbench.login("nina", PASSWORD, home=nb_home)
    other = nina.run("offline_demo", input="orders", wait=False)  # her only namespace is the default
    table = wb.runs()
    assert table["id"].to_list() == [other["run_id"], queued["run_id"]]
    assert wb.runs(limit=1, offset=1)["id"].to_list() == [queued["run_id"]]  # one page back
    assert set(table["trigger"]) == {"notebook"} and set(table["status"]) == {"queued"}
    assert wb.run_info(queued["run_id"])["sample_rows"] == 10

    vic = Workbench.login("vic", PASSWORD, home=nb_home)
    assert vic.runs("alpha").height == 2 and vic.pipelines("alpha").height == 1
    for attempt in (lambda: vic.run("offline_demo", "alpha", wait=False), lambda: vic.cancel(queued["run_id"])):
        with pytest.raises(PermissionDenied):
            attempt()
    otto = Workbench.login("otto", PASSWORD, home=nb_home)
    assert otto.runs().is_empty()
    with pytest.raises(PermissionDenied):
        otto.run_info(queued["run_id"])

    assert wb.cancel(queued["run_id"])["status"] == "cancelled"
    assert wb.runs(status="cancelled")["id"].to_list() == [queued["run_id"]]
    with pytest.raises(ValidationError) as refused:
        wb.run_output(queued["run_id"])
    assert refused.value.key == "run.error.no_output"
    with pytest.raises(ValidationError) as which:
        wb.run("offline_demo", wait=False)  # the operator sees two namespaces: say which
    assert "alpha, beta" in str(which.value)
    with pytest.raises(NotFound):
        wb.run("no_such_pipeline", "alpha", wait=False)
