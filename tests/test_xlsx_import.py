"""The columnar .xlsx import (core.xlsx_import) writes exactly the records of the per-cell reader
(readers.read_table), falls back to it wherever it cannot, and the import's JSON appears atomically."""
from __future__ import annotations

import json
import random
from datetime import date, datetime, time, timedelta
from pathlib import Path

import openpyxl
import pytest
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from core import datasets, readers, xlsx_import
from core.errors import ValidationError
from core.store import Store

from tests.test_datasets import upload

LIMITS = {"dataset_max_rows": 100_000, "dataset_max_columns": 200}


def book(path: Path, rows: list[list], *, origin: str = "A1", formats: dict[int, str] | None = None,
         setup=None) -> Path:
    """A one-sheet workbook with `rows` starting at `origin`; None cells are left out entirely."""
    wb = openpyxl.Workbook()
    if setup:
        setup(wb)
    ws = wb.active
    ws.title = "Data"
    first_col, first_row = openpyxl.utils.cell.coordinate_from_string(origin)
    col0 = openpyxl.utils.column_index_from_string(first_col)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if value is None:
                continue
            cell = ws.cell(row=first_row + i, column=col0 + j, value=value)
            if formats and j in formats and not isinstance(value, str):
                cell.number_format = formats[j]
    wb.save(path)
    return path


def exact(value):
    """The records as JSON text: equal only when every value has the same type and the keys the same order."""
    return json.dumps(value, ensure_ascii=False)


def both(path: Path, config: dict | None = None, limits: dict | None = None) -> dict:
    """Import `path` through `write_table` (fast path first) and compare with the per-cell reader."""
    config, limits = config or {}, limits or LIMITS
    names, records = readers.read_table(str(path), "xlsx", config, limits)
    out = path.with_suffix(".json")
    result = readers.write_table(str(path), "xlsx", config, limits, str(out))
    written = json.loads(out.read_text(encoding="utf-8"))
    assert exact(written) == exact(records)
    assert result["names"] == names and result["row_count"] == len(records)
    assert result["schema"] == [{"name": n, "type": datasets.tabular.infer_type(r.get(n) for r in records[:1000])}
                                for n in names]
    return result


TITLE = [["Quarterly sales report"], [], ]
HEADER = ["code", "big id", "qty", "amount", "day", "at", "ok", "note", "name", None, "name", "#GETTING_DATA"]


def rich_rows() -> list[list]:
    rows = [
        ["00123", "12345678901234567890", 1, 1.5, date(2026, 1, 5), datetime(2026, 1, 5, 8, 30, 15, 123000), True,
         'say "hi"', "a", "x", "b", "#GETTING_DATA"],
        ["007", "98765432109876543", 2, 2.0, date(2026, 1, 6), datetime(2026, 1, 6, 0, 0), False,
         "back\\slash", "NA", None, "NULL", None],
        [],  # an entirely empty row: dropped
        ["", None, None, None, None, None, None, "", None, None, None, None],  # only empty text: dropped too
        ["A-1", "4", -3, -0.0, date(1999, 12, 31), datetime(2026, 2, 1, 23, 59, 59), None, "line\nbreak\ttab",
         "b", "#N/A", "#REF!", None],
        [None, "x", 10**14, 1e15, None, datetime(2026, 2, 1, 12, 0, 0, 999000), True, "é漢字😀 </script>",
         "#VALUE!", "y", None, None],
        ["z", None, 4, 1e16, date(2026, 3, 1), datetime(2026, 3, 1, 6, 0, 0, 1000), False, "N/A", "null", None,
         "c", None],
        ["w", "", 5, 0.1 + 0.2, date(2026, 3, 2), datetime(2030, 12, 31, 1, 2, 3), True, "#N/A N/A", "", None,
         None, None],
        ["v", "1e5", 6, 123456789.123, None, None, None, None, None, None, None, None],
        ["t", "-", 8, 1e300, None, None, None, None, None, None, None, None],
        ["s", "-", 9, -1.5e20, None, None, None, None, None, None, None, None],
        ["u", "3.0", 7, 1e-7, date(2026, 3, 3), datetime(2026, 3, 3, 0, 0, 0, 2000), False, "plain", "d", "e",
         "f", None],
    ]
    return rows


FORMATS = {4: "yyyy-mm-dd", 5: "yyyy-mm-dd hh:mm:ss"}


def rich_book(path: Path) -> Path:
    return book(path, TITLE + [HEADER] + rich_rows(), formats=FORMATS)


def test_the_fast_path_writes_the_per_cell_readers_records(tmp_path: Path) -> None:
    result = both(rich_book(tmp_path / "rich.xlsx"))
    assert result["reader"] == "fastexcel" and result["fallback"] is None, result["fallback"]
    assert result["names"] == ["code", "big id", "qty", "amount", "day", "at", "ok", "note", "name", "column_10",
                               "name_2", "column_12"]
    first = json.loads((tmp_path / "rich.json").read_text(encoding="utf-8"))[0]
    assert first["code"] == "00123" and first["big id"] == "12345678901234567890" and first["qty"] == 1
    assert first["day"] == "2026-01-05" and first["at"] == "2026-01-05T08:30:15.123000"
    assert first["column_12"] is None and first["note"] == 'say "hi"'


@pytest.mark.parametrize("config", [
    {"header_row": 3},
    {"header_row": 3, "start_row": 6},
    {"header_row": 3, "end_row": 8},
    {"start_row": 7, "end_row": 11},
    {"header_row": 3, "start_row": 5, "end_row": 5},
    {"header_row": 3, "start_row": 40},
    {"header_row": 4},
    {"header_row": 7},
])
def test_header_and_row_range_follow_the_per_cell_reader(tmp_path: Path, config: dict) -> None:
    result = both(rich_book(tmp_path / "rich.xlsx"), config)
    # an empty row range, a start past the data, a header row holding dates, an empty header row:
    # the per-cell reader's business
    if config not in ({"header_row": 3, "start_row": 5, "end_row": 5}, {"header_row": 3, "start_row": 40},
                      {"header_row": 4}, {"header_row": 7}):
        assert result["reader"] == "fastexcel", result["fallback"]


def test_a_column_empty_in_its_first_rows_keeps_the_type_of_its_later_cells(tmp_path: Path) -> None:
    # fastexcel guesses the conversion's types from the first 1000 rows: there these columns are empty,
    # so it would have read their later numbers, dates and booleans as text
    rows = [["n", "later number", "later date", "later flag", "later text"]]
    rows += [[i, None, None, None, None] for i in range(1200)]
    rows += [[1200, 2.5, datetime(2026, 5, 6, 7, 8, 9), True, "t"], [1201, 3, datetime(2026, 5, 7), False, None]]
    result = both(book(tmp_path / "late.xlsx", rows, formats={2: "yyyy-mm-dd hh:mm:ss"}))
    assert result["reader"] == "fastexcel", result["fallback"]
    last = json.loads((tmp_path / "late.json").read_text(encoding="utf-8"))[-2:]
    assert last == [{"n": 1200, "later number": 2.5, "later date": "2026-05-06T07:08:09", "later flag": True,
                     "later text": "t"},
                    {"n": 1201, "later number": 3, "later date": "2026-05-07", "later flag": False,
                     "later text": None}]


def test_a_number_column_with_na_text_below_its_first_rows_is_exact(tmp_path: Path) -> None:
    rows = [["n", "amount"]] + [[i, None] for i in range(1100)] + [[1100, "NA"], [1101, 4.5]]
    both(book(tmp_path / "na.xlsx", rows))


def test_random_values_round_trip_exactly(tmp_path: Path) -> None:
    rng = random.Random(7)
    rows = [["id", "value", "text", "when", "flag"]]
    alphabet = 'ab "\\\n\t/é漢😀<>&'
    for i in range(3000):
        magnitude = 10 ** rng.randint(-12, 18)
        value = rng.choice([rng.random() * magnitude, float(rng.randint(-10**6, 10**6)), rng.randint(-10**9, 10**9),
                            round(rng.uniform(-1e5, 1e5), rng.randint(0, 4)), None])
        text = rng.choice([None, "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))),
                           f"{rng.randrange(10**6):06d}"])
        when = rng.choice([None, datetime(2000, 1, 1) + timedelta(seconds=rng.randrange(10**9),
                                                                  microseconds=rng.randrange(10**6)),
                           date(1990, 1, 1) + timedelta(days=rng.randrange(20000))])
        rows.append([i, value, text, when, rng.choice([None, True, False])])
    result = both(book(tmp_path / "random.xlsx", rows, formats={3: "yyyy-mm-dd hh:mm:ss"}))
    assert result["reader"] == "fastexcel", result["fallback"]


def _iso_dates(wb) -> None:
    wb.iso_dates = True


def _epoch_1904(wb) -> None:
    wb.epoch = CALENDAR_MAC_1904


FALLBACKS = {
    "mixed types": ([["a", "b"], [1, "x"], ["two", "y"]], {}, {}, None, "fastexcel"),
    "time of day": ([["a", "t"], [1, time(12, 30)], [2, time(0, 0, 1)]], {}, {}, None, "time-of-day"),
    "duration": ([["a", "d"], [1, timedelta(hours=30)], [2, timedelta(minutes=5)]], {}, {}, None, "Duration"),
    "not in column A": ([["a", "b"], [1, 2], [3, 4]], {"origin": "B1"}, {}, None, "column A"),
    "not in row 1": ([["a", "b"], [1, 2], [3, 4]], {"origin": "B3"}, {"header_row": 3}, None, "column A"),
    "null-like text in a number column": ([["a", "b"], [1, 2.5], [2, "NA"]], {}, {}, None, "convert"),
    "1904 dates": ([["a", "d"], [1, date(2026, 1, 5)]], {"setup": _epoch_1904}, {}, None, "1904"),
    "ISO date cells": ([["a", "d"], [1, datetime(2026, 1, 5, 0, 0)], [2, datetime(2026, 1, 5, 10, 0)]],
                       {"setup": _iso_dates}, {}, None, "ISO"),
    "a serial a hair past midnight": ([["a", "d"], [1, 46027.0000000001], [2, 46027.5]],
                                      {"formats": {1: "yyyy-mm-dd hh:mm"}}, {}, None, "half a millisecond"),
    "a datetime 500 microseconds past midnight": ([["a", "d"], [1, datetime(2026, 3, 3, 0, 0, 0, 500)]],
                                                  {"formats": {1: "yyyy-mm-dd hh:mm:ss"}}, {}, None,
                                                  "half a millisecond"),
    "numbers in the title block": ([["Report", 2026], [], ["a", "b", "c"], [1, 2, 3]], {}, {}, None, "row 1"),
    "header cell that is a date": ([["a", date(2026, 1, 1)], [1, 2]], {}, {"header_row": 1}, None, "header cell"),
    "whitespace-only text in the header window": ([["a", "b"], ["  ", 1], ["x", 2]], {}, {}, None, "disagree"),
    "whitespace-only text in the title block": ([["Report", None, None, "   "], [], ["a", "b", "c", "d"],
                                                 ["x", 2, 3, 4]], {}, {}, None, "row 1"),
    "a date in the title block": ([["Report", None, None, date(2026, 1, 1)], [], ["a", "b", "c", "d"],
                                   ["x", 2, 3, 4]], {}, {}, None, "row 1"),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_what_the_fast_path_cannot_do_exactly_falls_back(tmp_path: Path, case: str) -> None:
    rows, options, config, _, reason = FALLBACKS[case]
    result = both(book(tmp_path / "case.xlsx", rows, **options), config)
    assert result["reader"] == "calamine" and reason in result["fallback"], result["fallback"]


def test_error_cells_are_empty_on_both_paths(tmp_path: Path) -> None:
    rows = [["a", "b", "c"]] + [[i, "x", i / 2] for i in range(25)] + [[99, "#DIV/0!", "#N/A"], [100, "#NAME?", 1.5]]
    result = both(book(tmp_path / "errors.xlsx", rows))
    assert json.loads((tmp_path / "errors.json").read_text(encoding="utf-8"))[-2] == {"a": 99, "b": None, "c": None}
    assert result["row_count"] == 27


def test_a_midnight_serial_that_is_whole_stays_on_the_fast_path(tmp_path: Path) -> None:
    rows = [["a", "d"], [1, 46027.0], [2, 46027.5], [3, 46028.00000001]]  # the last is 0.86 ms past midnight
    result = both(book(tmp_path / "whole.xlsx", rows, formats={1: "yyyy-mm-dd hh:mm"}))
    assert result["reader"] == "fastexcel", result["fallback"]


def test_the_limits_raise_the_same_errors(tmp_path: Path) -> None:
    rich = rich_book(tmp_path / "rich.xlsx")  # 12 columns, 10 rows of data under the header on row 3
    tall = book(tmp_path / "tall.xlsx", [["n"]] + [[i] for i in range(70)])
    for path, limits in ((rich, {"dataset_max_rows": 3, "dataset_max_columns": 200}),
                         (rich, {"dataset_max_rows": 100, "dataset_max_columns": 10}),
                         (rich, {"dataset_max_rows": 100, "dataset_max_columns": 11}),
                         (tall, {"dataset_max_rows": 5, "dataset_max_columns": 10}),
                         (tall, {"dataset_max_rows": 69, "dataset_max_columns": 10})):
        with pytest.raises(ValidationError) as slow:
            readers.read_table(str(path), "xlsx", {}, limits)
        with pytest.raises(ValidationError) as fast:
            readers.write_table(str(path), "xlsx", {}, limits, str(tmp_path / "out.json"))
        assert (fast.value.key, fast.value.params) == (slow.value.key, slow.value.params)
    assert both(rich, {}, {"dataset_max_rows": 10, "dataset_max_columns": 12})["reader"] == "fastexcel"
    assert both(tall, {}, {"dataset_max_rows": 70, "dataset_max_columns": 1})["reader"] == "fastexcel"


def test_a_failing_fast_path_hands_over_to_the_per_cell_reader(tmp_path: Path, monkeypatch) -> None:
    path = rich_book(tmp_path / "rich.xlsx")

    def broken(*args, **kwargs):
        (tmp_path / "rich.json").write_text("[{", encoding="utf-8")  # half written, then the library gives up
        raise RuntimeError("panicked")

    monkeypatch.setattr(xlsx_import, "write_json", broken)
    result = both(path)
    assert result["reader"] == "calamine" and "RuntimeError: panicked" in result["fallback"]


def test_without_its_libraries_the_child_uses_the_per_cell_reader(tmp_path: Path) -> None:
    path = rich_book(tmp_path / "rich.xlsx")
    result = readers.write_table(str(path), "xlsx", {}, LIMITS, str(tmp_path / "out.json"), fast=False)
    assert result["reader"] == "calamine" and result["fallback"]


# -- the import job: written by the child beside the final file, renamed into place ----------------------
def test_the_child_waits_for_the_checks_and_stops_unread_without_them(tmp_path: Path) -> None:
    gate = tmp_path / "gate" / "checked"
    gate.parent.mkdir()
    datasets._release(gate, "xlsx")
    assert readers.await_checks(str(gate)) == "xlsx"
    datasets._release(gate, None)  # once released, the outcome never changes
    assert readers.await_checks(str(gate)) == "xlsx"
    refused = tmp_path / "refused" / "checked"
    refused.parent.mkdir()
    datasets._release(refused, None)
    assert readers.await_checks(str(refused)) is None
    assert readers.await_checks(str(tmp_path / "gone" / "checked")) is None  # its folder removed: stop
    assert xlsx_import.import_file("never-read.xlsx", {}, LIMITS, str(tmp_path / "x.json"), str(refused)) is None



def _parts(store: Store) -> list[Path]:
    return sorted(p for p in store.config.home.rglob("*") if ".part-" in p.name)


def test_the_import_renames_a_complete_file_into_place(store: Store, team, tmp_path: Path, monkeypatch) -> None:
    path = rich_book(tmp_path / "rich.xlsx")
    made = upload(store, team["editor"], content=path.read_bytes(), filename="rich.xlsx")
    seen = []
    real_replace = datasets.os.replace

    def replace(src, dst):
        if str(dst) == made["path"]:
            assert not Path(dst).exists()  # readers see no file, then the whole file
            assert Path(src).parent == Path(dst).parent and ".part-" in Path(src).name
            seen.append(len(json.loads(Path(src).read_text(encoding="utf-8"))))
        return real_replace(src, dst)

    monkeypatch.setattr(datasets.os, "replace", replace)
    done = datasets.ingest(store, made["id"])
    assert done["ingest_status"] == "ready" and seen == [done["row_count"]]
    assert done["row_count"] == len(readers.read_table(str(path), "xlsx", {}, LIMITS)[1])
    assert json.loads(Path(done["path"]).read_text(encoding="utf-8"))[0]["code"] == "00123"
    assert [c["type"] for c in done["schema"]][:5] == ["text", "text", "integer", "number", "date"]
    assert _parts(store) == []


def test_without_the_columnar_libraries_an_import_still_succeeds(store: Store, team, tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(datasets, "_columnar_available", lambda: False)  # the light child, per-cell reader
    path = rich_book(tmp_path / "rich.xlsx")
    done = datasets.ingest(store, upload(store, team["editor"], content=path.read_bytes(), filename="r.xlsx")["id"])
    assert done["ingest_status"] == "ready"
    assert exact(json.loads(Path(done["path"]).read_text(encoding="utf-8"))) == exact(
        readers.read_table(str(path), "xlsx", {}, LIMITS)[1])


def test_a_failed_import_leaves_no_part_file(store: Store, team, tmp_path: Path, monkeypatch) -> None:
    junk = upload(store, team["editor"], content=b"PK\x03\x04" + bytes(500), filename="x.xlsx")
    junk = datasets.ingest(store, junk["id"])
    assert junk["ingest_status"] == "failed" and _parts(store) == []
    tight = upload(store, team["editor"], content=rich_book(tmp_path / "rich.xlsx").read_bytes(), filename="r.xlsx")

    real_replace = datasets.os.replace

    def refuse(src, dst):  # the child wrote the whole file; the rename into place then fails
        if str(dst) == tight["path"]:
            assert ".part-" in Path(src).name and Path(src).stat().st_size > 0
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(datasets.os, "replace", refuse)
    with pytest.raises(OSError):
        datasets.ingest(store, tight["id"])
    assert _parts(store) == [] and not Path(tight["path"]).exists()
    # as before: an import that stopped on an unexpected error is the restart recovery's
    assert datasets.get(store, team["editor"], tight["id"])["ingest_status"] == "processing"
