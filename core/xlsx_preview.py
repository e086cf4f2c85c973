"""A fast, faithful preview of an .xlsx/.xlsm workbook: the sheet list and the first rows of one sheet.

Only the standard library: `zipfile` plus expat through `xml.etree.ElementTree.XMLPullParser`, fed by
hand in 64 KB chunks. Nothing here reads a whole sheet:

- the sheet XML is streamed and reading stops at the first row past the requested window (the
  `<dimension>` element is never trusted: files lie);
- shared strings (``t="s"``) are resolved afterwards by streaming ``sharedStrings.xml`` only up to the
  highest index the previewed rows use. Writers number shared strings in order of first use, so a
  100-row preview of a 200k-row workbook reads a few KB of a table that may hold millions of strings
  (openpyxl and pandas parse the whole table first);
- every element is dropped from the tree as soon as it is handled, so memory stays bounded by the
  window, not by the file.

Value rules (SPEC "Data Center"; the same as `core.tabular`):

==========================  ==================================================================
cell                        value
==========================  ==================================================================
missing / empty             None (sparse rows and skipped row numbers are filled with None)
shared / inline string      the text ("00123" stays text); "" becomes None
boolean                     True / False
number                      int when whole, else float (non-finite → None + warning)
number with a date style    "YYYY-MM-DD" (date format, no time part), "YYYY-MM-DDTHH:MM:SS"
                            (a time part in the format or the value), "HH:MM:SS" (time-of-day
                            format, or a date style on a value below 1, as openpyxl does),
                            "H:MM:SS" with hours past 24 for elapsed formats like ``[h]:mm:ss``
error (``t="e"``)           None + a warning naming the cell, e.g. ``"B7: #DIV/0!"``
formula                     its cached value; None + a warning when there is none
==========================  ==================================================================

A number is a date when its style's number format is a built-in date/time format (14–22, 45–47, and
the CJK locale built-ins 27–36 and 50–58 that Excel writes on Chinese, Japanese and Korean systems)
or a custom format whose first section has date/time tokens (y, d, h, s, or m) outside quoted text,
escapes and ``[...]`` brackets. The 1904 date system (``workbookPr date1904``) is respected; in the
1900 system serials below 60 are shifted by Excel's phantom 1900-02-29, as openpyxl does.

Guards: a document type declaration (the door to entity bombs) is refused in every part; cells past
`max_columns` (at most 16384, Excel's last column XFD) and rows past 1048576 are skipped with a
warning, so a lone cell at XFD1048576 cannot make the preview allocate a huge row; the warning list
is capped. Archive-level checks (entry sizes, compression ratio, encryption) belong to the caller.
"""
from __future__ import annotations

import math
import posixpath
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from os import PathLike
from typing import IO, Any, Iterator

from core.errors import ValidationError

__all__ = ["Preview", "XlsxPreviewError", "sheets", "read_rows", "EXCEL_MAX_COLUMNS", "EXCEL_MAX_ROWS"]

EXCEL_MAX_COLUMNS = 16384  # XFD
EXCEL_MAX_ROWS = 1048576
MAX_STRING = 32767  # Excel's limit for one cell's text
MAX_WARNINGS = 50
_CHUNK = 64 * 1024

_MAIN_NS = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",  # ISO 29500 strict
)
_REL_TYPE_SUFFIX_WORKSHEET = ("/worksheet", "/chartsheet", "/dialogsheet", "/macrosheet")


class XlsxPreviewError(ValidationError):
    """The workbook cannot be previewed. The catalog key is ``xlsx.error.<reason>`` with the English
    `detail`; `reason` is one of ``not_xlsx``, ``corrupt``, ``encrypted``, ``dtd``, ``no_sheets``,
    ``sheet_not_found``, ``bad_argument``."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(key, detail=detail)

    @property
    def reason(self) -> str:
        return self.key.rsplit(".", 1)[-1]


@dataclass
class Preview:
    """The rows of one sheet, from `start_row` (1-based): ``rows[i]`` is sheet row ``start_row + i``.

    Every row has `max_columns` cells (the width of the widest returned row, trailing empty columns
    dropped); trailing empty rows are dropped. `has_more` is True when the sheet has row elements past
    the window (they may still be empty)."""

    sheet: str
    rows: list[list[Any]]
    warnings: list[str] = field(default_factory=list)
    max_columns: int = 0
    start_row: int = 1
    has_more: bool = False


# -- XML streaming ---------------------------------------------------------------------------------
_FORBIDDEN = tuple(
    token.encode(enc) for token in ("<!DOCTYPE", "<!ENTITY") for enc in ("ascii", "utf-16-le", "utf-16-be")
)


def _events(zf: zipfile.ZipFile, name: str, events: tuple[str, ...] = ("start", "end")) -> Iterator[tuple[str, ET.Element]]:
    """Stream one XML part as pull-parser events; refuse any document type declaration."""
    parser = ET.XMLPullParser(events)
    tail = b""
    try:
        with zf.open(name) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                probe = tail + chunk
                if any(token in probe for token in _FORBIDDEN):
                    raise XlsxPreviewError("xlsx.error.dtd", detail=f"the workbook part {name} declares a document type (refused: entity expansion attacks)")
                tail = chunk[-20:]
                parser.feed(chunk)
                yield from parser.read_events()
            parser.close()
            yield from parser.read_events()
    except ET.ParseError as exc:
        raise XlsxPreviewError("xlsx.error.corrupt", detail=f"the workbook part {name} is not well-formed XML ({exc})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:  # zlib: damaged deflate
        raise XlsxPreviewError("xlsx.error.corrupt", detail=f"the workbook part {name} cannot be read ({exc})") from None
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        raise XlsxPreviewError("xlsx.error.encrypted", detail=f"the workbook part {name} is encrypted") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _attr(elem: ET.Element, local: str) -> str | None:
    """An attribute by local name, whatever its namespace (transitional and strict differ)."""
    value = elem.get(local)
    if value is not None:
        return value
    for key, val in elem.attrib.items():
        if key.endswith("}" + local):
            return val
    return None


# -- the package ----------------------------------------------------------------------------------
class _Package:
    def __init__(self, path: str | PathLike[str] | IO[bytes]) -> None:
        try:
            self.zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            head = b""
            try:
                if isinstance(path, (str, PathLike)):
                    with open(path, "rb") as fh:
                        head = fh.read(8)
            except OSError:
                pass
            if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
                raise XlsxPreviewError("xlsx.error.encrypted", detail="the file is an OLE compound document:"
                                       " a password-protected workbook or an old .xls, not an .xlsx") from None
            raise XlsxPreviewError("xlsx.error.not_xlsx", detail="the file is not an .xlsx workbook (not a zip archive, or a damaged one)") from None
        self.names = {n.replace("\\", "/").lstrip("/").lower(): n for n in self.zf.namelist()}

    def close(self) -> None:
        self.zf.close()

    def find(self, part: str) -> str | None:
        return self.names.get(part.lstrip("/").lower())

    def rels(self, part: str) -> list[dict[str, str]]:
        """Relationships of a part, targets resolved to package paths."""
        directory, base = posixpath.split(part)
        name = self.find(posixpath.join(directory, "_rels", base + ".rels"))
        out: list[dict[str, str]] = []
        if name is None:
            return out
        for event, elem in _events(self.zf, name, ("end",)):
            if _local(elem.tag) == "Relationship":
                target = elem.get("Target") or ""
                if elem.get("TargetMode") == "External" or not target:
                    continue
                target = target.replace("\\", "/")
                resolved = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(directory, target))
                out.append({"id": elem.get("Id") or "", "type": elem.get("Type") or "", "target": resolved})
        return out


@dataclass
class _Workbook:
    sheets: list[dict[str, Any]]  # name, hidden, part (package path or None)
    date1904: bool
    shared_strings: str | None
    styles: str | None


def _workbook(pkg: _Package) -> _Workbook:
    wb_part = next((r["target"] for r in pkg.rels("") if r["type"].endswith("/officeDocument")), "xl/workbook.xml")
    wb_name = pkg.find(wb_part) or pkg.find("xl/workbook.xml")
    if wb_name is None:
        raise XlsxPreviewError("xlsx.error.not_xlsx", detail="the archive has no workbook part (xl/workbook.xml): it is not an .xlsx workbook")
    wb_part = wb_name.replace("\\", "/").lstrip("/")
    rels = pkg.rels(wb_part)
    by_id = {r["id"]: r for r in rels}
    sheet_list: list[dict[str, Any]] = []
    date1904 = False
    for event, elem in _events(pkg.zf, wb_name, ("end",)):
        local = _local(elem.tag)
        if local == "sheet":
            rel = by_id.get(_attr(elem, "id") or "")
            part = None
            if rel is not None and rel["type"].endswith(_REL_TYPE_SUFFIX_WORKSHEET):
                part = pkg.find(rel["target"])
            state = (elem.get("state") or "visible").strip()
            sheet_list.append({"name": elem.get("name") or "", "hidden": state in ("hidden", "veryHidden"), "part": part})
        elif local == "workbookPr":
            date1904 = (elem.get("date1904") or "").strip().lower() in ("1", "true")
        elif local == "sheets":
            elem.clear()

    def related(suffix: str, default: str) -> str | None:
        for r in rels:
            if r["type"].endswith(suffix):
                return pkg.find(r["target"])
        return pkg.find(default)

    return _Workbook(sheet_list, date1904, related("/sharedStrings", "xl/sharedStrings.xml"), related("/styles", "xl/styles.xml"))


def sheets(path: str | PathLike[str] | IO[bytes]) -> list[dict[str, Any]]:
    """The workbook's sheets in workbook order: ``[{"name": ..., "hidden": bool}]`` (hidden and veryHidden
    sheets are marked hidden)."""
    pkg = _Package(path)
    try:
        return [{"name": s["name"], "hidden": s["hidden"]} for s in _workbook(pkg).sheets]
    finally:
        pkg.close()


# -- number formats ---------------------------------------------------------------------------------
_DATE, _DATETIME, _TIME, _DURATION = "date", "datetime", "time", "duration"
_BUILTIN_KINDS: dict[int, str] = {
    **{i: _DATE for i in (14, 15, 16, 17, 27, 28, 29, 30, 31, 36, 50, 51, 52, 53, 54, 57, 58)},
    22: _DATETIME,
    **{i: _TIME for i in (18, 19, 20, 21, 45, 47, 32, 33, 34, 35, 55, 56)},
    46: _DURATION,
}
_QUOTED = re.compile(r'"[^"]*"')
_ESCAPED = re.compile(r"\\.|[_*].", re.S)
_ELAPSED = re.compile(r"\[(h+|m+|s+)\]", re.I)
_BRACKET = re.compile(r"\[[^\]]*\]")
_AMPM = re.compile(r"am/pm|a/p", re.I)


def format_kind(code: str) -> str | None:
    """``date``, ``datetime``, ``time``, ``duration`` or None for a number-format code."""
    text = _ESCAPED.sub("", _QUOTED.sub("", code))
    section = text.split(";", 1)[0]
    if _ELAPSED.search(section):
        return _DURATION
    section = _AMPM.sub("", _BRACKET.sub("", section)).lower()
    if "general" in section:
        section = section.replace("general", "")
    has_time = "h" in section or "s" in section
    has_date = "y" in section or "d" in section or ("m" in section and not has_time)
    if has_date and has_time:
        return _DATETIME
    if has_date:
        return _DATE
    if has_time:
        return _TIME
    return None


def _style_kinds(pkg: _Package, name: str | None) -> list[str | None]:
    """For each cellXfs index: the date kind of its number format, or None."""
    if name is None:
        return []
    custom: dict[int, str] = {}
    xf_ids: list[int] = []
    in_cell_xfs = in_num_fmts = False
    for event, elem in _events(pkg.zf, name):
        local = _local(elem.tag)
        if event == "start":
            if local == "cellXfs":
                in_cell_xfs = True
            elif local == "numFmts":
                in_num_fmts = True
            continue
        if local == "numFmts":
            in_num_fmts = False
        elif local == "numFmt" and in_num_fmts:
            try:
                custom[int(elem.get("numFmtId") or "")] = elem.get("formatCode") or ""
            except ValueError:
                pass
        elif local == "xf" and in_cell_xfs:
            try:
                xf_ids.append(int(elem.get("numFmtId") or 0))
            except ValueError:
                xf_ids.append(0)
            elem.clear()
        elif local == "cellXfs":
            in_cell_xfs = False
            elem.clear()
        elif local in ("cellStyleXfs", "fonts", "fills", "borders", "dxfs", "cellStyles"):
            elem.clear()
    kinds_by_id: dict[int, str | None] = {}
    out: list[str | None] = []
    for fmt in xf_ids:
        if fmt not in kinds_by_id:
            kinds_by_id[fmt] = format_kind(custom[fmt]) if fmt in custom else _BUILTIN_KINDS.get(fmt)
        out.append(kinds_by_id[fmt])
    return out


# -- values -----------------------------------------------------------------------------------------
_EPOCH_1900 = datetime(1899, 12, 30)
_EPOCH_1904 = datetime(1904, 1, 1)
_ESCAPE_X = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _unescape(text: str) -> str:
    """OOXML escapes control characters as _xHHHH_ (e.g. _x000D_ for a carriage return)."""
    if "_x" not in text:
        return text
    return _ESCAPE_X.sub(lambda m: chr(int(m.group(1), 16)), text)


def _hms(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def _serial_to_text(serial: float, kind: str, date1904: bool) -> str:
    """An Excel serial as ISO 8601 text; raises OverflowError/ValueError when out of range."""
    if kind == _DURATION:
        total = round(serial * 86400)
        return ("-" if total < 0 else "") + _hms(abs(total))
    if serial < 0:
        raise ValueError(serial)  # a negative date serial
    total = round(serial * 86400)
    days, seconds = divmod(total, 86400)
    if kind == _TIME or (0 <= serial < 1 and kind in (_DATE, _DATETIME)):
        return _hms(seconds)
    epoch = _EPOCH_1904 if date1904 else _EPOCH_1900
    if not date1904 and 0 < serial < 60:
        days += 1  # Excel's phantom 1900-02-29
    moment = epoch + timedelta(days=days, seconds=seconds)
    if seconds == 0:  # midnight is a date, whatever the format: the import's readers see values, not formats
        return moment.date().isoformat()
    return moment.isoformat(timespec="seconds")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if value.is_integer():
            return int(value)
        return value


def _col_index(ref: str) -> tuple[int, int]:
    """(0-based column, position after the letters) of a cell reference; column > 16383 when beyond XFD."""
    n = 0
    i = 0
    for ch in ref:
        o = ord(ch) | 32  # lower-case ASCII letters
        if 97 <= o <= 122:
            n = n * 26 + (o - 96)
            i += 1
            if n > EXCEL_MAX_COLUMNS:
                return EXCEL_MAX_COLUMNS, i
        else:
            break
    return n - 1, i


def _col_letters(index: int) -> str:
    letters = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(65 + r) + letters
    return letters


class _Warnings(list):
    def add(self, text: str) -> None:
        if len(self) < MAX_WARNINGS:
            self.append(text)
        else:
            self.dropped = getattr(self, "dropped", 0) + 1

    def final(self) -> list[str]:
        out = list(self)
        dropped = getattr(self, "dropped", 0)
        if dropped:
            out.append(f"... and {dropped} more warnings")
        return out


def _rich_text(elem: ET.Element, t_tag: str, r_tag: str) -> str:
    """Text of an <si> or <is>: its <t>, or the <t> of each run <r>; phonetic runs (<rPh>) are skipped."""
    parts: list[str] = []
    for child in elem:
        if child.tag == t_tag:
            parts.append(child.text or "")
        elif child.tag == r_tag:
            for sub in child:
                if sub.tag == t_tag:
                    parts.append(sub.text or "")
    return "".join(parts)


# -- rows -------------------------------------------------------------------------------------------
def read_rows(
    path: str | PathLike[str] | IO[bytes],
    sheet: str | int | None = None,
    start_row: int = 1,
    limit: int = 100,
    max_columns: int = EXCEL_MAX_COLUMNS,
) -> Preview:
    """Rows ``start_row .. start_row + limit - 1`` (1-based sheet row numbers) of one sheet.

    `sheet` is a name, a 0-based index, or None for the first visible worksheet. Cells past
    `max_columns` are skipped with a warning."""
    if start_row < 1 or limit < 0 or max_columns < 1:
        raise XlsxPreviewError("xlsx.error.bad_argument", detail="start_row and max_columns must be at least 1 and limit at least 0")
    max_columns = min(max_columns, EXCEL_MAX_COLUMNS)
    end_row = min(start_row + limit - 1, EXCEL_MAX_ROWS)
    pkg = _Package(path)
    try:
        wb = _workbook(pkg)
        target = _pick_sheet(wb.sheets, sheet)
        warnings = _Warnings()
        preview = Preview(sheet=target["name"], rows=[], start_row=start_row)
        if target["part"] is None or limit == 0:
            if target["part"] is None:
                warnings.add(f"sheet '{target['name']}' holds no cells (a chart sheet or a missing part)")
            preview.warnings = warnings.final()
            return preview
        kinds = _style_kinds(pkg, wb.styles)
        rows, pending, has_more = _stream_sheet(pkg, target["part"], start_row, end_row, max_columns, kinds, wb.date1904, warnings)
        if pending:
            _resolve_shared(pkg, wb.shared_strings, pending, warnings)
        # trailing empty columns and rows go; the rest are padded to one width
        width = 0
        last = -1
        for i, row in enumerate(rows):
            n = len(row)
            while n and row[n - 1] is None:
                n -= 1
            if n:
                del row[n:]
                width = max(width, n)
                last = i
            else:
                row.clear()
        del rows[last + 1:]
        for row in rows:
            if len(row) < width:
                row.extend([None] * (width - len(row)))
        preview.rows, preview.max_columns, preview.has_more = rows, width, has_more
        preview.warnings = warnings.final()
        return preview
    finally:
        pkg.close()


def _pick_sheet(sheet_list: list[dict[str, Any]], sheet: str | int | None) -> dict[str, Any]:
    if not sheet_list:
        raise XlsxPreviewError("xlsx.error.no_sheets", detail="the workbook has no sheets")
    if sheet is None:
        visible = [s for s in sheet_list if not s["hidden"] and s["part"] is not None]
        return (visible or sheet_list)[0]
    if isinstance(sheet, int) and not isinstance(sheet, bool):
        if 0 <= sheet < len(sheet_list):
            return sheet_list[sheet]
        raise XlsxPreviewError("xlsx.error.sheet_not_found", detail=f"the workbook has {len(sheet_list)} sheets; there is no sheet number {sheet + 1}")
    for s in sheet_list:
        if s["name"] == sheet:
            return s
    for s in sheet_list:  # Excel's sheet names are unique regardless of case
        if s["name"].casefold() == str(sheet).casefold():
            return s
    names = ", ".join(repr(s["name"]) for s in sheet_list)
    raise XlsxPreviewError("xlsx.error.sheet_not_found", detail=f"the workbook has no sheet named {sheet!r} (sheets: {names})")


def _stream_sheet(
    pkg: _Package,
    part: str,
    start_row: int,
    end_row: int,
    max_columns: int,
    kinds: list[str | None],
    date1904: bool,
    warnings: _Warnings,
) -> tuple[list[list[Any]], list[tuple[list[Any], int, int, str]], bool]:
    rows: list[list[Any]] = []
    pending: list[tuple[list[Any], int, int, str]] = []  # (row, column, shared-string index, ref)
    has_more = False
    tags: dict[str, str] = {}
    stack: list[ET.Element] = []
    row_num = 0
    row: list[Any] | None = None  # the current row when inside the window
    col = -1
    skipped_cols = 0
    n_kinds = len(kinds)
    skipped = 0  # cells past max_columns in the window
    skipped_row = 0
    with closing(_events(pkg.zf, part)) as events:
        for event, elem in events:
            if event == "start":
                if not stack:  # the root: learn the namespace (transitional or strict)
                    ns = elem.tag[: elem.tag.index("}") + 1] if elem.tag.startswith("{") else ""
                    tags = {k: ns + k for k in ("sheetData", "row", "c", "v", "f", "is", "t", "r")}
                stack.append(elem)
                if len(stack) == 3 and elem.tag == tags["row"] and stack[1].tag == tags["sheetData"]:
                    number = row_num + 1
                    r = elem.get("r")
                    if r is not None:
                        try:
                            number = max(int(r), number)  # rows only go down
                        except ValueError:
                            pass
                    row_num = number
                    col = -1
                    if row_num > end_row:
                        has_more = True
                        break
                    if row_num >= start_row:
                        while len(rows) < row_num - start_row:
                            rows.append([])  # row numbers skipped in the XML: empty rows
                        row = []
                        rows.append(row)
                    else:
                        row = None
                continue
            stack.pop()
            depth = len(stack)
            if depth == 3 and row is not None and elem.tag == tags["c"]:
                ref = elem.get("r")
                if ref:
                    c, _ = _col_index(ref)
                    col = c if c >= 0 else col + 1
                else:
                    col += 1
                if col >= max_columns:
                    skipped += 1
                    skipped_row = skipped_row or row_num
                else:
                    _cell(elem, row, col, row_num, tags, kinds, n_kinds, date1904, warnings, pending)
            if depth <= 3 and stack:
                stack[-1].clear()  # handled: drop it (and its finished siblings) from the tree
    if skipped:
        limit = "Excel's last column XFD" if max_columns >= EXCEL_MAX_COLUMNS else f"column {_col_letters(max_columns - 1)}"
        warnings.add(f"{skipped} cell(s) past {limit} skipped (first in row {skipped_row})")
    return rows, pending, has_more


def _cell(
    elem: ET.Element,
    row: list[Any],
    col: int,
    row_num: int,
    tags: dict[str, str],
    kinds: list[str | None],
    n_kinds: int,
    date1904: bool,
    warnings: _Warnings,
    pending: list[tuple[list[Any], int, int, str]],
) -> None:
    t = elem.get("t") or "n"
    v = None
    has_formula = False
    inline = None
    for child in elem:
        tag = child.tag
        if tag == tags["v"]:
            v = child.text or ""
        elif tag == tags["f"]:
            has_formula = True
        elif tag == tags["is"]:
            inline = child
    ref = None
    value: Any = None
    if t == "inlineStr":
        if inline is not None:
            value = _unescape(_rich_text(inline, tags["t"], tags["r"]))
        elif v is not None:
            value = _unescape(v)
    elif v is None:
        if has_formula:
            ref = f"{_col_letters(col)}{row_num}"
            warnings.add(f"{ref}: formula has no cached value")
        return
    elif t == "s":
        try:
            index = int(v)
        except ValueError:
            index = -1
        ref = f"{_col_letters(col)}{row_num}"
        if index < 0:
            warnings.add(f"{ref}: invalid shared string reference {v[:20]!r}")
            return
        _put(row, col, None)
        pending.append((row, col, index, ref))
        return
    elif t == "n":
        if v == "":
            return
        try:
            number = _number(v)
        except ValueError:
            warnings.add(f"{_col_letters(col)}{row_num}: unreadable number {v[:20]!r}")
            return
        if isinstance(number, float) and not math.isfinite(number):
            warnings.add(f"{_col_letters(col)}{row_num}: number out of range")
            return
        s = elem.get("s")
        kind = None
        if s is not None and n_kinds:
            try:
                si = int(s)
                kind = kinds[si] if 0 <= si < n_kinds else None
            except ValueError:
                kind = None
        elif n_kinds:
            kind = kinds[0]
        if kind is None:
            value = number
        else:
            try:
                value = _serial_to_text(float(number), kind, date1904)
            except (OverflowError, ValueError):
                warnings.add(f"{_col_letters(col)}{row_num}: {v[:20]} is not a valid date")
                return
    elif t == "str":
        value = _unescape(v)
    elif t == "b":
        value = v.strip() in ("1", "true", "TRUE")
    elif t == "e":
        warnings.add(f"{_col_letters(col)}{row_num}: {v or '#ERROR'}")
        return
    elif t == "d":
        value = _iso_cell(v)
        if value is None:
            warnings.add(f"{_col_letters(col)}{row_num}: unreadable date {v[:30]!r}")
            return
    else:
        value = v
    if isinstance(value, str):
        if value == "":
            return
        if len(value) > MAX_STRING:
            warnings.add(f"{_col_letters(col)}{row_num}: text longer than {MAX_STRING} characters cut")
            value = value[:MAX_STRING]
    _put(row, col, value)


def _put(row: list[Any], col: int, value: Any) -> None:
    n = len(row)
    if col < n:
        row[col] = value
    else:
        if col > n:
            row.extend([None] * (col - n))
        row.append(value)


def _iso_cell(text: str) -> str | None:
    """A ``t="d"`` cell (ISO 8601 in the XML, as strict-mode writers store dates)."""
    text = text.strip()
    try:
        if "T" not in text and len(text) <= 10:
            return date.fromisoformat(text).isoformat()
        if text.startswith("T") or (len(text) <= 15 and ":" in text and "-" not in text):
            return _hms(round(_time_seconds(text.lstrip("T"))))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment.replace(tzinfo=None, microsecond=0)
    if moment.hour == moment.minute == moment.second == 0 and "T" not in text:
        return moment.date().isoformat()
    return moment.isoformat(timespec="seconds")


def _time_seconds(text: str) -> float:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(text)
    h, m = int(parts[0]), int(parts[1])
    s = float(parts[2]) if len(parts) == 3 else 0.0
    return h * 3600 + m * 60 + s


def _resolve_shared(
    pkg: _Package, name: str | None, pending: list[tuple[list[Any], int, int, str]], warnings: _Warnings
) -> None:
    """Fill shared-string cells, streaming the table only up to the highest index they use."""
    needed = {index for _, _, index, _ in pending}
    top = max(needed)
    found: dict[int, str] = {}
    if name is not None:
        index = -1
        depth = 0
        root: ET.Element | None = None
        si_tag = t_tag = r_tag = ""
        with closing(_events(pkg.zf, name)) as events:
            for event, elem in events:
                if event == "start":
                    if root is None:
                        root = elem
                        ns = elem.tag[: elem.tag.index("}") + 1] if elem.tag.startswith("{") else ""
                        si_tag, t_tag, r_tag = ns + "si", ns + "t", ns + "r"
                    depth += 1
                    continue
                depth -= 1
                if depth == 1 and elem.tag == si_tag:
                    index += 1
                    if index in needed:
                        found[index] = _unescape(_rich_text(elem, t_tag, r_tag))
                    root.clear()  # type: ignore[union-attr]
                    if index >= top:
                        break
    for row, col, index, ref in pending:
        text = found.get(index)
        if text is None:
            warnings.add(f"{ref}: shared string {index} is missing from the workbook")
            continue
        if text == "":
            continue
        if len(text) > MAX_STRING:
            warnings.add(f"{ref}: text longer than {MAX_STRING} characters cut")
            text = text[:MAX_STRING]
        row[col] = text
