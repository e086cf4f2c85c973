"""The streaming xlsx preview reader (core.xlsx_preview) against what openpyxl itself reads.

Workbooks are generated with openpyxl in tmp_path; what openpyxl cannot write (formulas with cached
values, a lying <dimension>, a cell at XFD1048576, a DOCTYPE) is produced by rewriting the sheet XML
inside the zip. openpyxl 3.1 writes every string inline (t="inlineStr"), while Excel writes a shared
string table: `share_strings` turns an openpyxl file into the Excel layout (openpyxl reads it back as
the oracle), and the value tests run on both.
"""
from __future__ import annotations

import datetime as dt
import re
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any, Callable

import openpyxl
import pytest
from openpyxl.cell.rich_text import CellRichText, TextBlock
from openpyxl.cell.text import InlineFont
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from core.xlsx_preview import Preview, XlsxPreviewError, format_kind, read_rows, sheets

SHEET1 = "xl/worksheets/sheet1.xml"


# -- helpers ---------------------------------------------------------------------------------------
def rewrite(path: Path, part: str, edit: Callable[[str], str]) -> Path:
    """Rewrite one XML part of the zip in place."""
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in items:
            if info.filename == part:
                data = edit(data.decode("utf-8")).encode("utf-8")
            zout.writestr(info.filename, data)
    return path


def replace_sheet_data(path: Path, rows_xml: str, part: str = SHEET1) -> Path:
    return rewrite(path, part, lambda xml: re.sub(r"<sheetData\s*/>|<sheetData>.*</sheetData>", f"<sheetData>{rows_xml}</sheetData>", xml, flags=re.S))


MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_INLINE_CELL = re.compile(r'<c ([^>]*?)t="inlineStr"([^>]*)><is>(.*?)</is></c>', re.S)


def share_strings(path: Path) -> Path:
    """Move every inline string into xl/sharedStrings.xml, numbered by first use, as Excel does."""
    table: dict[str, int] = {}

    def to_shared(m: re.Match[str]) -> str:
        index = table.setdefault(m.group(3), len(table))
        return f'<c {m.group(1)}t="s"{m.group(2)}><v>{index}</v></c>'

    with zipfile.ZipFile(path) as zin:
        items = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    out = []
    for name, data in items:
        if name.startswith("xl/worksheets/") and name.endswith(".xml"):
            data = _INLINE_CELL.sub(to_shared, data.decode()).encode()
        elif name == "[Content_Types].xml":
            data = data.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
        elif name == "xl/_rels/workbook.xml.rels":
            data = data.replace(b"</Relationships>", b'<Relationship Id="rIdSst" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
        out.append((name, data))
    sst = "".join(f"<si>{inner}</si>" for inner in table)
    out.append(("xl/sharedStrings.xml", f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{MAIN_NS}" count="{len(table)}" uniqueCount="{len(table)}">{sst}</sst>'.encode()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in out:
            zout.writestr(name, data)
    return path


def save(wb: openpyxl.Workbook, path: Path, strings: str = "shared") -> Path:
    wb.save(path)
    return share_strings(path) if strings == "shared" else path


def expected(cell: Any) -> Any:
    """What the preview must show for a cell, derived from openpyxl's own reading of it."""
    value = cell.value
    if value is None or value == "":
        return None
    if cell.data_type == "e":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):  # midnight is a date whatever the format (the import sees values only)
            return value.date().isoformat()
        return value.isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, dt.timedelta):
        total = round(value.total_seconds())
        h, rest = divmod(abs(total), 3600)
        return ("-" if total < 0 else "") + f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"
    if isinstance(value, CellRichText):
        return str(value)
    return value


def openpyxl_rows(path: Path, sheet: str | None = None, *, rich: bool = False) -> list[list[Any]]:
    wb = openpyxl.load_workbook(path, data_only=True, rich_text=rich)
    ws = wb[sheet] if sheet else wb.worksheets[0]
    rows = [[expected(c) for c in row] for row in ws.iter_rows()]
    # same shape as the preview: no trailing empty rows or columns
    while rows and all(v is None for v in rows[-1]):
        rows.pop()
    width = max((max((i + 1 for i, v in enumerate(r) if v is not None), default=0) for r in rows), default=0)
    return [r[:width] + [None] * (width - len(r[:width])) for r in rows]


@pytest.fixture(params=["shared", "inline"])
def values_book(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Values"
    ws.append(["int", "float", "whole float", "text", "zeros", "bool", "blank", "date", "datetime", "time", "custom date", "cn date", "elapsed", "money", "am/pm time"])
    data = [
        (1, 1.5, 3.0, "alice", "00123", True, None, dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5), dt.time(13, 5, 7), dt.datetime(1999, 12, 31), dt.datetime(2023, 6, 1), dt.timedelta(hours=36, minutes=5), 1234.5, dt.time(18, 30)),
        (-7, -0.25, 1e15, "bob", "007", False, None, dt.date(1900, 1, 1), dt.datetime(2024, 2, 29, 23, 59, 59), dt.time(0, 0, 1), dt.datetime(2024, 7, 4), dt.datetime(2020, 2, 29), dt.timedelta(seconds=59), 0.1, dt.time(6, 0)),
        (0, 3.14159, 100.0, "  spaced  ", "0", True, None, dt.date(2100, 12, 31), dt.datetime(2024, 1, 1, 0, 0, 0), dt.time(23, 59, 59), dt.datetime(1970, 1, 1), dt.datetime(2000, 1, 1), dt.timedelta(days=2), -5.0, dt.time(0, 0)),
    ]
    for row in data:
        ws.append(row)
    for r in range(2, 5):
        ws.cell(r, 11).number_format = "dd/mm/yyyy"
        ws.cell(r, 12).number_format = 'yyyy"年"m"月"d"日"'
        ws.cell(r, 13).number_format = "[h]:mm:ss"
        ws.cell(r, 14).number_format = '#,##0.00 "元";[Red]-#,##0.00'
        ws.cell(r, 15).number_format = "h:mm AM/PM"
    ws.cell(2, 7).value = None
    return save(wb, tmp_path / "values.xlsx", request.param)


# -- sheets ----------------------------------------------------------------------------------------
def test_sheets_lists_hidden_and_very_hidden(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.title = "Visible"
    wb.create_sheet("Secret").sheet_state = "hidden"
    wb.create_sheet("Deep").sheet_state = "veryHidden"
    wb.create_sheet("数据")
    path = tmp_path / "s.xlsx"
    save(wb, path)
    assert sheets(path) == [
        {"name": "Visible", "hidden": False},
        {"name": "Secret", "hidden": True},
        {"name": "Deep", "hidden": True},
        {"name": "数据", "hidden": False},
    ]


def test_default_sheet_is_first_visible_and_sheets_chosen_by_name_or_index(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    hidden = wb.active
    hidden.title = "Hidden"
    hidden.sheet_state = "hidden"
    hidden["A1"] = "hidden"
    wb.create_sheet("Main")["A1"] = "main"
    wb.create_sheet("Other")["A1"] = "other"
    wb.active = 1
    path = tmp_path / "pick.xlsx"
    save(wb, path)
    assert read_rows(path).sheet == "Main"
    assert read_rows(path).rows == [["main"]]
    assert read_rows(path, sheet="Other").rows == [["other"]]
    assert read_rows(path, sheet="other").rows == [["other"]]  # Excel sheet names ignore case
    assert read_rows(path, sheet=0).rows == [["hidden"]]
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path, sheet="Nope")
    assert err.value.reason == "sheet_not_found" and "'Main'" in str(err.value)
    with pytest.raises(XlsxPreviewError):
        read_rows(path, sheet=9)


# -- values ----------------------------------------------------------------------------------------
def test_values_match_openpyxl(values_book: Path) -> None:
    preview = read_rows(values_book)
    assert preview.rows == openpyxl_rows(values_book)
    assert preview.warnings == []
    assert preview.max_columns == 15


def test_value_rules_explicitly(values_book: Path) -> None:
    header, first, second, third = read_rows(values_book).rows
    row = dict(zip(header, first))
    assert row["int"] == 1 and type(row["int"]) is int
    assert row["float"] == 1.5
    assert row["whole float"] == 3 and type(row["whole float"]) is int
    assert row["zeros"] == "00123"
    assert row["bool"] is True
    assert row["blank"] is None
    assert row["date"] == "2024-01-02"
    assert row["datetime"] == "2024-01-02T03:04:05"
    assert row["time"] == "13:05:07"
    assert row["custom date"] == "1999-12-31"
    assert row["cn date"] == "2023-06-01"
    assert row["elapsed"] == "36:05:00"
    assert row["money"] == 1234.5
    assert row["am/pm time"] == "18:30:00"
    assert dict(zip(header, second))["whole float"] == 10**15
    assert dict(zip(header, second))["date"] == "1900-01-01"
    assert dict(zip(header, second))["zeros"] == "007"
    assert dict(zip(header, third))["datetime"] == "2024-01-01"  # midnight is a date, as the import stores it
    assert dict(zip(header, third))["text"] == "  spaced  "


def test_1904_date_system(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.epoch = CALENDAR_MAC_1904
    ws = wb.active
    ws.append([dt.date(2024, 1, 2), dt.datetime(1904, 1, 5, 12, 0), dt.datetime(2010, 5, 6, 7, 8, 9)])
    path = tmp_path / "mac.xlsx"
    save(wb, path)
    with zipfile.ZipFile(path) as z:
        assert b'date1904="1"' in z.read("xl/workbook.xml")
    assert read_rows(path).rows == [["2024-01-02", "1904-01-05T12:00:00", "2010-05-06T07:08:09"]]
    assert read_rows(path).rows == openpyxl_rows(path)


def test_error_cells_are_none_with_a_warning_naming_the_cell(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["a", "b"])
    for r in range(2, 8):
        ws.cell(r, 1, r)
    ws["B7"] = "#DIV/0!"
    ws["B7"].data_type = "e"
    ws["B3"] = "#N/A"
    ws["B3"].data_type = "e"
    path = tmp_path / "err.xlsx"
    save(wb, path)
    preview = read_rows(path)
    assert preview.rows == openpyxl_rows(path)
    assert preview.rows[6] == [7, None]
    assert preview.warnings == ["B3: #N/A", "B7: #DIV/0!"]


def test_formulas_give_cached_values_or_none_with_a_warning(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "x"
    path = tmp_path / "f.xlsx"
    save(wb, path)
    replace_sheet_data(path, (
        '<row r="1"><c r="A1"><f>1+1</f><v>2</v></c><c r="B1" t="str"><f>"a"&amp;"b"</f><v>ab</v></c>'
        '<c r="C1" t="e"><f>1/0</f><v>#DIV/0!</v></c><c r="D1"><f>SUM(A1:A9)</f></c>'
        '<c r="E1" t="b"><f>TRUE()</f><v>1</v></c><c r="F1"><f>1/3</f><v>0.33333333333333331</v></c></row>'
    ))
    preview = read_rows(path)
    assert preview.rows == [[2, "ab", None, None, True, 1 / 3]]
    assert preview.rows == openpyxl_rows(path)
    assert preview.warnings == ["C1: #DIV/0!", "D1: formula has no cached value"]


def test_inline_and_rich_strings(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = CellRichText(["plain ", TextBlock(InlineFont(b=True), "bold")])
    ws["B1"] = "tail"
    path = tmp_path / "rich.xlsx"
    save(wb, path)  # a rich shared string: runs of <r><t>
    assert read_rows(path).rows == openpyxl_rows(path, rich=True) == [["plain bold", "tail"]]
    # Excel escapes control characters as _xHHHH_ and a literal "_x" as _x005F_x
    replace_sheet_data(path, '<row r="1"><c r="A1" t="inlineStr"><is><t>line_x000D__x000A_break</t></is></c><c r="B1" t="inlineStr"><is><t>_x005F_x0041_</t></is></c></row>')
    assert read_rows(path).rows == [["line\r\nbreak", "_x0041_"]]
    replace_sheet_data(path, (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>inline</t></is></c>'
        '<c r="B1" t="inlineStr"><is><r><t>ri</t></r><r><rPr><b/></rPr><t>ch</t></r>'
        '<rPh sb="0" eb="1"><t>ふりがな</t></rPh></is></c>'
        '<c r="C1" t="inlineStr"><is><t>00123</t></is></c><c r="D1" t="inlineStr"><is><t></t></is></c></row>'
    ))
    assert read_rows(path).rows == [["inline", "rich", "00123"]]


def test_sparse_rows_and_cells_are_placed_at_their_columns(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "a1"
    ws["C5"] = "c5"
    ws["E3"] = 5
    ws["B5"] = 2.5
    path = tmp_path / "sparse.xlsx"
    save(wb, path)
    preview = read_rows(path)
    assert preview.rows == openpyxl_rows(path)
    assert preview.rows == [
        ["a1", None, None, None, None],
        [None] * 5,
        [None, None, None, None, 5],
        [None] * 5,
        [None, 2.5, "c5", None, None],
    ]
    # cells and rows without r= attributes follow on from the previous ones
    replace_sheet_data(path, '<row><c><v>1</v></c><c><v>2</v></c><c r="E1"><v>5</v></c><c><v>6</v></c></row><row r="3"><c><v>3</v></c></row><row><c r="B4"><v>4</v></c></row>')
    assert read_rows(path).rows == [[1, 2, None, None, 5, 6], [None] * 6, [3, None, None, None, None, None], [None, 4, None, None, None, None]]


def test_title_block_above_the_header_is_just_rows(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "Quarterly sales report"
    ws["A2"] = "Generated 2024-01-01"
    ws.append([])
    ws.append(["region", "amount", "date"])
    ws.append(["north", 10, dt.date(2024, 3, 1)])
    path = tmp_path / "title.xlsx"
    save(wb, path)
    preview = read_rows(path)
    assert preview.rows == openpyxl_rows(path)
    assert preview.rows[0] == ["Quarterly sales report", None, None]
    assert preview.rows[3] == ["region", "amount", "date"]
    assert preview.rows[4] == ["north", 10, "2024-03-01"]


def test_row_window_and_has_more(tmp_path: Path) -> None:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Big")
    for i in range(1, 501):
        ws.append([i, f"text {i}", i * 0.5])
    path = tmp_path / "window.xlsx"
    save(wb, path)
    head = read_rows(path, limit=10)
    assert len(head.rows) == 10 and head.rows[0] == [1, "text 1", 0.5] and head.has_more
    middle = read_rows(path, start_row=250, limit=3)
    assert middle.rows == [[250, "text 250", 125], [251, "text 251", 125.5], [252, "text 252", 126]]
    assert middle.start_row == 250
    tail = read_rows(path, start_row=499, limit=10)
    assert tail.rows == [[499, "text 499", 249.5], [500, "text 500", 250]] and not tail.has_more
    assert read_rows(path, start_row=1000).rows == []
    assert read_rows(path, limit=0).rows == []
    with pytest.raises(XlsxPreviewError):
        read_rows(path, start_row=0)


def test_a_lying_dimension_still_yields_every_row(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for i in range(1, 31):
        ws.append([i, f"r{i}"])
    path = tmp_path / "dim.xlsx"
    save(wb, path)
    rewrite(path, SHEET1, lambda xml: re.sub(r'<dimension ref="[^"]*"\s*/>', '<dimension ref="A1:A1"/>', xml))
    with zipfile.ZipFile(path) as z:
        assert b'<dimension ref="A1:A1"/>' in z.read(SHEET1)
    preview = read_rows(path)
    assert len(preview.rows) == 30 and preview.rows[-1] == [30, "r30"]
    assert preview.rows == openpyxl_rows(path)


def test_shared_strings_are_read_only_up_to_the_highest_index_used(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for i in range(200):
        ws.append([f"unique {i}", i])
    path = tmp_path / "sst.xlsx"
    save(wb, path)

    def break_tail(xml: str) -> str:  # everything after string 20 becomes garbage XML
        cut = [m.end() for m in re.finditer(r"</si>", xml)][20]
        return xml[:cut] + "<si><t>broken</t></si><<<not xml"

    rewrite(path, "xl/sharedStrings.xml", break_tail)
    preview = read_rows(path, limit=10)
    assert preview.rows[9] == ["unique 9", 9]
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path, limit=100)  # needs strings past the damage: reported, not crashed
    assert err.value.reason == "corrupt"


def test_far_away_cell_does_not_allocate_a_huge_row(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "a"
    path = tmp_path / "far.xlsx"
    save(wb, path)
    replace_sheet_data(path, '<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>2</v></c></row>')
    tracemalloc.start()
    preview = read_rows(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert preview.rows == [[1]] and preview.has_more
    assert peak < 5_000_000
    tail = read_rows(path, start_row=1048576, limit=5)
    assert tail.rows[0][-1] == 2 and len(tail.rows[0]) == 16384

    # in one row: capped by max_columns, with a warning; a column past XFD is skipped too
    replace_sheet_data(path, '<row r="1"><c r="A1"><v>1</v></c><c r="XFD1"><v>2</v></c><c r="ZZZZ1"><v>3</v></c></row>')
    tracemalloc.start()
    preview = read_rows(path, max_columns=200)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert preview.rows == [[1]] and preview.max_columns == 1
    assert preview.warnings == ["2 cell(s) past column GR skipped (first in row 1)"]
    assert peak < 5_000_000
    preview = read_rows(path)
    assert len(preview.rows[0]) == 16384 and preview.rows[0][-1] == 2
    assert preview.warnings == ["1 cell(s) past Excel's last column XFD skipped (first in row 1)"]


def test_styled_empty_cells_do_not_widen_rows(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "a"
    path = tmp_path / "styled.xlsx"
    save(wb, path)
    replace_sheet_data(path, '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="Z1" s="0"/></row><row r="2"><c r="AA2" s="0"/></row>')
    preview = read_rows(path)
    assert preview.rows == [["a"]] and preview.max_columns == 1


def test_strict_ooxml_namespace(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.append(["x", 1, dt.date(2024, 5, 6)])
    path = tmp_path / "strict.xlsx"
    save(wb, path)
    strict = lambda xml: xml.replace("http://schemas.openxmlformats.org/spreadsheetml/2006/main", "http://purl.oclc.org/ooxml/spreadsheetml/main")  # noqa: E731
    for part in (SHEET1, "xl/workbook.xml", "xl/sharedStrings.xml", "xl/styles.xml"):
        rewrite(path, part, strict)
    assert read_rows(path).rows == [["x", 1, "2024-05-06"]]


def test_doctype_is_refused(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "a"
    path = tmp_path / "bomb.xlsx"
    save(wb, path)
    bomb = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    rewrite(path, SHEET1, lambda xml: bomb + re.sub(r"^<\?xml[^>]*\?>", "", xml).replace("<v>0</v>", "<v>&lol2;</v>"))
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path)
    assert err.value.reason == "dtd"


@pytest.mark.parametrize(
    "content, reason",
    [(b"not a zip at all", "not_xlsx"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504, "encrypted"), (b"PK\x03\x04broken", "not_xlsx")],
)
def test_non_workbooks_get_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path)
    assert err.value.reason == reason
    with pytest.raises(XlsxPreviewError):
        sheets(path)


def test_zip_without_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "plain.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path)
    assert err.value.reason == "not_xlsx"


def test_truncated_sheet_xml_is_reported(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    for i in range(50):
        wb.active.append([i])
    path = tmp_path / "trunc.xlsx"
    save(wb, path)
    rewrite(path, SHEET1, lambda xml: xml[: len(xml) // 2])
    assert len(read_rows(path, limit=5).rows) == 5  # the damage is past the window
    with pytest.raises(XlsxPreviewError) as err:
        read_rows(path, limit=100)
    assert err.value.reason == "corrupt"


def test_odd_numbers_and_dates(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "a"
    path = tmp_path / "odd.xlsx"
    save(wb, path)
    # style 1 = a date format added to styles.xml
    rewrite(path, "xl/styles.xml", lambda xml: re.sub(r'<cellXfs count="\d+">(.*?)</cellXfs>', r'<cellXfs count="3">\1<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/><xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>', xml, flags=re.S))
    replace_sheet_data(path, (
        '<row r="1"><c r="A1"><v>1E+3</v></c><c r="B1"><v>-0</v></c><c r="C1" s="1"><v>45000.75</v></c>'
        '<c r="D1" s="1"><v>-1</v></c><c r="E1" s="1"><v>1e300</v></c><c r="F1" t="d"><v>2024-03-04T05:06:07Z</v></c>'
        '<c r="G1" t="d"><v>2024-03-04</v></c><c r="H1" s="2"><v>45000</v></c><c r="I1" s="1"><v>59</v></c>'
        '<c r="J1" t="s"><v>99</v></c><c r="K1"><v>12345678901234567890</v></c></row>'
    ))
    preview = read_rows(path)
    assert preview.rows == [[1000, 0, "2023-03-15T18:00:00", None, None, "2024-03-04T05:06:07", "2024-03-04", "2023-03-15", "1900-02-28", None, 12345678901234567890]]
    assert preview.warnings == ["D1: -1 is not a valid date", "E1: 1e300 is not a valid date", "J1: shared string 99 is missing from the workbook"]


@pytest.mark.parametrize(
    "code, kind",
    [
        ("General", None), ("0.00", None), ("0.00E+00", None), ('#,##0 "days"', None), ("@", None),
        ("yyyy-mm-dd", "date"), ("d/m/yy", "date"), ("mmm-yy", "date"), ("[$-409]dddd, mmmm dd, yyyy", "date"),
        ('yyyy"年"m"月"d"日"', "date"), ("yyyy-mm-dd hh:mm:ss", "datetime"), ("m/d/yy h:mm", "datetime"),
        ("h:mm AM/PM", "time"), ("mm:ss", "time"), ("hh:mm:ss.000", "time"), ("[h]:mm:ss", "duration"),
        ("[Red]0.00;[Blue]-0.00", None), ("\\d0", None), ('0;"year"', None),
    ],
)
def test_format_kind(code: str, kind: str | None) -> None:
    assert format_kind(code) == kind


def test_preview_is_a_dataclass(values_book: Path) -> None:
    preview = read_rows(values_book, limit=2)
    assert isinstance(preview, Preview)
    assert preview.sheet == "Values" and preview.start_row == 1 and preview.has_more
    assert all(len(r) == preview.max_columns for r in preview.rows)
