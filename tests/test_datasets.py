"""Data Center registry: upload → pending → ingest → ready/failed, permissions, audit, files."""
from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core import datasets, readers, settings, workers
from core.errors import PermissionDenied, ValidationError
from core.principal import Principal
from core.settings import open_store
from core.store import Store

CSV = "2026 销售报表\n\n日期,地区,金额,编号\n2026-01-01,华东,100,00123\n2026-01-02,华北,250.5,00456\n".encode("utf-8")


def upload(store: Store, who: Principal, content: bytes = CSV, filename: str = "sales.csv", **kw) -> dict:
    return datasets.create_upload(store, who, "alpha", filename, content, **kw)


def test_upload_then_ingest_gives_a_ready_dataset_with_schema(store: Store, team) -> None:
    made = upload(store, team["editor"])
    assert made["ingest_status"] == "pending" and made["name"] == "sales"
    done = datasets.ingest(store, made["id"])
    assert done["ingest_status"] == "ready" and done["row_count"] == 2
    assert [c["name"] for c in done["schema"]] == ["日期", "地区", "金额", "编号"]
    assert {c["name"]: c["type"] for c in done["schema"]}["金额"] == "number"
    records = json.loads(Path(done["path"]).read_text(encoding="utf-8"))
    assert records[0] == {"日期": "2026-01-01", "地区": "华东", "金额": 100, "编号": "00123"}
    assert Path(done["path"]).parent == store.config.namespace_dir("alpha") / "data_center/datasets/user"
    assert datasets.ingest(store, made["id"]) is None  # a second worker finds nothing to do


def test_header_row_and_range_can_be_chosen(store: Store, team) -> None:
    made = upload(store, team["editor"], config={"header_row": 3, "start_row": 5})
    done = datasets.ingest(store, made["id"])
    assert done["row_count"] == 1 and done["ingest_config"] == {"header_row": 3, "start_row": 5}


def test_a_bad_file_fails_clearly_and_touches_nothing_else(store: Store, team) -> None:
    good = datasets.ingest(store, upload(store, team["editor"])["id"])
    bad = upload(store, team["editor"], content=b'[1, 2, 3]', filename="bad.json")
    failed = datasets.ingest(store, bad["id"])
    assert failed["ingest_status"] == "failed"
    assert failed["error"]["key"] == "dataset.error.json_not_records" and "list of objects" in failed["error"]["message"]
    assert datasets.get(store, team["viewer"], good["id"])["ingest_status"] == "ready"
    assert not Path(failed["path"]).exists()


def test_limits_name_the_limit_and_the_way_out(store: Store, config, team) -> None:
    settings.update(store, team["platform_admin"], "dataset_max_rows", 1)
    tuned = open_store(config)
    failed = datasets.ingest(tuned, upload(tuned, team["editor"])["id"])
    assert failed["error"]["key"] == "dataset.error.too_many_rows"
    assert "start and end row" in failed["error"]["message"]
    settings.update(store, team["platform_admin"], "dataset_max_mb", 1)
    with pytest.raises(ValidationError) as caught:
        upload(open_store(config), team["editor"], content=b"a,b\n" * 400_000, filename="big.csv")
    assert caught.value.key == "dataset.error.too_big"


def test_a_restart_never_leaves_an_import_processing(store: Store, team) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = workers.identity(gone.pid)  # read while the process exists, then it exits
    gone.wait()
    orphan, live = upload(store, team["editor"]), upload(store, team["editor"], name="second")
    assert datasets.claim(store, orphan["id"], worker=dead)["ingest_status"] == "processing"  # then it died
    assert datasets.claim(store, live["id"])["ingest_status"] == "processing"  # this process: still working
    assert datasets.recover_interrupted(store) == 1
    statuses = {r["id"]: r["ingest_status"] for r in store.execute("SELECT id, ingest_status FROM datasets")}
    assert statuses == {orphan["id"]: "pending", live["id"]: "processing"}
    assert datasets.next_pending(store) == orphan["id"]
    assert datasets.ingest(store, orphan["id"])["ingest_status"] == "ready"


def test_filenames_are_never_paths(store: Store, team) -> None:
    made = upload(store, team["editor"], filename="../../../etc/pass wd.csv")
    raw = Path(store.execute("SELECT raw_path FROM datasets WHERE id = ?", [made["id"]])[0]["raw_path"])
    assert raw.name == "pass wd.csv"
    assert raw.parent.parent == store.config.namespace_dir("alpha") / "data_center" / "raw"


def test_roles_for_upload_edit_and_delete(store: Store, team) -> None:
    with pytest.raises(PermissionDenied):
        upload(store, team["viewer"])
    with pytest.raises(PermissionDenied):
        upload(store, team["outsider"])
    made = datasets.ingest(store, upload(store, team["editor"])["id"])
    assert [d["id"] for d in datasets.list_datasets(store, team["viewer"], "alpha")] == [made["id"]]
    with pytest.raises(PermissionDenied):
        datasets.list_datasets(store, team["outsider"], "alpha")
    with pytest.raises(PermissionDenied):
        datasets.get(store, team["outsider"], made["id"])
    with pytest.raises(PermissionDenied):
        datasets.delete(store, team["editor"], made["id"])  # deleting is for namespace admins
    datasets.delete(store, team["nsadmin"], made["id"])
    assert not Path(made["path"]).exists()
    assert datasets.list_datasets(store, team["viewer"], "alpha") == []


def test_rename_describe_tag_search_and_audit(store: Store, team) -> None:
    made = upload(store, team["editor"])
    other = upload(store, team["editor"], filename="other.csv")
    with pytest.raises(ValidationError):
        datasets.update(store, team["editor"], other["id"], name="sales")  # names are unique per namespace
    datasets.update(store, team["editor"], made["id"], name="2026 销售", description="华东华北", tags=["财务", " q1 "])
    found = datasets.list_datasets(store, team["viewer"], "alpha", search="华东")
    assert [d["name"] for d in found] == ["2026 销售"] and found[0]["tags"] == ["q1", "财务"]
    assert [d["id"] for d in datasets.list_datasets(store, team["viewer"], "alpha", tag="财务")] == [made["id"]]
    actions = [r["action"] for r in store.execute("SELECT action FROM audit_logs WHERE resource_type = 'dataset'")]
    assert actions.count("dataset.upload") == 2 and "dataset.update" in actions


def test_docwrangler_uploads_appear_as_user_uploads_once(store: Store, team) -> None:
    files = store.config.namespace_dir("alpha") / "files"
    (files / "reviews.json").write_text(json.dumps([{"text": "好"}, {"text": "差"}]), encoding="utf-8")
    (files / "broken.json").write_text('{"not": "a list"', encoding="utf-8")
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 2
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 0
    found = {d["name"]: d for d in datasets.list_datasets(store, team["viewer"], "alpha")}
    assert found["reviews"]["source"] == "user_upload" and found["reviews"]["row_count"] == 2
    assert found["reviews"]["path"] == str(files / "reviews.json")
    assert found["broken"]["ingest_status"] == "failed" and found["broken"]["error"]["key"] == "dataset.error.json"
    datasets.delete(store, team["nsadmin"], found["reviews"]["id"])
    assert (files / "reviews.json").exists()  # the legacy file is DocWrangler's: left where it was
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 0  # and deleted here stays deleted
    assert "reviews" not in {d["name"] for d in datasets.list_datasets(store, team["viewer"], "alpha")}
    (files / "notes.json").write_text("[]", encoding="utf-8")
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 1  # new files still appear


def test_docwrangler_files_in_other_shapes_get_a_normalized_copy_and_bad_ones_fail_alone(store: Store, team) -> None:
    files = store.config.namespace_dir("alpha") / "files"
    rows = [{"text": "好", "n": 1}, {"text": "差", "n": 2}]
    (files / "bom.json").write_bytes(codecs.BOM_UTF8 + json.dumps(rows, ensure_ascii=False).encode("utf-8"))
    (files / "lines.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    (files / "gbk.json").write_bytes(json.dumps(rows, ensure_ascii=False).encode("gbk"))
    (files / "late_junk.json").write_bytes(b"[" + b'{"a": 1},' * 10_000 + b'{"a": "\xff"}]')  # bad past 64 KB
    (files / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 5
    found = {d["name"]: d for d in datasets.list_datasets(store, team["viewer"], "alpha")}
    for name in ("bom", "lines", "gbk"):  # what runs and pages read: a plain UTF-8 JSON list, the original untouched
        copy = datasets.ready_path(store, found[name]["id"], "alpha")
        assert json.loads(copy.read_text(encoding="utf-8")) == rows and copy.parent.name == "user", name
        assert found[name]["row_count"] == 2 and (files / f"{name}.json").exists()
    assert found["late_junk"]["error"]["key"] == "dataset.error.encoding"
    assert found["deep"]["error"]["key"] == "dataset.error.json"
    copy = Path(found["bom"]["path"])
    datasets.delete(store, team["nsadmin"], found["bom"]["id"])
    assert not copy.exists() and (files / "bom.json").exists()  # our copy goes, DocWrangler's file stays
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 0  # and it is not discovered again


def test_legacy_discovery_skips_links_and_files_it_cannot_copy_now(store: Store, team) -> None:
    files = store.config.namespace_dir("alpha") / "files"
    outside = store.config.home / "elsewhere.json"
    outside.write_text('[{"secret": 1}]', encoding="utf-8")
    (files / "link.json").symlink_to(outside)  # could point anywhere: never registered
    (files / "lines.json").write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")  # needs a copy
    (files / "nan.json").write_text('[{"a": NaN, "b": 1}]', encoding="utf-8")  # not strict JSON: a copy too
    user = datasets.data_center_dir(store, "alpha") / "datasets" / "user"
    user.parent.mkdir(parents=True, exist_ok=True)
    if user.is_dir():
        user.rmdir()
    user.write_text("in the way")  # the copy cannot be written (as on a full disk)
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 0  # not registered as damaged: tried again later
    user.unlink()
    assert datasets.sync_legacy(store, team["viewer"], "alpha") == 2
    found = {d["name"]: d for d in datasets.list_datasets(store, team["viewer"], "alpha")}
    assert set(found) == {"lines", "nan"} and found["lines"]["row_count"] == 2
    assert json.loads(Path(found["nan"]["path"]).read_text(encoding="utf-8")) == [{"a": None, "b": 1}]


def test_an_xls_out_of_memory_is_the_limit_speaking_not_damage(monkeypatch, tmp_path: Path) -> None:
    import xlrd

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(xlrd, "open_workbook", exhausted)  # as under the sandbox's address-space limit
    with pytest.raises(MemoryError):
        readers.xls_rows(str(tmp_path / "big.xls"), None, 10)


def test_two_sessions_discovering_at_once_register_each_file_once(store: Store, team) -> None:
    import threading

    files = store.config.namespace_dir("alpha") / "files"
    for i in range(5):
        (files / f"doc{i}.json").write_bytes(codecs.BOM_UTF8 + b'[{"i": 1}]')  # copies too: none left over
    start, counts = threading.Barrier(2), {}

    def discover(who: str) -> None:
        start.wait()
        counts[who] = datasets.sync_legacy(store, team[who], "alpha")

    workers_ = [threading.Thread(target=discover, args=(who,)) for who in ("viewer", "editor")]
    for w in workers_:
        w.start()
    for w in workers_:
        w.join()
    assert sum(counts.values()) == 5
    assert sorted(d["name"] for d in datasets.list_datasets(store, team["viewer"], "alpha")) == [f"doc{i}" for i in range(5)]
    copies = list((datasets.data_center_dir(store, "alpha") / "datasets" / "user").glob("*.json"))
    assert len(copies) == 5


def test_an_excel_upload_imports_under_its_title_block(store: Store, team, tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["季度报表"])
    sheet.append([])
    sheet.append(["日期", "地区", "数量"])
    from datetime import date

    sheet.append([date(2026, 1, 5), "华东", 3])
    sheet.append([date(2026, 1, 6), "华北", 4])
    path = tmp_path / "q1.xlsx"
    book.save(path)
    done = datasets.ingest(store, upload(store, team["editor"], content=path.read_bytes(), filename="q1.xlsx")["id"])
    assert done["ingest_status"] == "ready" and done["row_count"] == 2
    assert json.loads(Path(done["path"]).read_text(encoding="utf-8"))[0] == {"日期": "2026-01-05", "地区": "华东", "数量": 3}


def test_the_format_comes_from_the_bytes_and_hostile_files_fail_alone(store: Store, team) -> None:
    disguised = datasets.ingest(store, upload(store, team["editor"], filename="really-csv.xlsx")["id"])
    assert disguised["ingest_status"] == "ready" and disguised["row_count"] == 2
    junk = datasets.ingest(store, upload(store, team["editor"], content=bytes(range(256)) * 64, filename="x.xlsx")["id"])
    assert junk["ingest_status"] == "failed" and junk["error"]["message"]


@pytest.mark.parametrize("member", ["[Content_Types].xml", "xl/worksheets/sheet1.xml"])
def test_a_damaged_compressed_part_fails_its_import_and_its_preview_in_words(store: Store, team, tmp_path: Path,
                                                                             member: str) -> None:
    from tests.test_filesafety import damaged_deflate, real_xlsx

    path = damaged_deflate(real_xlsx(tmp_path / "ok.xlsx"), tmp_path / "damaged.xlsx", member)
    with pytest.raises(ValidationError) as seen:
        readers.preview(path)
    assert "damaged" in seen.value.message("en")
    done = datasets.ingest(store, upload(store, team["editor"], content=path.read_bytes(), filename="d.xlsx")["id"])
    assert done["ingest_status"] == "failed" and "damaged" in done["error"]["message"]


def test_an_unforeseen_reader_error_fails_the_import_instead_of_leaving_it_processing(store: Store, team,
                                                                                     monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise KeyError("a reader bug")

    monkeypatch.setattr(datasets.filesafety, "check_upload", broken)  # stands in for a bug nobody foresaw
    made = upload(store, team["editor"])
    done = datasets.ingest(store, made["id"])
    assert done["ingest_status"] == "failed" and done["error"]["key"] == "dataset.error.unexpected"
    assert "KeyError" in done["error"]["message"] and "damaged" not in done["error"]["message"]  # not the file's fault
    assert not list(Path(done["path"]).parent.glob("*.part-*"))


def _workbook(tmp_path: Path) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "数据"
    for row in (["2026 报表"], [], ["编号", "名称", "数量"], ["00123", "甲", 1], ["00456", "乙", 2.5]):
        sheet.append(row)
    hidden = book.create_sheet("备注")
    hidden.sheet_state = "hidden"
    hidden.append(["x"])
    path = tmp_path / "book.xlsx"
    book.save(path)
    return path


def test_preview_detects_the_header_and_can_be_overridden(tmp_path: Path) -> None:
    path = _workbook(tmp_path)
    seen = readers.preview(path)
    assert seen["format"] == "xlsx" and seen["sheet"] == "数据" and seen["header_row"] == 3
    assert seen["sheets"] == [{"name": "数据", "hidden": False}, {"name": "备注", "hidden": True}]
    assert seen["columns"] == [{"name": "编号", "type": "text"}, {"name": "名称", "type": "text"},
                               {"name": "数量", "type": "number"}]
    assert seen["rows"][0] == {"编号": "00123", "名称": "甲", "数量": 1} and seen["total_rows"] == 2
    other = readers.preview(path, header_row=4)
    assert [c["name"] for c in other["columns"]] == ["00123", "甲", "1"] and other["total_rows"] == 1


def test_preview_of_csv_and_json_and_a_bad_file(tmp_path: Path) -> None:
    csv_path = tmp_path / "a.csv"
    csv_path.write_bytes(CSV)
    assert readers.preview(csv_path)["header_row"] == 3
    json_path = tmp_path / "a.json"
    json_path.write_text('[{"a": 1}, {"a": 2, "b": "x"}]')
    seen = readers.preview(json_path, limit=1)
    assert seen["rows"] == [{"a": 1}] and seen["total_rows"] == 2 and [c["name"] for c in seen["columns"]] == ["a", "b"]
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ValidationError):
        readers.preview(junk)


def test_a_legacy_xls_previews_and_imports(store: Store, team, tmp_path: Path) -> None:
    from datetime import date

    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("旧表")
    dated = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for col, value in enumerate(["日期", "编号", "数量"]):
        sheet.write(2, col, value)
    sheet.write(0, 0, "2019 年旧报表")
    sheet.write(3, 0, date(2019, 5, 1), dated)
    sheet.write(3, 1, "00123")
    sheet.write(3, 2, 7)
    sheet.write(4, 0, date(2019, 5, 2), dated)
    sheet.write(4, 1, "00456")
    sheet.write(4, 2, 2.5)
    path = tmp_path / "old.xls"
    book.save(str(path))
    seen = readers.preview(path)
    assert seen["format"] == "xls" and seen["sheet"] == "旧表" and seen["header_row"] == 3
    assert seen["rows"][0] == {"日期": "2019-05-01", "编号": "00123", "数量": 7} and seen["total_rows"] == 2
    done = datasets.ingest(store, upload(store, team["editor"], content=path.read_bytes(), filename="old.xls")["id"])
    assert done["ingest_status"] == "ready" and done["row_count"] == 2


def test_the_xlsx_download_keeps_text_as_text(tmp_path: Path) -> None:
    import openpyxl

    records = [{"a": "=1+1", "b": '=HYPERLINK("http://evil","click")', "c": "x\u0001y"}]
    path = tmp_path / "out.xlsx"
    path.write_bytes(datasets.export(records, ["a", "b", "c"], "xlsx"))
    cells = list(openpyxl.load_workbook(path).active.iter_rows(min_row=2))[0]
    assert [(c.value, c.data_type) for c in cells] == [("=1+1", "s"), ('=HYPERLINK("http://evil","click")', "s"),
                                                        ("xy", "s")]


def test_a_damaged_xls_is_refused_in_words_whatever_xlrd_trips_over(tmp_path: Path) -> None:
    """Random damage inside the Workbook stream of a real .xls (the compound file's directory intact, so
    the checks pass): every preview either works or says why, never a raw KeyError or struct.error."""
    import random

    import xlwt

    from core.errors import WorkbenchError

    book = xlwt.Workbook()
    sheet = book.add_sheet("S")
    for r in range(30):
        for c in range(5):
            sheet.write(r, c, f"v{r}{c}" if r == 0 else r * c)
    good = tmp_path / "good.xls"
    book.save(str(good))
    data, rng, refused = good.read_bytes(), random.Random(1), 0
    for trial in range(150):
        damaged = bytearray(data)
        for _ in range(5):
            damaged[rng.randrange(600, len(damaged))] = rng.randrange(256)
        path = tmp_path / f"d{trial}.xls"
        path.write_bytes(bytes(damaged))
        try:
            readers.preview(path)
        except WorkbenchError as exc:
            assert exc.message("en") and "{" not in exc.message("en")
            refused += 1
    assert refused >= 30  # the damage was real


@pytest.mark.parametrize("options", [{"header_row": -1}, {"header_row": 0}, {"end_row": -1}, {"limit": -1},
                                     {"start_row": 5, "end_row": 4}])
def test_row_options_below_one_or_out_of_order_are_refused(store: Store, team, options: dict) -> None:
    path = store.config.home / "s.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(ValidationError) as seen:
        readers.preview(path, **options)
    assert seen.value.key in ("dataset.error.row_number", "dataset.error.row_order")
    config = {k: v for k, v in options.items() if k != "limit"}
    if config:
        with pytest.raises(ValidationError):
            upload(store, team["editor"], config=config)
        assert datasets.list_datasets(store, team["editor"], "alpha") == []  # nothing stored


def test_numbers_past_a_float_stay_text_and_json_nan_is_empty(store: Store, team) -> None:
    done = datasets.ingest(store, upload(store, team["editor"], content=b"a,b\n1e999,-1e999\n2,3\n",
                                         filename="big.csv")["id"])
    text = Path(done["path"]).read_text(encoding="utf-8")
    assert json.loads(text) == [{"a": "1e999", "b": "-1e999"}, {"a": 2, "b": 3}] and "Infinity" not in text
    done = datasets.ingest(store, upload(store, team["editor"], content=b'[{"x": NaN, "y": Infinity}]',
                                         filename="py.json")["id"])
    assert json.loads(Path(done["path"]).read_text(encoding="utf-8"), parse_constant=None) == [
        {"x": None, "y": "Infinity"}]


def test_preview_and_import_agree_on_midnight_and_long_durations(store: Store, team, tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["when", "dur"])
    sheet.append([datetime(2024, 1, 3), timedelta(hours=26.5)])
    sheet.append([datetime(2024, 1, 3, 9, 30), timedelta(hours=5)])
    sheet["B2"].number_format = sheet["B3"].number_format = "[h]:mm:ss"
    path = tmp_path / "times.xlsx"
    book.save(path)
    shown = readers.preview(path)["rows"]
    done = datasets.ingest(store, upload(store, team["editor"], content=path.read_bytes(), filename="t.xlsx")["id"])
    stored = json.loads(Path(done["path"]).read_text(encoding="utf-8"))
    assert shown == stored == [{"when": "2024-01-03", "dur": "26:30:00"}, {"when": "2024-01-03T09:30:00", "dur": "05:00:00"}]


def test_exports_open_in_excel(tmp_path: Path) -> None:
    import openpyxl

    records = [{"名称": "甲", "n": 1, "tags": ["a"]}, {"名称": "乙", "n": None}]
    text = datasets.export(records, ["名称", "n", "tags"], "csv").decode("utf-8")
    assert text.startswith("\ufeff名称,n,tags") and '"[""a""]"' in text
    path = tmp_path / "out.xlsx"
    path.write_bytes(datasets.export(records, ["名称", "n", "tags"], "xlsx"))
    rows = list(openpyxl.load_workbook(path).active.values)
    assert rows == [("名称", "n", "tags"), ("甲", 1, '["a"]'), ("乙", None, None)]
    with pytest.raises(ValidationError):
        datasets.export(records, ["n"], "pdf")
