"""Data Center page: upload → preview → configure → import, the list and its filters, detail, edit, delete."""
from __future__ import annotations

import io
import json
import time

import pytest

from core import datasets
from tests.app.conftest import ZH, login, new_app, texts
from tests.conftest import PASSWORD

PAGE = "pages/data_center.py"
CSV = ("Quarterly report,,\ngenerated 2024,,\nname,qty,day\napple,1,2024-01-01\npear,2,2024-01-02\n"
       "plum,3,2024-01-03\n").encode()


def _on_page(who: str):
    at = login(new_app(), who, PASSWORD)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _columns(at, index: int = 0) -> list[str]:
    return list(at.dataframe[index].value.iloc[:, 0])


def _ready(store, principal, name: str = "fruit", content: bytes = CSV, ns: str = "alpha") -> dict:
    made = datasets.create_upload(store, principal, ns, f"{name}.csv", content, name=name)
    return datasets.ingest(store, made["id"])


def _finish_imports(at, store, deadline: float = 60.0):
    """The import runs on a background thread: wait until none is pending/processing, then rerun."""
    end = time.monotonic() + deadline
    while store.execute("SELECT count(*) AS n FROM datasets WHERE ingest_status IN ('pending', 'processing')")[0]["n"]:
        assert time.monotonic() < end, "the background import did not finish"
        time.sleep(0.1)
    return at.run()


def test_editor_uploads_previews_changes_header_and_imports(store, team):
    at = _on_page("editor")
    at.file_uploader[0].upload("report.csv", CSV, "text/csv").run()
    assert not at.exception, at.exception
    assert at.number_input(key="dc_header").value == 3  # detected under the title block
    assert _columns(at) == ["name", "qty", "day"]
    at.number_input(key="dc_header").set_value(1).run()  # the reader overrides the detection
    assert _columns(at)[0] == "Quarterly report"
    at.number_input(key="dc_header").set_value(3).run()
    at.number_input(key="dc_end").set_value(5).run()  # rows 4..5 only
    at.text_input(key="dc_name").input("fruit").run()
    at.button(key="dc_import").click().run()
    assert not at.exception, at.exception
    _finish_imports(at, store)
    assert ZH["datacenter.imported"].format(name="fruit", rows=2) in texts(at)
    [found] = datasets.list_datasets(store, team["editor"], "alpha")
    assert found["ingest_status"] == "ready" and found["row_count"] == 2
    assert [c["name"] for c in found["schema"]] == ["name", "qty", "day"]
    assert at.selectbox(key="dc_pick").value == "fruit"
    schema = [df.value for df in at.dataframe if list(df.value.columns) == [ZH["datacenter.column"], ZH["datacenter.type"]]]
    assert list(schema[-1].iloc[:, 0]) == ["name", "qty", "day"]
    assert not at.file_uploader[0].value  # a fresh uploader for the next file
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [ZH["datacenter.download_json"], ZH["datacenter.download_csv"], ZH["datacenter.download_xlsx"]]


def test_xlsx_hidden_sheet_is_marked_and_can_be_chosen(store, team):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.title = "Visible"
    book.active.append(["a", "b"])
    book.active.append([1, 2])
    secret = book.create_sheet("Secret")
    secret.sheet_state = "hidden"
    secret.append(["x", "y", "z"])
    secret.append([1, 2, 3])
    out = io.BytesIO()
    book.save(out)
    at = _on_page("editor")
    at.file_uploader[0].upload("book.xlsx", out.getvalue()).run()
    assert not at.exception, at.exception
    hidden = f"Secret ({ZH['datacenter.hidden']})"
    assert at.selectbox(key="dc_sheet").options == ["Visible", hidden]
    assert _columns(at) == ["a", "b"]
    at.selectbox(key="dc_sheet").select(hidden).run()
    assert _columns(at) == ["x", "y", "z"]
    at.button(key="dc_import").click().run()
    _finish_imports(at, store)
    [found] = datasets.list_datasets(store, team["editor"], "alpha")
    assert [c["name"] for c in found["schema"]] == ["x", "y", "z"]


def test_bad_file_says_why_without_a_traceback(store, team):
    at = _on_page("editor")
    at.file_uploader[0].upload("bad.json", b"[1, 2]").run()
    assert not at.exception, at.exception
    assert ZH["dataset.error.json_not_records"] in texts(at)
    assert not [b for b in at.button if b.key == "dc_import"]


def test_viewer_sees_the_list_but_cannot_upload_edit_or_delete(store, team):
    _ready(store, team["editor"])
    at = _on_page("viewer")
    assert not at.file_uploader
    assert "fruit" in set(at.dataframe[0].value.iloc[:, 0])
    assert ZH["datacenter.status.ready"] in set(at.dataframe[0].value.iloc[:, 2])
    assert not [b for b in at.button if b.key in ("dc_delete",) or "dc_edit" in (b.key or "")]
    labels = [b.proto.label for b in at.get("download_button")]
    assert ZH["datacenter.download_csv"] in labels  # viewers may still read and download


def test_editor_cannot_delete_and_admin_delete_asks_first(store, team):
    dataset = _ready(store, team["editor"])
    assert not [b for b in _on_page("editor").button if b.key == "dc_delete"]
    at = _on_page("nsadmin")
    at.button(key="dc_delete").click().run()
    assert ZH["datacenter.confirm_delete"].format(name="fruit") in texts(at)
    assert datasets.get(store, team["nsadmin"], dataset["id"])  # nothing happened yet
    at.button(key="dc_delete_yes").click().run()
    assert not at.exception, at.exception
    assert datasets.list_datasets(store, team["nsadmin"], "alpha") == []
    assert ZH["datacenter.deleted"].format(name="fruit") in texts(at)


def test_edit_renames_describes_and_tags_then_filters_find_it(store, team):
    dataset = _ready(store, team["editor"])
    _ready(store, team["editor"], name="other")
    at = _on_page("editor")
    at.selectbox(key="dc_pick").select("fruit").run()
    at.text_input(key=f"dc_edit_name_{dataset['id']}").input("fruit 2024")
    at.text_area(key=f"dc_edit_desc_{dataset['id']}").input("sales by fruit")
    at.text_input(key=f"dc_edit_tags_{dataset['id']}").input("sales，q1, ")
    at.button(key="FormSubmitter:dc_edit-" + ZH["common.save"]).click().run()
    assert not at.exception, at.exception
    saved = datasets.get(store, team["editor"], dataset["id"])
    assert (saved["name"], saved["description"], saved["tags"]) == ("fruit 2024", "sales by fruit", ["q1", "sales"])
    assert at.selectbox(key="dc_pick").value == "fruit 2024"
    at.selectbox(key="dc_tag").select("sales").run()
    assert list(at.dataframe[0].value.iloc[:, 0]) == ["fruit 2024"]
    at.selectbox(key="dc_tag").select(ZH["datacenter.all"])
    at.text_input(key="dc_search").input("oth").run()
    assert list(at.dataframe[0].value.iloc[:, 0]) == ["other"]
    at.selectbox(key="dc_source").select(ZH["datacenter.source.pipeline_generated"])
    at.text_input(key="dc_search").input("").run()
    assert at.dataframe[0].value.empty and ZH["datacenter.empty"] in texts(at)


def test_rename_to_a_taken_name_says_why(store, team):
    dataset = _ready(store, team["editor"])
    _ready(store, team["editor"], name="other")
    at = _on_page("editor")
    at.selectbox(key="dc_pick").select("fruit").run()
    at.text_input(key=f"dc_edit_name_{dataset['id']}").input("other")
    at.button(key="FormSubmitter:dc_edit-" + ZH["common.save"]).click().run()
    assert not at.exception, at.exception
    assert ZH["dataset.error.name_taken"].format(name="other", namespace="alpha") in texts(at)


def test_preview_is_paginated_and_legacy_files_appear(store, team):
    rows = [{"n": i} for i in range(120)]
    legacy = store.config.namespace_dir("alpha") / "files"
    legacy.mkdir(parents=True, exist_ok=True)
    (legacy / "old_upload.json").write_text(json.dumps(rows))
    at = _on_page("viewer")
    assert "old_upload" in set(at.dataframe[0].value.iloc[:, 0])
    page_rows = at.dataframe[-1].value
    assert list(page_rows["n"]) == list(range(50))
    at.number_input(key="dc_page").set_value(3).run()
    assert list(at.dataframe[-1].value["n"]) == list(range(100, 120))


@pytest.mark.parametrize("who", ["admin", "nsadmin", "editor", "viewer", "outsider"])
def test_page_renders_for_every_role(store, team, who):
    at = _on_page(who)
    assert at.title[0].value == ZH["datacenter.title"]


def test_an_import_in_progress_shows_its_status_and_a_failed_one_says_why(store, team):
    waiting = datasets.create_upload(store, team["editor"], "alpha", "later.csv", CSV, name="later")  # no worker yet
    at = _on_page("editor")
    at.selectbox(key="dc_pick").select("later").run()
    assert not at.exception, at.exception
    running = ZH["datacenter.import_running"].split("：")[0]
    bars = [bar.proto.text for bar in at.get("progress")]
    assert len(bars) == 1 and bars[0].startswith(running) and ZH["datacenter.status.pending"] in bars[0]
    datasets.ingest(store, waiting["id"])
    at.run()
    assert not at.get("progress")
    at.file_uploader[0].upload("tiny.csv", b"a,b\n1,2\n", "text/csv").run()
    store.execute_write("UPDATE datasets SET ingest_status = 'failed'")  # nothing else may change below
    at.text_input(key="dc_name").input("tiny").run()
    at.button(key="dc_import").click().run()
    _finish_imports(at, store)
    assert ZH["datacenter.imported"].format(name="tiny", rows=1) in texts(at)
