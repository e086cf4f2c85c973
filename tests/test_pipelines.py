"""Pipelines: records and files, roles and audit, validation with locations, templates, binding, docetl."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from core import audit, datasets, pipelines
from core.errors import NotFound, PermissionDenied, ValidationError
from core.principal import Principal
from core.store import Store

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
TEMPLATES = {tpl["name"]: tpl for tpl in pipelines.templates()}
OFFLINE = TEMPLATES["offline_demo"]["yaml"]
LLM_MAP = TEMPLATES["llm_map"]["yaml"]
CATALOGS = {lang: json.loads((ROOT / "core" / "locales" / f"{lang}.json").read_text(encoding="utf-8"))
            for lang in ("en", "zh_CN")}


def make(store: Store, who: Principal, name: str = "orders", text: str = OFFLINE, **kw) -> dict:
    return pipelines.create(store, who, "alpha", name, text, **kw)


def audit_rows(store: Store, action: str) -> list[dict]:
    rows = audit.query(store, Principal.operator(), action=action)
    return [{**r, "detail": json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"]} for r in rows]


def files_under(store: Store, ns: str = "alpha") -> list[str]:
    base = pipelines.pipelines_dir(store, ns)
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


# -- create, read, files ------------------------------------------------------------------------------
def test_create_writes_the_yaml_and_the_record_then_the_row(store: Store, team) -> None:
    made = make(store, team["editor"], description="  按地区汇总 ", now=T0)
    assert (made["name"], made["namespace"], made["description"], made["state"]) == (
        "orders", "alpha", "按地区汇总", "active")
    config = Path(made["config_path"])
    assert config == store.config.namespace_dir("alpha") / "pipelines" / "configs" / "orders.yaml"
    assert config.read_text(encoding="utf-8") == OFFLINE
    record = json.loads(pipelines.record_file(store, "alpha", made["id"]).read_text(encoding="utf-8"))
    assert set(record) == set(pipelines.RECORD_FIELDS)
    assert record["id"] == made["id"] and record["name"] == "orders" and record["created_at"] == T0.isoformat()
    assert record["last_run_status"] is None and record["input_dataset_id"] is None
    assert files_under(store) == ["configs/orders.yaml", f"store/{made['id']}.json"]  # no temporary files left
    row = audit_rows(store, "pipeline.create")[0]
    assert (row["actor_username"], row["namespace"], row["resource_id"]) == ("editor", "alpha", made["id"])
    assert "code_map" not in json.dumps(row["detail"], ensure_ascii=False)  # never the YAML itself


def test_viewers_read_get_find_list_and_yaml(store: Store, team) -> None:
    made = make(store, team["editor"])
    make(store, team["editor"], "another")
    viewer = team["viewer"]
    assert pipelines.get(store, viewer, made["id"])["name"] == "orders"
    assert pipelines.find(store, viewer, "alpha", "orders")["id"] == made["id"]
    assert pipelines.find(store, viewer, "alpha", made["id"])["name"] == "orders"
    assert [p["name"] for p in pipelines.list_pipelines(store, viewer, "alpha")] == ["another", "orders"]
    assert pipelines.read_yaml(store, viewer, made["id"]) == OFFLINE
    with pytest.raises(NotFound) as caught:
        pipelines.find(store, viewer, "alpha", "nope")
    assert caught.value.key == "pipeline.error.not_found_name" and "'nope'" in str(caught.value)
    assert "alpha" in str(caught.value)
    with pytest.raises(NotFound):
        pipelines.get(store, viewer, "0" * 32)


def test_names_are_safe_file_stems_and_chinese_works(store: Store, team) -> None:
    made = make(store, team["editor"], " 月度 销售\t报表 ")
    assert made["name"] == "月度_销售_报表" and Path(made["config_path"]).name == "月度_销售_报表.yaml"
    assert pipelines.find(store, team["viewer"], "alpha", "月度 销售 报表")["id"] == made["id"]
    longest = make(store, team["editor"], "长" * 80)  # 240 bytes: the most the file system allows with margin
    assert Path(longest["config_path"]).exists()
    for bad in ("", "   ", "../etc/passwd", "a/b", ".hidden", "-flag", "semi;colon", "a\x00b", "引号'"):
        with pytest.raises(ValidationError) as caught:
            make(store, team["editor"], bad)
        assert caught.value.key == "pipeline.error.name", bad
    for too_long in ("a" * 101, "长" * 81):
        with pytest.raises(ValidationError) as caught:
            make(store, team["editor"], too_long)
        assert caught.value.key == "pipeline.error.name_too_long" and "100" in str(caught.value)
    assert len(pipelines.list_pipelines(store, team["viewer"], "alpha")) == 2


def test_names_are_unique_and_a_foreign_file_is_never_overwritten(store: Store, team) -> None:
    make(store, team["editor"])
    with pytest.raises(ValidationError) as caught:
        make(store, team["editor"], "orders", LLM_MAP)
    assert caught.value.key == "pipeline.error.name_taken"
    other = pipelines.create(store, team["outsider"], "beta", "orders", LLM_MAP)  # other namespace: fine
    assert other["namespace"] == "beta"
    legacy = pipelines.pipelines_dir(store, "alpha") / "configs" / "legacy.yaml"
    legacy.write_text("# DocWrangler's\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        make(store, team["editor"], "legacy")
    assert caught.value.key == "pipeline.error.file_exists" and str(legacy) in str(caught.value)
    assert legacy.read_text(encoding="utf-8") == "# DocWrangler's\n"


def test_an_invalid_pipeline_is_refused_before_anything_is_written(store: Store, team) -> None:
    with pytest.raises(ValidationError) as caught:
        make(store, team["editor"], "broken", OFFLINE.replace("type: code_filter", "type: code_filtr"))
    assert caught.value.key == "pipeline.problem.type_unknown"
    assert 'operation "keep_valid_orders" → type' in str(caught.value)
    assert 'operation "keep_valid_orders" → type' in caught.value.message("zh_CN")
    assert files_under(store) == [] and pipelines.list_pipelines(store, team["viewer"], "alpha") == []


def test_the_namespace_must_exist(store: Store, team) -> None:
    with pytest.raises(NotFound):
        pipelines.create(store, team["platform_admin"], "gamma", "x", OFFLINE)
    assert not (store.config.namespace_dir("gamma") / "pipelines" / "configs" / "x.yaml").exists()


# -- update, rename, duplicate, delete ---------------------------------------------------------------------
def test_update_changes_yaml_description_and_dataset_with_an_audit_of_what_changed(store: Store, team) -> None:
    made = make(store, team["editor"], now=T0)
    dataset = datasets.create_upload(store, team["editor"], "alpha", "orders.csv", b"a,b\n1,2\n")
    later = T0 + timedelta(hours=1)
    updated = pipelines.update(store, team["editor"], made["id"], yaml_text=LLM_MAP, description="LLM",
                               input_dataset_id=dataset["id"], now=later)
    assert updated["description"] == "LLM" and updated["input_dataset_id"] == dataset["id"]
    assert updated["updated_at"] == later and updated["created_at"] == T0
    assert Path(made["config_path"]).read_text(encoding="utf-8") == LLM_MAP
    record = json.loads(pipelines.record_file(store, "alpha", made["id"]).read_text(encoding="utf-8"))
    assert record["description"] == "LLM" and record["updated_at"] == later.isoformat()
    assert record["input_dataset_id"] == dataset["id"]
    detail = audit_rows(store, "pipeline.update")[0]["detail"]
    assert detail["yaml_bytes"] == {"before": len(OFFLINE.encode()), "after": len(LLM_MAP.encode())}
    assert detail["description"] == {"before": "", "after": "LLM"}
    assert "classify_comment" not in json.dumps(detail)
    cleared = pipelines.update(store, team["editor"], made["id"], input_dataset_id="")
    assert cleared["input_dataset_id"] is None
    foreign = datasets.create_upload(store, team["outsider"], "beta", "x.csv", b"a\n1\n")
    with pytest.raises(NotFound) as caught:
        pipelines.update(store, team["editor"], made["id"], input_dataset_id=foreign["id"])
    assert caught.value.key == "pipeline.error.dataset_not_found"
    with pytest.raises(ValidationError):
        pipelines.update(store, team["editor"], made["id"], yaml_text="operations: []")
    assert Path(made["config_path"]).read_text(encoding="utf-8") == LLM_MAP


def test_an_update_that_changes_nothing_is_not_audited(store: Store, team) -> None:
    made = make(store, team["editor"], now=T0)
    same = pipelines.update(store, team["editor"], made["id"], yaml_text=OFFLINE, description="")
    assert same["updated_at"] == T0 and audit_rows(store, "pipeline.update") == []


def test_rename_moves_the_yaml_and_keeps_the_id(store: Store, team) -> None:
    made = make(store, team["editor"])
    make(store, team["editor"], "taken")
    renamed = pipelines.rename(store, team["editor"], made["id"], "区域 汇总")
    assert renamed["id"] == made["id"] and renamed["name"] == "区域_汇总"
    assert not Path(made["config_path"]).exists()
    assert Path(renamed["config_path"]).read_text(encoding="utf-8") == OFFLINE
    record = json.loads(pipelines.record_file(store, "alpha", made["id"]).read_text(encoding="utf-8"))
    assert record["name"] == "区域_汇总"
    assert audit_rows(store, "pipeline.rename")[0]["detail"] == {"before": "orders", "after": "区域_汇总"}
    with pytest.raises(ValidationError) as caught:
        pipelines.rename(store, team["editor"], made["id"], "taken")
    assert caught.value.key == "pipeline.error.name_taken"
    assert Path(renamed["config_path"]).exists()


def test_duplicate_copies_yaml_description_and_dataset(store: Store, team) -> None:
    made = make(store, team["editor"], description="原始")
    copy_ = pipelines.duplicate(store, team["editor"], made["id"], "orders_copy")
    assert copy_["id"] != made["id"] and copy_["description"] == "原始" and copy_["last_run_status"] is None
    assert pipelines.read_yaml(store, team["viewer"], copy_["id"]) == OFFLINE
    row = audit_rows(store, "pipeline.duplicate")[0]
    assert row["resource_id"] == copy_["id"] and row["detail"]["from_id"] == made["id"]
    with pytest.raises(ValidationError):
        pipelines.duplicate(store, team["editor"], made["id"], "orders")


def test_delete_removes_record_and_files_but_runs_keep_the_name(store: Store, team) -> None:
    made = make(store, team["editor"])
    keep = make(store, team["editor"], "keep")
    run_dir = store.config.namespace_dir("alpha") / "runs" / "r1"
    store.execute_write("INSERT INTO runs (id, namespace, pipeline_id, pipeline_name, trigger, status, run_dir,"
                        " log_path, progress_path, config_path, queued_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        ["r1", "alpha", made["id"], "orders", "manual", "completed", str(run_dir),
                         str(run_dir / "log"), str(run_dir / "progress"), str(run_dir / "pipeline.yaml"), T0])
    with pytest.raises(PermissionDenied):
        pipelines.delete(store, team["editor"], made["id"])
    assert Path(made["config_path"]).exists()
    pipelines.delete(store, team["nsadmin"], made["id"])
    with pytest.raises(NotFound):
        pipelines.get(store, team["viewer"], made["id"])
    assert files_under(store) == ["configs/keep.yaml", f"store/{keep['id']}.json"]
    assert store.execute("SELECT pipeline_name FROM runs WHERE id = 'r1'")[0]["pipeline_name"] == "orders"
    row = audit_rows(store, "pipeline.delete")[0]
    assert (row["actor_username"], row["detail"]) == ("nsadmin", {"name": "orders"})
    again = make(store, team["editor"])  # the name is free again
    assert again["id"] != made["id"]


# -- roles ------------------------------------------------------------------------------------------------
def test_roles(store: Store, team) -> None:
    made = make(store, team["editor"])
    viewer, outsider = team["viewer"], team["outsider"]
    refused = [
        lambda: make(store, viewer, "v"),
        lambda: pipelines.update(store, viewer, made["id"], description="x"),
        lambda: pipelines.rename(store, viewer, made["id"], "v"),
        lambda: pipelines.duplicate(store, viewer, made["id"], "v"),
        lambda: pipelines.delete(store, viewer, made["id"]),
        lambda: pipelines.create_from_template(store, viewer, "alpha", "offline_demo"),
        lambda: pipelines.get(store, outsider, made["id"]),
        lambda: pipelines.find(store, outsider, "alpha", "orders"),
        lambda: pipelines.list_pipelines(store, outsider, "alpha"),
        lambda: pipelines.read_yaml(store, outsider, made["id"]),
        lambda: pipelines.create(store, outsider, "alpha", "o", OFFLINE),
    ]
    before = (files_under(store), store.execute("SELECT * FROM pipelines ORDER BY id"))
    for attempt in refused:
        with pytest.raises(PermissionDenied):
            attempt()
    assert (files_under(store), store.execute("SELECT * FROM pipelines ORDER BY id")) == before
    nsadmin = team["nsadmin"]
    pipelines.update(store, nsadmin, made["id"], description="ns admin edits")
    pipelines.rename(store, team["platform_admin"], made["id"], "renamed")
    assert pipelines.get(store, viewer, made["id"])["name"] == "renamed"


# -- nothing half-written ---------------------------------------------------------------------------------
class Boom(Exception):
    pass


def _fail_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args, **kwargs):
        raise Boom("the database write failed")

    monkeypatch.setattr(pipelines.audit, "record", explode)


def test_a_failed_write_leaves_no_half_written_pipeline(store: Store, team, monkeypatch) -> None:
    made = make(store, team["editor"], description="before")
    record_path = pipelines.record_file(store, "alpha", made["id"])
    record_before = record_path.read_bytes()
    state = (files_under(store), store.execute("SELECT * FROM pipelines ORDER BY id"))
    _fail_audit(monkeypatch)
    for attempt in (lambda: make(store, team["editor"], "new"),
                    lambda: pipelines.update(store, team["editor"], made["id"], yaml_text=LLM_MAP, description="x"),
                    lambda: pipelines.rename(store, team["editor"], made["id"], "moved"),
                    lambda: pipelines.duplicate(store, team["editor"], made["id"], "copy"),
                    lambda: pipelines.delete(store, team["nsadmin"], made["id"])):
        with pytest.raises(Boom):
            attempt()
        assert (files_under(store), store.execute("SELECT * FROM pipelines ORDER BY id")) == state
        assert Path(made["config_path"]).read_text(encoding="utf-8") == OFFLINE
        assert record_path.read_bytes() == record_before


def test_a_failed_commit_is_undone_too(store: Store, team, monkeypatch) -> None:
    made = make(store, team["editor"])
    real = store.transaction

    from contextlib import contextmanager

    @contextmanager
    def failing_commit():
        with real() as tx:
            yield tx
        raise Boom("commit failed")

    monkeypatch.setattr(store, "transaction", failing_commit)
    with pytest.raises(Boom):
        pipelines.rename(store, team["editor"], made["id"], "moved")
    assert Path(made["config_path"]).exists()
    assert not (pipelines.pipelines_dir(store, "alpha") / "configs" / "moved.yaml").exists()


# -- last run --------------------------------------------------------------------------------------------
def test_record_run_updates_row_and_record_and_never_goes_back(store: Store, team) -> None:
    made = make(store, team["editor"])
    with store.transaction() as tx:
        assert pipelines.record_run(tx, made["id"], "completed", T0)
    with store.transaction() as tx:
        assert not pipelines.record_run(tx, made["id"], "failed", T0 - timedelta(minutes=5))  # older: ignored
        assert not pipelines.record_run(tx, "0" * 32, "failed", T0)  # deleted pipeline: nothing to do
    row = pipelines.get(store, team["viewer"], made["id"])
    assert (row["last_run_status"], row["last_run_at"]) == ("completed", T0)
    record = json.loads(pipelines.record_file(store, "alpha", made["id"]).read_text(encoding="utf-8"))
    assert (record["last_run_status"], record["last_run_at"]) == ("completed", T0.isoformat())
    with store.transaction() as tx, pytest.raises(ValidationError) as caught:
        pipelines.record_run(tx, made["id"], "done", T0)
    assert caught.value.key == "pipeline.error.run_status"


# -- templates ------------------------------------------------------------------------------------------
def test_templates_validate_clean_and_speak_both_languages() -> None:
    assert set(TEMPLATES) == {"offline_demo", "llm_map"}
    for tpl in TEMPLATES.values():
        assert pipelines.validate(tpl["yaml"]) == [], tpl["name"]
        assert tpl["title"]["en"] != tpl["title"]["zh_CN"]
        assert re.search(r"[\u4e00-\u9fff]", tpl["description"]["zh_CN"])
        assert tpl["title_key"] in CATALOGS["en"] and tpl["description_key"] in CATALOGS["zh_CN"]
        config = yaml.safe_load(tpl["yaml"])
        assert config["datasets"] == {"input": {"type": "file", "path": "INPUT"}}
        assert config["pipeline"]["output"] == {"type": "file", "path": "OUTPUT"}
    offline = yaml.safe_load(OFFLINE)
    assert {op["type"] for op in offline["operations"]} <= {"code_map", "code_filter", "code_reduce", "sample"}
    schema = yaml.safe_load(LLM_MAP)["operations"][0]["output"]["schema"]
    assert schema == {"summary": "string", "sentiment": "enum[positive, neutral, negative]", "urgency": "int"}


def test_create_from_template_picks_a_free_name(store: Store, team) -> None:
    first = pipelines.create_from_template(store, team["editor"], "alpha", "offline_demo", lang="en")
    second = pipelines.create_from_template(store, team["editor"], "alpha", "offline_demo")
    named = pipelines.create_from_template(store, team["editor"], "alpha", "llm_map", name="评论分类")
    assert (first["name"], second["name"], named["name"]) == ("offline_demo", "offline_demo_2", "评论分类")
    assert first["description"] == TEMPLATES["offline_demo"]["description"]["en"]
    assert second["description"] == TEMPLATES["offline_demo"]["description"]["zh_CN"]  # the default language
    assert pipelines.read_yaml(store, team["viewer"], named["id"]) == LLM_MAP
    assert audit_rows(store, "pipeline.create")[0]["detail"]["template"] == "llm_map"
    with pytest.raises(NotFound) as caught:
        pipelines.create_from_template(store, team["editor"], "alpha", "nope")
    assert "offline_demo" in str(caught.value)


def test_summary_outlines_each_operation() -> None:
    outline = pipelines.summary(LLM_MAP)
    assert outline == [{"name": "classify_comment", "type": "map", "llm": True, "model": "default",
                        "prompt": outline[0]["prompt"],
                        "output": [{"name": "summary", "type": "string"},
                                   {"name": "sentiment", "type": "enum[positive, neutral, negative]"},
                                   {"name": "urgency", "type": "int"}]}]
    assert outline[0]["prompt"].startswith("You read one customer") and len(outline[0]["prompt"]) <= 80
    assert "\n" not in outline[0]["prompt"]
    own_model = pipelines.summary(LLM_MAP.replace("    type: map\n", "    type: map\n    model: openai/gpt-4o\n"))
    assert own_model[0]["model"] == "openai/gpt-4o"
    offline = pipelines.summary(OFFLINE)
    assert [(o["name"], o["type"], o["llm"], o["model"]) for o in offline] == [
        ("normalize_order", "code_map", False, None), ("keep_valid_orders", "code_filter", False, None),
        ("totals_by_region", "code_reduce", False, None)]
    assert pipelines.summary("operations: [") == [] and pipelines.summary("- 1") == []


# -- validation ------------------------------------------------------------------------------------------
BASE = """\
datasets:
  input: {type: file, path: INPUT}
operations:
  - name: summarize
    type: map
    prompt: "Summarize {{ input.comment }}"
    output:
      schema: {summary: string}
pipeline:
  steps:
    - name: main
      input: input
      operations: [summarize]
  output: {type: file, path: OUTPUT}
"""


def with_ops(ops: str, steps: str = "[OPS]", datasets_: str = "  input: {type: file, path: INPUT}\n",
             output: str = "  output: {type: file, path: OUTPUT}\n") -> str:
    """A pipeline whose operations are `ops` (YAML list items), one step running all of them."""
    names = re.findall(r"^  - name: (\S+)", ops, flags=re.M)
    steps = steps.replace("[OPS]", "[" + ", ".join(names) + "]")
    return (f"datasets:\n{datasets_}operations:\n{ops}pipeline:\n  steps:\n"
            f"    - name: main\n      input: input\n      operations: {steps}\n{output}")


# (case, yaml, expected key, expected `where`, expected line or None)
CASES = [
    ("yaml syntax", "operations:\n  - name: x\n   type: map\n", "pipeline.problem.yaml_syntax",
     "line 3, column 4", 3),
    ("empty", "  \n", "pipeline.problem.empty", "YAML", None),
    ("too big", "# " + "x" * (1024 * 1024) + "\n", "pipeline.problem.too_big", "YAML", None),
    ("not a mapping", "- just\n- a list\n", "pipeline.problem.not_mapping", "YAML", 1),
    ("duplicate key", BASE.replace("    type: map\n", "    type: map\n    type: filter\n"),
     "pipeline.problem.duplicate_key", "operations[0]", 6),
    ("operations missing", BASE[:BASE.index("operations:")] + BASE[BASE.index("pipeline:"):],
     "pipeline.problem.operations_missing", "operations", 1),
    ("operations empty", "operations: []\npipeline:" + BASE.split("pipeline:")[1],
     "pipeline.problem.operations_not_list", "operations", 1),
    ("operation not a mapping", with_ops("  - just a string\n", steps="[]"),
     "pipeline.problem.operation_not_mapping", "operations[0]", 4),
    ("operation without name", with_ops("  - type: code_map\n    code: 'def transform(d): return d'\n", steps="[]"),
     "pipeline.problem.name_missing", "operations[0] → name", 4),
    ("duplicate operation", with_ops("  - name: a\n    type: add_uuid\n  - name: a\n    type: add_uuid\n"),
     "pipeline.problem.name_duplicate", 'operation "a" → name', 6),
    ("type missing", with_ops("  - name: a\n"), "pipeline.problem.type_missing", 'operation "a" → type', 4),
    ("type unknown", with_ops("  - name: a\n    type: mapp\n"), "pipeline.problem.type_unknown",
     'operation "a" → type', 5),
    ("map without prompt", with_ops("  - name: a\n    type: map\n    output: {schema: {x: string}}\n"),
     "pipeline.problem.field_missing", 'operation "a" → prompt', 4),
    ("map without schema", with_ops("  - name: a\n    type: map\n    prompt: 'Hi {{ input.x }}'\n"),
     "pipeline.problem.field_missing", 'operation "a" → output.schema', 4),
    ("prompt not text", with_ops("  - name: a\n    type: map\n    prompt: [1]\n    output: {schema: {x: int}}\n"),
     "pipeline.problem.field_not_text", 'operation "a" → prompt', 6),
    ("bad output type", with_ops("  - name: a\n    type: map\n    prompt: 'Hi {{ input.x }}'\n"
                                 "    output:\n      schema:\n        x: string\n        y: strnig\n"),
     "pipeline.problem.schema_type", 'operation "a" → output.schema.y', 10),
    ("schema not a mapping", with_ops("  - name: a\n    type: map\n    prompt: 'Hi {{ input.x }}'\n"
                                      "    output: {schema: [x]}\n"),
     "pipeline.problem.field_not_mapping", 'operation "a" → output.schema', 7),
    ("schema empty", with_ops("  - name: a\n    type: resolve\n    comparison_prompt: '{{ input1.x }} {{ input2.x }}'\n"
                              "    output: {schema: {}}\n"),
     "pipeline.problem.schema_empty", 'operation "a" → output.schema', 7),
    ("filter schema", with_ops("  - name: a\n    type: filter\n    prompt: 'Keep {{ input.x }}?'\n"
                               "    output: {schema: {keep: string}}\n"),
     "pipeline.problem.filter_schema", 'operation "a" → output.schema', 7),
    ("broken template", with_ops("  - name: a\n    type: map\n    prompt: 'Hi {{ input.x'\n"
                                 "    output: {schema: {x: string}}\n"),
     "pipeline.problem.prompt_template", 'operation "a" → prompt', 6),
    ("reduce without inputs", with_ops("  - name: a\n    type: reduce\n    reduce_key: k\n"
                                       "    prompt: 'Sum {{ input.x }}'\n    output: {schema: {x: int}}\n"),
     "pipeline.problem.prompt_variable", 'operation "a" → prompt', 7),
    ("reduce without key", with_ops("  - name: a\n    type: reduce\n    prompt: '{{ inputs }}'\n"
                                    "    output: {schema: {x: int}}\n"),
     "pipeline.problem.field_missing", 'operation "a" → reduce_key', 4),
    ("choice", with_ops("  - name: a\n    type: rank\n    prompt: 'Rank {{ input.x }}'\n    direction: up\n"),
     "pipeline.problem.field_choice", 'operation "a" → direction', 7),
    ("list field", with_ops("  - name: a\n    type: extract\n    prompt: 'Find {{ input.x }}'\n"
                            "    document_keys: []\n"),
     "pipeline.problem.field_not_list", 'operation "a" → document_keys', 7),
    ("positive", with_ops("  - name: a\n    type: sample\n    method: uniform\n    samples: -3\n"),
     "pipeline.problem.field_not_positive", 'operation "a" → samples', 7),
    ("parallel uncovered", with_ops("  - name: a\n    type: parallel_map\n    prompts:\n"
                                    "      - {prompt: 'A {{ input.x }}', output_keys: [x]}\n"
                                    "    output: {schema: {x: string, y: string}}\n"),
     "pipeline.problem.parallel_uncovered", 'operation "a" → output.schema', 8),
    ("code syntax", with_ops("  - name: a\n    type: code_map\n    code: |\n      def transform(doc):\n"
                             "          return {'x': 1\n"),
     "pipeline.problem.code_syntax", 'operation "a" → code', 8),
    ("code without transform", with_ops("  - name: a\n    type: code_filter\n    code: |\n      def keep(doc):\n"
                                        "          return True\n"),
     "pipeline.problem.code_no_transform", 'operation "a" → code', 6),
    ("transform without argument", with_ops("  - name: a\n    type: code_reduce\n    code: |\n"
                                            "      def transform():\n          return {}\n"),
     "pipeline.problem.code_transform_args", 'operation "a" → code', 6),
    ("code missing", with_ops("  - name: a\n    type: code_map\n"), "pipeline.problem.field_missing",
     'operation "a" → code', 4),
    ("secret", BASE.replace("    type: map\n", "    type: map\n    litellm_completion_kwargs: {api_key: sk-123}\n"),
     "pipeline.problem.secret", "operations[0].litellm_completion_kwargs.api_key", 6),
    ("datasets ambiguous", with_ops("  - name: a\n    type: add_uuid\n",
                                    datasets_="  one: {type: file, path: INPUT}\n  two: {type: file, path: b.json}\n"),
     "pipeline.problem.datasets_ambiguous", "datasets", 1),
    ("second placeholder", with_ops("  - name: a\n    type: add_uuid\n",
                                    datasets_="  input: {type: file, path: INPUT}\n  two: {type: file, path: INPUT}\n"),
     "pipeline.problem.dataset_placeholder", 'dataset "two" → path', 3),
    ("pipeline missing", BASE.split("pipeline:")[0], "pipeline.problem.pipeline_missing", "pipeline", 1),
    ("steps missing", BASE.split("  steps:")[0] + "  steps: []\n  output: {type: file, path: OUTPUT}\n",
     "pipeline.problem.steps_missing", "pipeline.steps", 10),
    ("step not a mapping", BASE.replace("    - name: main\n      input: input\n      operations: [summarize]\n",
                                        "    - main\n"), "pipeline.problem.step_not_mapping", "pipeline.steps[0]", 11),
    ("duplicate step", BASE.replace("  output: {", "    - name: main\n      input: main\n"
                                    "      operations: [summarize]\n  output: {"),
     "pipeline.problem.step_name_duplicate", 'step "main" → name', 14),
    ("step without operations", BASE.replace("      operations: [summarize]\n", ""),
     "pipeline.problem.step_operations_missing", 'step "main" → operations', 11),
    ("step without input", BASE.replace("      input: input\n", ""), "pipeline.problem.step_input_missing",
     'step "main" → input', 11),
    ("unknown input", BASE.replace("input: input", "input: orders"), "pipeline.problem.step_unknown_input",
     'step "main" → input', 12),
    ("unknown operation", BASE.replace("[summarize]", "[summarize, summarise]"),
     "pipeline.problem.step_unknown_operation", 'step "main" → operations[1]', 13),
    ("equijoin misuse", with_ops("  - name: j\n    type: equijoin\n"
                                 "    comparison_prompt: '{{ left.x }} {{ right.x }}'\n"),
     "pipeline.problem.step_equijoin", 'step "main" → operations[0]', 11),
    ("output missing", BASE.replace("  output: {type: file, path: OUTPUT}\n", ""), "pipeline.problem.output_missing",
     "pipeline.output", 9),
    ("output extension", BASE.replace("path: OUTPUT", "path: /tmp/out.txt"), "pipeline.problem.output_extension",
     "pipeline.output.path", 14),
]


@pytest.mark.parametrize("case,text,key,where,line", CASES, ids=[c[0] for c in CASES])
def test_each_problem_is_found_with_its_location(case: str, text: str, key: str, where: str, line: int | None) -> None:
    problems = pipelines.validate(text)
    found = [p for p in problems if p.key == key]
    assert found, f"{case}: expected {key}, got {[(p.key, p.where) for p in problems]}"
    assert found[0].where == where and found[0].line == line, (found[0].where, found[0].line)
    for lang in ("en", "zh_CN"):
        message = found[0].message(lang)
        assert not re.search(r"\{[a-z_]+\}", message), message  # every placeholder filled in
        if key != "pipeline.problem.yaml_syntax":
            assert message.startswith(where), message
        else:
            assert str(line) in message


def test_the_cases_cover_every_problem_the_validator_reports() -> None:
    source = (ROOT / "core" / "pipelines.py").read_text(encoding="utf-8")
    reported = set(re.findall(r'"(pipeline\.problem\.[a-z_]+)"', source))
    docetl_only = {"pipeline.problem.docetl", "pipeline.problem.docetl_stopped"}
    assert reported - docetl_only - {c[2] for c in CASES} == set()
    used = set(re.findall(r'"(pipeline\.(?:problem|error|template)\.[a-z_.]+)"', source))
    for lang, catalog in CATALOGS.items():
        assert sorted(used - set(catalog)) == [], lang


def test_check_raises_the_first_problem_with_its_location() -> None:
    text = BASE.replace("input: input", "input: orders").replace("type: map", "type: mapp")
    with pytest.raises(ValidationError) as caught:
        pipelines.check(text)
    assert caught.value.key == "pipeline.problem.type_unknown"  # line 5 comes before line 12
    assert str(caught.value).startswith('operation "summarize" → type: \'mapp\'')
    assert caught.value.message("zh_CN").startswith('operation "summarize" → type：')
    assert pipelines.check(BASE)["operations"][0]["name"] == "summarize"
    with pytest.raises(ValidationError) as caught:
        pipelines.check("a: [\n")
    assert "line 2" in str(caught.value) and "第 2 行" in caught.value.message("zh_CN")


def test_valid_shapes_pass() -> None:
    assert pipelines.validate(BASE[BASE.index("operations:"):]) == []  # the run's dataset is called `input`
    named = BASE.replace("  input: {type: file, path: INPUT}", "  orders: {type: file, path: INPUT}").replace(
        "input: input", "input: orders")
    assert pipelines.validate(named) == []
    env_key = BASE.replace("    type: map\n", "    type: map\n    litellm_completion_kwargs:"
                                              " {api_key: os.environ/OPENAI_API_KEY, max_tokens: 100}\n")
    assert pipelines.validate(env_key) == []
    types = ("string", "str", "text", "int", "integer", "float", "number", "bool", "boolean", "list[string]",
             "list[{name: string, score: int}]", "{a: int, b: list[string]}", "enum[yes, no]", " List[Int] ")
    assert all(pipelines.schema_type_ok(t_) for t_ in types)
    assert not any(pipelines.schema_type_ok(t_) for t_ in ("list", "list[]", "enum[]", "enum[a,]", "{}", "{a}",
                                                           "dict", "strnig", 3, None, "{a: {b: int, c: int}}"))
    two_steps = BASE.replace("  output: {", "    - name: again\n      input: main\n      operations: [summarize]\n"
                                            "  output: {")
    assert pipelines.validate(two_steps) == []
    join = ("datasets:\n  left: {type: file, path: l.json}\n  input: {type: file, path: INPUT}\noperations:\n"
            "  - name: j\n    type: equijoin\n    comparison_prompt: '{{ left.a }} {{ right.a }}'\n"
            "pipeline:\n  steps:\n    - name: s\n      operations:\n        - j: {left: left, right: input}\n"
            "  output: {type: file, path: OUTPUT}\n")
    assert pipelines.validate(join) == []


@pytest.mark.parametrize("text", [
    None, 12, "", "[", "{", "---\n---\n", "a: !!python/object/apply:os.system ['echo hi']\n", "\x00",
    "[" * 5000 + "]" * 5000,
    "a: &a ['x','x']\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c]\ne: [*d,*d,*d,*d]\n",
    "operations: {a: 1}\npipeline: 3\n", "operations:\n  - name: [1]\n    type: {x: 1}\n",
    "datasets: 3\noperations: [{name: a, type: add_uuid}]\npipeline: {steps: [{name: s, input: input,"
    " operations: [a, {x: 1}, 3]}], output: 5}\n",
])
def test_validate_never_raises(text) -> None:
    problems = pipelines.validate(text)
    assert problems and all(isinstance(p, pipelines.Problem) and p.message("en") for p in problems)


def test_validation_is_fast_and_does_not_import_docetl() -> None:
    code = ("import sys, time; from core import pipelines; t = time.perf_counter();"
            " [pipelines.validate(tpl['yaml']) for tpl in pipelines.templates() for _ in range(20)];"
            " print(time.perf_counter() - t, 'docetl' in sys.modules, 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seconds, docetl_loaded, _ = out.split()
    assert docetl_loaded == "False" and float(seconds) < 2


# -- bind -----------------------------------------------------------------------------------------------
def test_bind_fills_in_input_output_and_intermediates_on_a_copy() -> None:
    config = yaml.safe_load(OFFLINE)
    bound = pipelines.bind(config, input_path="/data/in.json", output_path="/runs/r/out.json",
                           intermediate_dir="/runs/r/intermediates")
    assert bound["datasets"] == {"input": {"type": "file", "path": "/data/in.json"}}
    assert bound["pipeline"]["output"] == {"type": "file", "path": "/runs/r/out.json",
                                           "intermediate_dir": "/runs/r/intermediates"}
    assert config["datasets"]["input"]["path"] == "INPUT" and config["pipeline"]["output"]["path"] == "OUTPUT"
    assert bound["operations"] == config["operations"] and bound["operations"] is not config["operations"]


def test_bind_finds_the_input_dataset() -> None:
    bare = yaml.safe_load(BASE[BASE.index("operations:"):])
    assert "datasets" not in bare
    assert pipelines.bind(bare, input_path="i.json", output_path="o.json")["datasets"] == {
        "input": {"type": "file", "path": "i.json"}}
    single = {"datasets": {"orders": {"type": "file", "path": "INPUT", "parsing": [{"function": "x"}]}},
              "pipeline": {"output": {"type": "file", "path": "OUTPUT", "intermediate_dir": "old"}}}
    bound = pipelines.bind(single, input_path=Path("/d/i.json"), output_path=Path("/o/o.csv"))
    assert bound["datasets"]["orders"] == {"type": "file", "path": "/d/i.json", "parsing": [{"function": "x"}]}
    assert bound["pipeline"]["output"] == {"type": "file", "path": "/o/o.csv"}
    several = {"datasets": {"lookup": {"type": "file", "path": "/ref.json"},
                            "input": {"type": "file", "path": "INPUT"}}}
    assert pipelines.bind(several, input_path="i.json", output_path="o.json")["datasets"] == {
        "lookup": {"type": "file", "path": "/ref.json"}, "input": {"type": "file", "path": "i.json"}}
    with pytest.raises(ValidationError) as caught:
        pipelines.bind({"datasets": {"a": {"path": "INPUT"}, "b": {"path": "x"}}}, input_path="i", output_path="o.json")
    assert caught.value.key == "pipeline.error.bind_ambiguous" and "a, b" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        pipelines.bind({"datasets": {"input": {"path": "INPUT"}, "b": {"path": "INPUT"}}}, input_path="i",
                       output_path="o.json")
    assert caught.value.key == "pipeline.error.bind_placeholder" and "'b'" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        pipelines.bind(single, input_path="i", output_path="out.txt")
    assert caught.value.key == "pipeline.error.output_extension"


# -- docetl itself (each test: one child process importing docetl) -----------------------------------------
def test_docetl_agrees_and_its_errors_name_operation_and_field() -> None:
    broken = with_ops("  - name: pick\n    type: sample\n    method: bogus\n    samples: 3\n"
                      "  - name: m\n    type: map\n    prompt: 'Hi {{ input.x }}'\n")
    offline, llm_map, problems, syntax = pipelines.docetl_check_many([OFFLINE, LLM_MAP, broken, "a: ["])
    assert offline == [] and llm_map == []
    assert [(p.key, p.where) for p in problems] == [("pipeline.problem.docetl", 'operation "pick" → method'),
                                                    ("pipeline.problem.docetl", 'operation "m"')]
    assert "uniform" in problems[0].params["detail"] and "output" in problems[1].params["detail"]
    assert problems[0].message("zh_CN").startswith('operation "pick" → method：docetl')
    assert [p.key for p in syntax] == ["pipeline.problem.yaml_syntax"]


RUN_SCRIPT = """
import json, sys
import litellm.litellm_core_utils.default_encoding
import litellm
litellm.suppress_debug_info = True
from docetl.runner import DSLRunner
config = json.load(open(sys.argv[1], encoding="utf-8"))
cost = DSLRunner(config, max_threads=4).load_run_save()
print("cost", cost)
"""


def test_offline_demo_runs_on_the_sample_spreadsheet_with_docetl(store: Store, team, tmp_path: Path) -> None:
    """The sample imported through the Data Center, the template bound to it, docetl run for real (no LLM)."""
    sample = (ROOT / "data" / "templates" / "sample_orders.xlsx").read_bytes()
    dataset = datasets.create_upload(store, team["editor"], "alpha", "sample_orders.xlsx", sample)
    dataset = datasets.ingest(store, dataset["id"])
    assert dataset["ingest_status"] == "ready" and dataset["row_count"] == 200
    rows = json.loads(Path(dataset["path"]).read_text(encoding="utf-8"))
    assert any(re.search(r"[\u4e00-\u9fff]", r["comment"] or "") for r in rows)
    assert any(r["comment"] and r["comment"].isascii() for r in rows)
    made = pipelines.create_from_template(store, team["editor"], "alpha", "offline_demo")
    config = pipelines.check(pipelines.read_yaml(store, team["viewer"], made["id"]))
    out = tmp_path / "run" / "output.json"
    bound = pipelines.bind(config, input_path=dataset["path"], output_path=out,
                           intermediate_dir=tmp_path / "run" / "intermediates")
    (tmp_path / "config.json").write_text(json.dumps(bound), encoding="utf-8")
    env = {**os.environ, **pipelines.offline_environment(tmp_path / "docetl-home")}
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(tmp_path / "config.json")], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    valid = [r for r in rows if r["region"] and isinstance(r["amount"], (int, float)) and r["amount"] > 0]
    assert 180 < len(valid) < 200  # the sheet's refunds, blank amount and missing region are dropped
    by_region = {r["region"]: r for r in result}
    assert set(by_region) == {r["region"] for r in valid}
    assert sum(r["orders"] for r in result) == len(valid)
    for region, row in by_region.items():
        amounts = [r["amount"] for r in valid if r["region"] == region]
        assert row["orders"] == len(amounts) and row["total_amount"] == pytest.approx(sum(amounts), abs=0.05)
