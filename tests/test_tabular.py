"""Shared tabular rules and the CSV/JSON readers, on files the tests write."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import tabular
from core.errors import ValidationError


def test_names_are_unique_and_never_blank() -> None:
    assert tabular.unique_names(["名称", "", None, "名称", "x", "名称", " "]) == [
        "名称", "column_2", "column_3", "名称_2", "x", "名称_3", "column_7"]


def test_header_is_found_under_a_title_block() -> None:
    rows = [["2026 年度销售报表", None, None, None], [None, None, None, None], ["制表：财务部", None, None, None],
            ["日期", "地区", "金额", "备注"], ["2026-01-01", "华东", 100, None], ["2026-01-02", "华北", 200, "x"]]
    assert tabular.detect_header(rows) == 3
    assert tabular.detect_header([["a", "b"], [1, 2]]) == 0
    assert tabular.detect_header([[None], [None, "only"], [1, 2]]) == 1


@pytest.mark.parametrize("text, value", [("", None), ("  ", None), ("42", 42), ("-7", -7), ("00123", "00123"),
                                         ("3.5", 3.5), ("1e3", 1000.0), ("007.5", "007.5"), ("abc", "abc"),
                                         ("110101199003071234", "110101199003071234"), ("13800138000", 13800138000)])
def test_csv_values(text: str, value) -> None:
    assert tabular.normalize_text(text) == value
    assert type(tabular.normalize_text(text)) is type(value)


def test_column_types() -> None:
    assert tabular.infer_type([1, 2, None]) == "integer"
    assert tabular.infer_type([1, 2.5]) == "number"
    assert tabular.infer_type(["2026-01-01", "2026-01-02T10:00:00"]) == "datetime"
    assert tabular.infer_type(["10:30:00"]) == "time"
    assert tabular.infer_type([1, "a"]) == "text"
    assert tabular.infer_type([None, None]) == "empty"


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("gbk", b""),
                                           ("gb18030", b"")])
def test_csv_encodings_as_excel_saves_them(tmp_path: Path, encoding: str, bom: bytes) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(bom + "姓名,城市,编号\r\n张三,上海,00123\r\n李四,北京,42\r\n".encode(encoding))
    rows = list(tabular.iter_csv(path))
    assert rows == [["姓名", "城市", "编号"], ["张三", "上海", "00123"], ["李四", "北京", 42]]


def test_a_gbk_csv_whose_first_rows_are_plain_ascii_is_still_gbk(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    head = "".join(f"{i},ok\r\n" for i in range(20_000))  # > 64 KB of ASCII before the first Chinese text
    path.write_bytes(("id,name\r\n" + head + "20000,张三\r\n").encode("gbk"))
    rows = list(tabular.iter_csv(path))
    assert len(rows) == 20_002 and rows[-1] == [20000, "张三"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_csv_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "x y", "3"]) + "\n")
    assert list(tabular.iter_csv(path)) == [["a", "b", "c"], [1, "x y", 3]]


def test_undecodable_csv_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(bytes(range(128, 256)) * 10)
    with pytest.raises(ValidationError) as caught:
        list(tabular.iter_csv(path))
    assert caught.value.key == "dataset.error.encoding" and "UTF-8" in str(caught.value)


def test_records_pad_short_rows_and_name_extra_cells() -> None:
    names, records = tabular.to_records(["a", "b"], [[1], [1, 2, 3]])
    assert names == ["a", "b", "column_3"]
    assert records == [{"a": 1, "b": None, "column_3": None}, {"a": 1, "b": 2, "column_3": 3}]


def test_json_list_and_ndjson(tmp_path: Path) -> None:
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps([{"x": 1}, {"x": 2}]))
    ndjson = tmp_path / "b.json"
    ndjson.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert tabular.read_json_records(listed) == tabular.read_json_records(ndjson) == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize("content, key", [('{"x": 1', "dataset.error.json"), ('[1, 2]', "dataset.error.json_not_records"),
                                          ('"text"', "dataset.error.json_not_records"),
                                          ('[{"x": 1}, 3]', "dataset.error.json_not_records")])
def test_json_that_is_not_a_list_of_objects_is_refused(tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValidationError) as caught:
        tabular.read_json_records(path)
    assert caught.value.key == key
