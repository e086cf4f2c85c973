"""Execute and Runs pages: create from a template, edit with validation, run on a dataset, watch, results.

One test runs docetl for real (the offline demo, in its own child process like the service does); the
others build their runs' outcomes through core's worker functions, so the suite stays fast.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core import clock, datasets, execute, pipelines, runs
from core.runs import ErrorCategory, RunStatus
from tests.app.conftest import ZH, login, new_app, texts
from tests.conftest import PASSWORD

PAGE, RUNS = "pages/execute.py", "pages/runs.py"
CSV = ("order_id,customer,region,amount,date,comment\n1,Ann,east,120.5,2024-01-03,fast delivery\n"
       "2,Bo,west,6400,2024-01-09,很好\n3,Cy,east,2300,2024-02-11,\n4,Di,,50,2024-02-12,no region\n").encode()


def _on(page: str, who: str):
    at = login(new_app(), who, PASSWORD)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _dataset(store, principal, name: str = "orders") -> dict:
    made = datasets.create_upload(store, principal, "alpha", f"{name}.csv", CSV, name=name)
    return datasets.ingest(store, made["id"])


def _queued(store, principal, dataset: dict | None = None) -> tuple[dict, dict]:
    pipe = pipelines.create_from_template(store, principal, "alpha", "offline_demo")
    dataset = dataset or _dataset(store, principal)
    run = runs.enqueue(store, principal, namespace="alpha", pipeline_name=pipe["name"], pipeline_id=pipe["id"],
                       yaml_text=pipelines.read_yaml(store, principal, pipe["id"]), input_dataset_id=dataset["id"])
    return pipe, run


def _finished(store, principal, status: RunStatus, **fields) -> dict:
    """A run taken through the worker's side of core without docetl (claim, then finish)."""
    pipe, run = _queued(store, principal)
    assert runs.claim(store, run["id"], "test-worker")
    return runs.finish(store, run["id"], status, **fields)


def _frame(at, column: str):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def _buttons(at) -> set[str]:
    return {b.key for b in at.button if b.key}


def test_editor_creates_edits_runs_for_real_and_saves_the_output(store, team):
    at = _on(PAGE, "editor")
    assert ZH["execute.empty"] in texts(at)
    assert at.selectbox(key="ex_template").value == ZH["pipeline.template.offline_demo.title"]
    at.button(key="ex_create").click().run()
    assert not at.exception, at.exception
    [pipe] = pipelines.list_pipelines(store, team["editor"], "alpha")
    assert ZH["execute.created"].format(name="offline_demo") in texts(at)
    assert at.selectbox(key="ex_pick").value == "offline_demo"
    assert list(_frame(at, ZH["execute.op"])[ZH["execute.op"]]) == ["normalize_order", "keep_valid_orders",
                                                                    "totals_by_region"]
    assert ZH["execute.valid"] in texts(at)

    editor = at.text_area(key=f"ex_yaml_{pipe['id']}")
    original = editor.value
    broken = original.replace("type: code_filter", "type: code_filtr")
    editor.input(broken).run()
    [problem] = pipelines.validate(broken)
    shown = "\n".join(e.value for e in at.error)
    assert ZH["execute.at_line"].format(line=problem.line) + problem.message("zh_CN") in shown
    assert "keep_valid_orders" in shown and "type" in shown and problem.line == original.splitlines().index(
        "    type: code_filter") + 1
    assert at.button(key="ex_save").disabled
    fixed = original.replace("# Offline demo:", "# Offline demo (checked):")
    at.text_area(key=f"ex_yaml_{pipe['id']}").input(fixed).run()
    assert not at.error and ZH["execute.valid"] in texts(at)
    at.button(key="ex_save").click().run()
    assert pipelines.read_yaml(store, team["editor"], pipe["id"]) == fixed
    assert ZH["execute.saved"].format(name="offline_demo") in texts(at)

    dataset = _dataset(store, team["editor"])
    datasets.create_upload(store, team["editor"], "alpha", "pending.csv", CSV, name="pending")  # not imported yet
    at.run()
    label = ZH["execute.dataset_label"].format(name="orders", rows=4)
    assert at.selectbox(key=f"ex_dataset_{pipe['id']}").options == [label]  # ready datasets only
    at.selectbox(key=f"ex_dataset_{pipe['id']}").select(label).run()
    assert list(_frame(at, "customer")["customer"]) == ["Ann", "Bo", "Cy", "Di"]  # the preview
    at.button(key="ex_run").click().run()
    assert not at.exception, at.exception
    [run] = runs.list_runs(store, team["editor"], "alpha")
    assert (run["status"], run["input_dataset_id"], run["pipeline_id"]) == ("queued", dataset["id"], pipe["id"])
    assert pipelines.get(store, team["editor"], pipe["id"])["input_dataset_id"] == dataset["id"]  # remembered
    assert ZH["execute.queued"].format(name="offline_demo") in texts(at)
    assert ZH["run.service_down"] in texts(at)  # a notice, not an error: no service in tests
    assert f"ex_cancel_{run['id']}" in _buttons(at)

    claimed = runs.claim_next(store, "test-worker", 2)
    assert claimed["id"] == run["id"]
    child = execute.start_child(store, claimed)
    assert child.wait(timeout=300) == 0, runs.log_tail(claimed)[-3000:]
    at.run()
    assert not at.exception, at.exception
    done = runs.get(store, team["editor"], run["id"])
    assert done["status"] == "completed" and (done["input_rows"], done["output_rows"]) == (4, 2)
    head = ZH["run.completed"].format(rows_in=4, rows_out=2, duration="|", cost="0.0000").split("|")[0]
    assert any(s.value.startswith(head) for s in at.success)
    table = _frame(at, "total_amount")
    assert sorted(zip(table["region"], table["orders"])) == [("east", 2), ("west", 1)]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [ZH["datacenter.download_json"], ZH["datacenter.download_csv"], ZH["datacenter.download_xlsx"]]
    assert f"ex_cancel_{run['id']}" not in _buttons(at)

    at.text_input(key=f"ex_save_name_{run['id']}").input("orders_by_region")
    at.button(key=f"ex_save_{run['id']}").click().run()
    assert not at.exception, at.exception
    [saved] = datasets.list_datasets(store, team["editor"], "alpha", source="pipeline_generated")
    assert (saved["name"], saved["row_count"], saved["lineage"]["run_id"]) == ("orders_by_region", 2, run["id"])
    assert ZH["run.saved"].format(name="orders_by_region", rows=2) in texts(at)

    history = _on(RUNS, "viewer")  # the run's detail, lineage both ways, for a reader
    facts = dict(zip(*[list(_frame(history, ZH["run.detail.field"]).iloc[:, i]) for i in (0, 1)]))
    assert facts[ZH["run.field.status"]] == ZH["run.status.completed"]
    assert (facts[ZH["run.field.input"]], facts[ZH["run.field.output"]]) == ("orders", "orders_by_region")
    assert facts[ZH["run.field.by"]] == "editor" and facts[ZH["run.field.rows"]] == "4 → 2"
    assert not {k for k in _buttons(history) if k.startswith("rh_save")}
    assert "totals_by_region" in "\n".join(c.value for c in history.code)  # the log


def test_viewer_sees_pipeline_and_queued_run_without_any_control(store, team):
    pipe, run = _queued(store, team["editor"])
    at = _on(PAGE, "viewer")
    assert at.selectbox(key="ex_pick").value == pipe["name"]
    assert at.text_area(key=f"ex_yaml_{pipe['id']}").disabled
    assert list(_frame(at, ZH["execute.op"])[ZH["execute.op"]])[0] == "normalize_order"
    assert ZH["run.status.queued"] in texts(at)
    assert not _buttons(at) & {"ex_create", "ex_save", "ex_run", "ex_rename", "ex_duplicate", "ex_delete",
                               f"ex_cancel_{run['id']}"}


def test_a_queued_run_is_cancelled_from_the_page(store, team):
    pipe, run = _queued(store, team["editor"])
    at = _on(PAGE, "editor")
    at.button(key=f"ex_cancel_{run['id']}").click().run()
    assert not at.exception, at.exception
    assert runs.get(store, team["editor"], run["id"])["status"] == "cancelled"
    assert ZH["run.status.cancelled"] in texts(at)
    assert ZH["run.cancelled_by"].format(user="editor") in texts(at)
    assert f"ex_cancel_{run['id']}" not in _buttons(at)


def test_failed_run_says_why_with_its_category(store, team):
    _finished(store, team["editor"], RunStatus.FAILED, error_category=ErrorCategory.USER_CODE,
              error={"key": "run.error.user_code", "params": {"detail": "ZeroDivisionError: division by zero"}})
    at = _on(PAGE, "editor")
    message = ZH["run.error.user_code"].format(detail="ZeroDivisionError: division by zero")
    assert ZH["run.failed"].format(category=ZH["run.category.user_code"], message=message) in texts(at)
    assert not at.get("download_button")


def test_completed_run_shows_dropped_documents_and_pages_its_output(store, team, tmp_path):
    output = tmp_path / "out.json"
    output.write_text(json.dumps([{"n": i} for i in range(120)]), encoding="utf-8")
    dropped = {"key": "run.warning.dropped", "params": {"op": "classify", "n": 3, "total": 123}}
    _finished(store, team["editor"], RunStatus.COMPLETED, input_rows=123, output_rows=120, cost=0.0123,
              output_path=str(output), warnings=[dropped])
    at = _on(PAGE, "viewer")
    assert ZH["run.warning.dropped"].format(op="classify", n=3, total=123) in [w.value for w in at.warning]
    assert list(_frame(at, "n")["n"]) == list(range(50))
    [page] = [n for n in at.number_input if n.key.startswith("ex_page_")]
    page.set_value(3).run()
    assert list(_frame(at, "n")["n"]) == list(range(100, 120))
    assert len(at.get("download_button")) == 3  # viewers may read and download
    assert not [b for b in at.button if (b.key or "").startswith("ex_save_")]  # but not save


def test_blank_pipeline_rename_duplicate_and_admin_delete(store, team):
    at = _on(PAGE, "editor")
    at.selectbox(key="ex_template").select(ZH["execute.blank"])
    at.text_input(key="ex_new_name").input("月度 报表").run()
    at.button(key="ex_create").click().run()
    [pipe] = pipelines.list_pipelines(store, team["editor"], "alpha")
    assert pipe["name"] == "月度_报表" and pipelines.read_yaml(store, team["editor"], pipe["id"]) == pipelines.blank_yaml()
    at.text_input(key=f"ex_other_{pipe['id']}").input("copy").run()
    at.button(key="ex_duplicate").click().run()
    assert sorted(p["name"] for p in pipelines.list_pipelines(store, team["editor"], "alpha")) == ["copy", "月度_报表"]
    assert at.selectbox(key="ex_pick").value == "copy"
    copy = pipelines.find(store, team["editor"], "alpha", "copy")
    at.text_input(key=f"ex_other_{copy['id']}").input("copy 2").run()
    at.button(key="ex_rename").click().run()
    assert at.selectbox(key="ex_pick").value == "copy_2"
    assert "ex_delete" not in _buttons(at)  # editors may not delete

    admin = _on(PAGE, "nsadmin")
    admin.selectbox(key="ex_pick").select("copy_2").run()
    admin.button(key="ex_delete").click().run()
    assert ZH["execute.confirm_delete"].format(name="copy_2") in texts(admin)
    assert len(pipelines.list_pipelines(store, team["nsadmin"], "alpha")) == 2  # not yet
    admin.button(key="ex_delete_yes").click().run()
    assert not admin.exception, admin.exception
    assert [p["name"] for p in pipelines.list_pipelines(store, team["nsadmin"], "alpha")] == ["月度_报表"]
    assert ZH["execute.deleted"].format(name="copy_2") in texts(admin)


def test_bad_name_says_why(store, team):
    at = _on(PAGE, "editor")
    at.selectbox(key="ex_template").select(ZH["execute.blank"])
    at.text_input(key="ex_new_name").input("-bad").run()
    at.button(key="ex_create").click().run()
    assert ZH["pipeline.error.name"].format(name="-bad") in texts(at)
    assert pipelines.list_pipelines(store, team["editor"], "alpha") == []


def test_runs_history_filters_by_status_and_pipeline(store, team):
    first, queued = _queued(store, team["editor"])
    other = pipelines.create_from_template(store, team["editor"], "alpha", "offline_demo", "other")
    dataset = datasets.list_datasets(store, team["editor"], "alpha")[0]
    later = runs.enqueue(store, team["editor"], namespace="alpha", pipeline_name="other", pipeline_id=other["id"],
                         yaml_text=pipelines.read_yaml(store, team["editor"], other["id"]),
                         input_dataset_id=dataset["id"])
    runs.cancel(store, team["editor"], later["id"])
    at = _on(RUNS, "viewer")
    table = _frame(at, ZH["run.field.pipeline"])
    assert list(table[ZH["run.field.pipeline"]]) == ["other", first["name"]]  # newest first
    at.selectbox(key="rh_status").select(ZH["run.status.queued"]).run()
    assert list(_frame(at, ZH["run.field.pipeline"])[ZH["run.field.id"]]) == [queued["id"][:8]]
    assert ZH["run.status.queued"] in texts(at) and not _buttons(at) & {f"rh_cancel_{queued['id']}"}
    at.selectbox(key="rh_status").select(ZH["history.all"])
    at.selectbox(key="rh_pipeline").select("other").run()
    assert list(_frame(at, ZH["run.field.pipeline"])[ZH["run.field.status"]]) == [ZH["run.status.cancelled"]]
    at.selectbox(key="rh_status").select(ZH["run.status.completed"]).run()
    assert ZH["history.empty"] in texts(at)


def test_runs_history_pages_back_to_the_oldest_run(store, team):
    pipe, oldest = _queued(store, team["editor"])
    yaml_text = pipelines.read_yaml(store, team["editor"], pipe["id"])
    start = clock.utcnow()  # after the oldest run was queued
    for i in range(1, 101):  # 101 runs: one more than a page
        runs.enqueue(store, team["editor"], namespace="alpha", pipeline_name=pipe["name"], pipeline_id=pipe["id"],
                     yaml_text=yaml_text, input_dataset_id=oldest["input_dataset_id"],
                     now=start + timedelta(seconds=i))
    at = _on(RUNS, "viewer")
    assert len(_frame(at, ZH["run.field.pipeline"])) == 100
    assert oldest["id"][:8] not in list(_frame(at, ZH["run.field.pipeline"])[ZH["run.field.id"]])
    assert ZH["history.range"].format(first=1, last=100, total=101) in texts(at)
    at.number_input(key=next(n.key for n in at.number_input if n.key.startswith("rh_page"))).set_value(2).run()
    assert list(_frame(at, ZH["run.field.pipeline"])[ZH["run.field.id"]]) == [oldest["id"][:8]]
    assert ZH["history.range"].format(first=101, last=101, total=101) in texts(at)


@pytest.mark.parametrize("who", ["admin", "nsadmin", "editor", "viewer", "outsider"])
def test_pages_render_for_every_role(store, team, who):
    _queued(store, team["editor"])
    for page, title in ((PAGE, "execute.title"), (RUNS, "history.title")):
        at = _on(page, who)
        assert at.title[0].value == ZH[title]


def test_docetl_check_button_reports_docetl_verdict(store, team):
    """The deep check builds the pipeline with docetl in a sandboxed child (seconds), never in the page."""
    pipelines.create_from_template(store, team["editor"], "alpha", "offline_demo", name="deep")
    at = login(new_app(), "editor", PASSWORD)
    at.switch_page(PAGE).run(timeout=60)
    at.button(key="ex_docetl_check").click().run(timeout=120)
    assert not at.exception, at.exception
    assert ZH["execute.docetl_ok"] in texts(at)
