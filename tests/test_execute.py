"""The execute function end to end: real docetl in a real child process, a real local LLM server."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT
from core import datasets, execute, pipelines, runs
from core.runs import RunStatus
from core.settings import open_store
from core.errors import NotFound, PermissionDenied, ValidationError
from core.store import Store
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.timeout(300)
TEMPLATES = ROOT / "data" / "templates"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def import_sample(store: Store, who, rows: int | None = None) -> dict:
    content = (TEMPLATES / "sample_orders.xlsx").read_bytes()
    made = datasets.create_upload(store, who, "alpha", "sample_orders.xlsx", content,
                                  config={"end_row": rows + 1} if rows else None)
    done = datasets.ingest(store, made["id"])
    assert done["ingest_status"] == "ready", done["error"]
    return done


def llm_yaml(server: FakeLLM, **extra: str) -> str:
    text = (TEMPLATES / "llm_map.yaml").read_text(encoding="utf-8")
    head = f"default_model: openai/fake\ndefault_lm_api_base: {server.base_url}\nbypass_cache: true\n"
    return head + "".join(f"{k}: {v}\n" for k, v in extra.items()) + text


def run_child(store: Store, run_id: str, *, cancel_after: float | None = None, who=None, grace: float = 2.0) -> dict:
    """Claim the run, execute it in its own process as the service does, supervise it to its end."""
    claimed = runs.claim(store, run_id, "test-worker")
    assert claimed is not None
    child = execute.start_child(store, claimed)
    seen: dict[str, float] = {}
    started = time.monotonic()
    while not execute.supervise(store, run_id, child, cancel_grace=grace, cancel_seen=seen):
        if cancel_after is not None and time.monotonic() - started > cancel_after and who is not None:
            runs.cancel(store, who, run_id)
            who = None
        time.sleep(0.2)
    return runs.get_trusted(store, run_id)


def claimed(store: Store, who) -> dict:
    """A run some worker has claimed, over a 3-row input (no process: the test plays the worker)."""
    source = import_sample(store, who, rows=3)
    run = runs.enqueue(store, who, namespace="alpha", pipeline_name="p", yaml_text="x: 1\n",
                       input_dataset_id=source["id"])
    return runs.claim(store, run["id"], "w")


@pytest.fixture
def keyed(store: Store, team, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    return store


def test_offline_template_runs_and_its_output_becomes_a_dataset(keyed: Store, team) -> None:
    store, editor = keyed, team["editor"]
    source = import_sample(store, editor)
    pipeline = pipelines.create_from_template(store, editor, "alpha", "offline_demo", name="demo")
    run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="demo", pipeline_id=pipeline["id"],
                       yaml_text=pipelines.read_yaml(store, editor, pipeline["id"]), input_dataset_id=source["id"],
                       save_output_as="totals")
    done = run_child(store, run["id"])
    assert done["status"] == "completed", (done["error"], runs.log_tail(done))
    output = json.loads(Path(done["output_path"]).read_text(encoding="utf-8"))
    assert done["input_rows"] == source["row_count"] and done["output_rows"] == len(output) > 0
    assert {row["region"] for row in output} <= {r.get("region") for r in json.loads(
        Path(source["path"]).read_text(encoding="utf-8"))}
    progress = runs.progress(done)
    assert progress["finished"] and [op["status"] for op in progress["ops"]] == ["done"] * len(progress["ops"])
    assert "started by editor" in runs.log_tail(done)
    saved = datasets.get(store, editor, done["output_dataset_id"])
    assert saved["source"] == "pipeline_generated" and saved["row_count"] == len(output)
    assert saved["lineage"]["run_id"] == run["id"] and saved["lineage"]["pipeline"] == "demo"
    assert pipelines.get(store, editor, pipeline["id"])["last_run_status"] == "completed"


def test_llm_map_on_a_sample_counts_tokens_and_rows(keyed: Store, team, llm: FakeLLM) -> None:
    store, editor = keyed, team["editor"]
    source = import_sample(store, editor)
    llm.reset()
    run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="classify", yaml_text=llm_yaml(llm),
                       input_dataset_id=source["id"], sample_rows=12, save_output_as="classified")
    done = run_child(store, run["id"])
    assert done["status"] == "completed", (done["error"], runs.log_tail(done))
    assert (done["input_rows"], done["output_rows"]) == (12, 12)
    assert done["tokens_prompt"] > 0 and done["tokens_completion"] > 0
    assert llm.stats()["by_kind"].get("send_output") == 12
    rows = json.loads(Path(done["output_path"]).read_text(encoding="utf-8"))
    assert all(r["sentiment"] in ("positive", "neutral", "negative") and isinstance(r["urgency"], int) for r in rows)
    assert "sk-test-not-real" not in Path(done["log_path"]).read_text(encoding="utf-8")
    # Excel upload -> dataset -> LLM run -> a generated dataset that knows where it came from
    saved = datasets.get(store, editor, done["output_dataset_id"])
    assert (saved["source"], saved["row_count"]) == ("pipeline_generated", 12)
    assert saved["lineage"] == {"pipeline_id": None, "pipeline": "classify", "run_id": run["id"],
                                "output": done["output_path"], "input_dataset_id": source["id"]}
    assert {c["name"] for c in saved["schema"]} >= {"summary", "sentiment", "urgency", "comment"}


def test_every_request_failing_is_a_failed_run_with_a_category(keyed: Store, team, llm: FakeLLM) -> None:
    store, editor = keyed, team["editor"]
    source = import_sample(store, editor, rows=3)
    llm.configure(rate_500=1.0)
    try:
        run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="broken", yaml_text=llm_yaml(llm),
                           input_dataset_id=source["id"])
        done = run_child(store, run["id"])
    finally:
        llm.configure(rate_500=0.0)
    assert (done["status"], done["error_category"]) == ("failed", "server_error")
    assert "InternalServerError" in runs.error_message(done["error"], "en")
    assert done["output_dataset_id"] is None


def test_a_cancelled_run_ends_cancelled_and_saves_nothing(keyed: Store, team, llm: FakeLLM) -> None:
    store, editor = keyed, team["editor"]
    source = import_sample(store, editor)
    llm.configure(latency=1.0)
    try:
        run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="slow", yaml_text=llm_yaml(llm),
                           input_dataset_id=source["id"], save_output_as="should-not-exist")
        done = run_child(store, run["id"], cancel_after=6.0, who=editor)
    finally:
        llm.configure(latency=0.0)
    assert (done["status"], done["error_category"]) == ("cancelled", "cancelled")
    assert done["output_dataset_id"] is None
    assert not [d for d in datasets.list_datasets(store, editor, "alpha") if d["name"] == "should-not-exist"]


def test_bad_config_and_missing_input_fail_with_their_category(keyed: Store, team) -> None:
    store, editor = keyed, team["editor"]
    no_input = runs.enqueue(store, editor, namespace="alpha", pipeline_name="x",
                            yaml_text=(TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8"))
    done = run_child(store, no_input["id"])
    assert (done["status"], done["error_category"]) == ("failed", "validation")
    assert "input dataset" in runs.error_message(done["error"], "en")


def test_saving_an_output_afterwards_needs_a_completed_run(keyed: Store, team) -> None:
    store, editor = keyed, team["editor"]
    run = claimed(store, editor)
    Path(run["output_path"]).write_text('[{"a": 1}, {"a": 2}]', encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        execute.save_output(store, editor, run["id"], "partial")
    assert caught.value.key == "run.error.not_completed"
    runs.finish(store, run["id"], RunStatus.COMPLETED, output_rows=2)
    with pytest.raises(PermissionDenied):
        execute.save_output(store, team["viewer"], run["id"], "nope")
    saved = execute.save_output(store, editor, run["id"], "kept")
    assert saved["row_count"] == 2 and saved["lineage"]["run_id"] == run["id"]
    assert runs.get(store, editor, run["id"])["output_dataset_id"] == saved["id"]


def test_the_first_progress_lists_the_operations_before_docetl_loads() -> None:
    config = pipelines.parse_yaml((TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8"))
    ops = execute._starting(config)["ops"]
    assert ops[0]["name"] == "clean/normalize_order" and ops[0]["type"] == "code_map"
    assert {op["status"] for op in ops} == {"queued"}


def test_a_pipeline_cannot_read_files_outside_its_namespace(keyed: Store, team, home: Path) -> None:
    store, editor = keyed, team["editor"]
    source = import_sample(store, editor, rows=3)
    secret = home / ".docetl" / "beta" / "private.json"
    secret.write_text('[{"x": 1}]', encoding="utf-8")
    yaml_text = (TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8").replace(
        "datasets:\n", f"datasets:\n  other:\n    type: file\n    path: {secret}\n", 1)
    run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="peek", yaml_text=yaml_text,
                       input_dataset_id=source["id"])
    done = run_child(store, run["id"])
    assert (done["status"], done["error_category"]) == ("failed", "validation")
    assert "other" in runs.error_message(done["error"], "en")


def test_a_child_that_finished_but_could_not_record_it_is_recorded_completed(keyed: Store, team) -> None:
    store, editor = keyed, team["editor"]
    run = claimed(store, editor)
    Path(run["run_dir"], "result.json").write_text(json.dumps(
        {"status": "completed", "cost": 0.25, "input_rows": 3, "output_rows": 3, "warnings": []}), encoding="utf-8")
    execute.record_lost(store, run["id"])  # the child exited after writing its result, before recording it
    done = runs.get_trusted(store, run["id"])
    assert (done["status"], done["cost"], done["output_rows"]) == ("completed", 0.25, 3)


def test_a_run_cannot_borrow_another_namespaces_pipeline(keyed: Store, team) -> None:
    theirs = pipelines.create_from_template(keyed, team["platform_admin"], "beta", "offline_demo", name="theirs")
    with pytest.raises(NotFound):
        runs.enqueue(keyed, team["editor"], namespace="alpha", pipeline_name="x", yaml_text="x: 1\n",
                     pipeline_id=theirs["id"])
    assert not list((keyed.config.namespace_dir("alpha") / "runs").glob("*/pipeline.yaml"))


def test_a_pipeline_without_llm_calls_gets_no_provider_key(keyed: Store, team) -> None:
    """Code operations run editors' Python: when no model is called, no key is there to be read."""
    from core import llm_settings

    store, editor = keyed, team["editor"]
    llm_settings.set_key(store, team["platform_admin"], "DEEPSEEK_API_KEY", "sk-stored-not-real")
    source = import_sample(store, editor, rows=3)
    yaml_text = """datasets:
  input: {type: file, path: INPUT}
operations:
  - name: peek
    type: code_map
    code: |
      import os
      def transform(doc):
          return {"env_key": os.environ.get("OPENAI_API_KEY"), "stored_key": os.environ.get("DEEPSEEK_API_KEY")}
pipeline:
  steps:
    - {name: s, input: input, operations: [peek]}
  output: {type: file, path: OUTPUT}
"""
    run = runs.enqueue(store, editor, namespace="alpha", pipeline_name="peek", yaml_text=yaml_text,
                       input_dataset_id=source["id"])
    done = run_child(store, run["id"])
    assert done["status"] == "completed", (done["error"], runs.log_tail(done))
    rows = json.loads(Path(done["output_path"]).read_text(encoding="utf-8"))
    assert {(r["env_key"], r["stored_key"]) for r in rows} == {(None, None)}


def test_admins_can_turn_code_operations_off(keyed: Store, team, config) -> None:
    from core import settings

    store, editor = keyed, team["editor"]
    source = import_sample(store, editor, rows=3)
    offline = (TEMPLATES / "offline_demo.yaml").read_text(encoding="utf-8")
    queued = runs.enqueue(store, editor, namespace="alpha", pipeline_name="demo", yaml_text=offline,
                          input_dataset_id=source["id"])
    settings.update(store, team["platform_admin"], "allow_code_operations", "false")
    strict = open_store(config)
    with pytest.raises(ValidationError) as caught:
        runs.enqueue(strict, editor, namespace="alpha", pipeline_name="demo", yaml_text=offline,
                     input_dataset_id=source["id"])
    assert caught.value.key == "run.error.code_disabled" and "normalize_order" in str(caught.value)
    done = run_child(strict, queued["id"])  # queued before the switch: refused when it starts
    assert (done["status"], done["error_category"]) == ("failed", "config")
