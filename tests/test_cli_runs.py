"""`python -m core run` and `runs list|show|cancel` in a real subprocess: the printed contract, exit
statuses (0 completed, 1 failed or refused, 2 usage), and `{"error": ...}` lines with --json.

Real docetl runs are few (each takes 5-10 s) and always in a child process: docetl changes
process-global state, so it is never imported into the pytest process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PASSWORD, ROOT
from core.cli import progress_text

pytestmark = pytest.mark.timeout(300)
TEMPLATES = ROOT / "data" / "templates"
SUMMARY_KEYS = {"run_id", "status", "cost", "output_path", "output_rows", "error"}


def cli(home: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCETL_")}
    env.update(DOCETL_HOME_DIR=str(home), DOCETL_WB_BCRYPT_ROUNDS="4", DOCETL_WB_AUTOSTART_SERVICE="0")
    if password is not None:
        env["DOCETL_WB_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, timeout=240)


def ok_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def json_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, one `{"error": ...}` line on stdout, no traceback; returns the message."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    message = json.loads(lines[0])["error"]
    for word in words:
        assert word.lower() in message.lower(), message
    return message


@pytest.fixture
def team(tmp_path: Path) -> Path:
    """A home with namespace `alpha`, a viewer `vic` and an editor `eddie` in it, and the sample orders."""
    home = tmp_path / "home"
    home.mkdir()
    assert cli(home, "namespace", "create", "alpha").returncode == 0
    for name, role in (("vic", "viewer"), ("eddie", "editor")):
        made = subprocess.run([sys.executable, "-m", "core", "user", "add", name, "--password-stdin"],
                              input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "4"})
        assert made.returncode == 0, made.stderr
        assert cli(home, "member", "add", "alpha", name, "--role", role).returncode == 0
    done = ok_json(cli(home, "dataset", "import", str(TEMPLATES / "sample_orders.xlsx"), "--namespace", "alpha",
                       "--name", "orders", "--json"))
    assert done["status"] == "ready"
    return home


@pytest.fixture
def demo_yaml(tmp_path: Path) -> Path:
    """The offline template under a file name of its own (the pipeline it registers is `orders_demo`)."""
    path = tmp_path / "orders_demo.yaml"
    path.write_text((TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_run_in_process_from_a_yaml_file_prints_the_contract(team: Path, demo_yaml: Path) -> None:
    """One real docetl run: the YAML is registered on the fly, the output saved as a dataset."""
    result = cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--input", "orders", "--save-output", "totals",
                 "--in-process", "--wait", "--json")
    summary = ok_json(result)
    assert set(summary) == SUMMARY_KEYS
    assert summary["status"] == "completed" and summary["error"] is None and summary["cost"] == 0.0
    rows = json.loads(Path(summary["output_path"]).read_text(encoding="utf-8"))
    assert summary["output_rows"] == len(rows) > 0 and all("total_amount" in r for r in rows)

    listed = ok_json(cli(team, "pipeline", "list", "--namespace", "alpha", "--json"))
    assert [(p["name"], p["last_run_status"]) for p in listed] == [("orders_demo", "completed")]
    assert "totals" in [d["name"] for d in ok_json(cli(team, "dataset", "list", "--namespace", "alpha", "--json"))]

    shown = ok_json(cli(team, "runs", "show", summary["run_id"], "--log", "--json"))
    assert (shown["status"], shown["trigger"], shown["pipeline"]) == ("completed", "cli", "orders_demo")
    assert shown["input_rows"] == 200 and shown["output_dataset_id"] and shown["warnings"] == []
    assert shown["progress"]["finished"] and {op["status"] for op in shown["progress"]["ops"]} == {"done"}
    assert "started by local-operator" in shown["log"]
    # what docetl printed went to the run log, not to the JSON on stdout
    assert "Execution Summary" in Path(shown["log_path"]).read_text(encoding="utf-8")

    plain = cli(team, "runs", "show", summary["run_id"])
    assert plain.returncode == 0
    assert any(line.split() == ["status:", "completed"] for line in plain.stdout.splitlines())
    assert "progress: completed: clean/normalize_order 200/200" in plain.stdout


def test_a_failed_run_exits_1_with_its_error_in_words(team: Path, demo_yaml: Path, tmp_path: Path) -> None:
    """A run whose input import failed stops before docetl is imported: exit 1, aligned lines.
    A run with no input at all is refused before it is queued."""
    refused = cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--in-process", "--json")
    json_error(refused, "input dataset")
    bad = tmp_path / "broken.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    assert cli(team, "dataset", "import", str(bad), "--namespace", "alpha", "--json").returncode == 1
    result = cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--input", "broken", "--in-process")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.strip().splitlines())
    assert set(lines) == SUMMARY_KEYS
    assert lines["status"].strip() == "failed" and lines["output_path"].strip() == "-"
    assert "is not ready" in lines["error"]
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in result.stdout.strip().splitlines()}
    assert len(starts) == 1  # the values line up
    failed = ok_json(cli(team, "runs", "list", "--status", "failed", "--json"))
    assert [r["error"] for r in failed] == [lines["error"].strip()]


def test_without_wait_the_run_is_queued(team: Path, demo_yaml: Path) -> None:
    queued = cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--input", "orders", "--sample", "5")
    assert queued.returncode == 0, queued.stderr
    lines = queued.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["run_id:", "status:"] and lines[1].split()[1] == "queued"
    assert "no scheduler service is running" in queued.stderr  # autostart is off: say why it waits
    again = ok_json(cli(team, "run", "orders_demo", "--namespace", "alpha", "--input", "orders", "--json"))
    assert again["status"] == "queued" and set(again) == {"run_id", "status"}
    shown = ok_json(cli(team, "runs", "show", again["run_id"], "--json"))
    assert (shown["status"], shown["sample_rows"], shown["progress"], shown["error"]) == ("queued", None, None, None)


def test_runs_list_show_and_cancel_queued_runs(team: Path, demo_yaml: Path) -> None:
    first = ok_json(cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--input", "orders", "--json"))
    second = ok_json(cli(team, "--user", "eddie", "run", "orders_demo", "--namespace", "alpha", "--input", "orders",
                         "--sample", "3", "--json", password=PASSWORD))
    listed = ok_json(cli(team, "runs", "list", "--json"))
    assert [r["id"] for r in listed] == [second["run_id"], first["run_id"]]  # newest first
    assert {(r["status"], r["trigger"], r["pipeline"]) for r in listed} == {("queued", "cli", "orders_demo")}
    assert [r["created_by"] for r in listed] == ["eddie", "local-operator"]
    assert len(ok_json(cli(team, "runs", "list", "--namespace", "alpha", "--limit", "1", "--json"))) == 1
    older = ok_json(cli(team, "runs", "list", "--limit", "1", "--offset", "1", "--json"))
    assert [r["id"] for r in older] == [first["run_id"]]  # the next page back
    assert "at least 0" in cli(team, "runs", "list", "--offset", "-1").stderr
    assert ok_json(cli(team, "runs", "list", "--pipeline", "nothing", "--json")) == []
    # a viewer sees runs but may not cancel them
    seen = ok_json(cli(team, "--user", "vic", "runs", "list", "--json", password=PASSWORD))
    assert len(seen) == 2
    json_error(cli(team, "--user", "vic", "runs", "cancel", first["run_id"], "--json", password=PASSWORD),
               "permission denied")

    cancelled = cli(team, "runs", "cancel", first["run_id"])
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"cancelled {first['run_id']}"
    assert "already ended" in cli(team, "runs", "cancel", first["run_id"]).stdout
    shown = ok_json(cli(team, "runs", "show", first["run_id"], "--json"))
    assert shown["status"] == "cancelled" and shown["error"] == "Cancelled by local-operator before it started."
    assert [r["id"] for r in ok_json(cli(team, "runs", "list", "--status", "queued", "--json"))] == [second["run_id"]]
    plain = cli(team, "runs", "list").stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in plain] == [second["run_id"], first["run_id"]]
    assert plain[1].split("\t")[3] == "cancelled"


def test_json_errors_for_run_and_runs(team: Path, demo_yaml: Path) -> None:
    json_error(cli(team, "run", "missing_pipeline", "--namespace", "alpha", "--json"), "no pipeline",
               "missing_pipeline")
    json_error(cli(team, "run", str(demo_yaml), "--namespace", "alpha", "--input", "no_such_data", "--json"),
               "no dataset", "no_such_data")
    json_error(cli(team, "--user", "vic", "run", str(demo_yaml), "--namespace", "alpha", "--json", password=PASSWORD),
               "permission denied", "vic")
    json_error(cli(team, "run", str(demo_yaml), "--namespace", "nowhere", "--json"))
    json_error(cli(team, "runs", "show", "0123456789abcdef", "--json"), "no run", "0123456789abcdef")
    json_error(cli(team, "runs", "cancel", "0123456789abcdef", "--json"), "no run")
    json_error(cli(team, "--user", "vic", "runs", "list", "--json", password="wrong-password"), "wrong username")
    assert ok_json(cli(team, "runs", "list", "--json")) == []  # nothing was queued by the refused attempts
    # without --json: one `error:` line on stderr
    plain = cli(team, "run", "missing_pipeline", "--namespace", "alpha")
    assert plain.returncode == 1 and plain.stdout == ""
    assert len(plain.stderr.splitlines()) == 1 and plain.stderr.startswith("error: No pipeline")


@pytest.mark.parametrize("args", [("run", "x", "--namespace", "alpha", "--sample", "0"),
                                  ("run", "x", "--namespace", "alpha", "--sample", "many"),
                                  ("run", "x"), ("runs", "list", "--status", "done"), ("runs", "show"),
                                  ("pipeline", "list"), ("dataset", "list")])
def test_usage_mistakes_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = cli(tmp_path, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error:")


def test_dataset_and_pipeline_lists(team: Path) -> None:
    assert ok_json(cli(team, "pipeline", "list", "--namespace", "alpha", "--json")) == []
    data = ok_json(cli(team, "--user", "vic", "dataset", "list", "--namespace", "alpha", "--json", password=PASSWORD))
    assert [(d["name"], d["ingest_status"], d["row_count"]) for d in data] == [("orders", "ready", 200)]
    plain = cli(team, "dataset", "list", "--namespace", "alpha").stdout.strip().split("\t")
    assert plain[:5] == [data[0]["id"], "orders", "user_upload", "ready", "200"]
    json_error(cli(team, "--user", "vic", "dataset", "list", "--namespace", "beta", "--json", password=PASSWORD),
               "permission denied")


def test_progress_text() -> None:
    assert progress_text("queued", None) == "queued ..."
    snap = {"ops": [{"name": "clean/map", "completed": 3, "total": 10}, {"name": "sum", "completed": 0, "total": None}]}
    assert progress_text("running", snap) == "running: clean/map 3/10 | sum 0/?"


def test_an_in_process_run_the_service_claimed_first_is_followed_there(store, capsys) -> None:
    """The service polls the queue: when it claims the run before `--in-process` does, the command waits
    for the service's outcome instead of failing (no docetl involved: the run is already finished)."""
    from core import cli as core_cli, namespaces, runs
    from core.principal import Principal

    operator = Principal.operator()
    namespaces.create(store, operator, "alpha")
    run = runs.enqueue(store, operator, namespace="alpha", pipeline_name="p", yaml_text="x: 1")
    assert runs.claim(store, run["id"], "the-service") is not None
    runs.finish(store, run["id"], runs.RunStatus.FAILED, error={"key": "run.error.crashed", "params": {}})
    done = core_cli.run_in_process(store, operator, run)
    assert core_cli.run_summary(done)["status"] == "failed"
    assert "scheduler service took run" in capsys.readouterr().err
