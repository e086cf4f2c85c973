"""The readers of uploaded files: the preview of a file's first rows, and the whole import of a checked
file into normalized records. The import runs only in the sandbox child (`core.sandbox`), which loads
this module without the store (no DuckDB, no audit) so that the child starts fast; `core.datasets` keeps
the records, the files and the statuses, and starts the child.

Value rules, the same in every reader: dates as ISO 8601 text, whole numbers below 1e15 as ints, blank
text and Excel error codes as None; entirely empty rows are dropped and the header row is the configured
one or `tabular.detect_header`'s.
"""
from __future__ import annotations

import errno
import json
import os
import time as _time
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from core import filesafety, tabular, xlsx_preview
from core.errors import ValidationError, WorkbenchError

_CHECKS_WAIT_SECONDS = 600
PREVIEW_SCAN_ROWS = 200


# -- the preview ---------------------------------------------------------------------------------------
def preview(path: str | Path, *, sheet: str | None = None, header_row: int | None = None,
            start_row: int | None = None, end_row: int | None = None, limit: int = 20,
            max_mb: int = 50) -> dict[str, Any]:
    """What an import would produce, without reading the whole file (the CLI's JSON contract).

    Returns `format`, `sheets` ([{name, hidden}]), `sheet`, `header_row` (1-based, detected unless
    given), `columns` ([{name, type}] inferred from the sample), `rows` (objects), `total_rows` (None
    when only a full read would tell) and `warnings`.
    """
    check_range({"header_row": header_row, "start_row": start_row, "end_row": end_row}, limit=limit)
    path = Path(path)
    fmt = filesafety.check_upload(path, max_bytes=max_mb * 1048576)
    sheet_list: list[dict[str, Any]] = []
    warnings: list[str] = []
    total: int | None = None
    scan = max(PREVIEW_SCAN_ROWS, (header_row or 0) + (limit or 0) + 1, (start_row or 0) + (limit or 0))
    if fmt in ("xlsx", "xlsm"):
        sheet_list = xlsx_preview.sheets(path)
        window = xlsx_preview.read_rows(path, sheet=sheet, limit=scan)
        rows, sheet, warnings = window.rows, window.sheet, list(window.warnings)
        total = None if window.has_more else len(rows)
    elif fmt == "xls":
        sheet_list, rows, sheet, total = xls_rows(str(path), sheet, scan)
        total = None if total > len(rows) else total
    elif fmt == "csv":
        rows = []
        for row in tabular.iter_csv(path):
            rows.append(row)
            if len(rows) > scan:
                break
        total = None if len(rows) > scan else len(rows)
        rows = rows[:scan]
    elif fmt == "json":
        records = tabular.read_json_records(path)
        return {"format": fmt, "sheets": [], "sheet": None, "header_row": None, "columns": tabular.schema(records),
                "rows": records[:limit], "total_rows": len(records), "warnings": []}
    else:
        raise ValidationError("dataset.error.format", format=fmt, supported="xlsx, xlsm, xls, csv, json")
    header_at, header, body = _window(rows, header_row, start_row, end_row)
    names, records = tabular.to_records(header, body)
    return {"format": fmt, "sheets": sheet_list, "sheet": sheet, "header_row": header_at + 1,
            "columns": tabular.schema(records, names),
            "rows": records[:limit], "total_rows": None if total is None else len(body), "warnings": warnings}


def xls_rows(path: str, sheet: str | None, limit: int) -> tuple[list[dict[str, Any]], list[list[Any]], str, int]:
    """(sheets, first `limit` rows, sheet name, total rows) of a legacy .xls, values as in .xlsx.

    xlrd loads sheets on demand; dates become ISO 8601 strings, whole numbers ints, errors None.
    """
    import xlrd

    try:
        book = xlrd.open_workbook(path, on_demand=True)
    except Exception as exc:  # xlrd fails in many ways on a damaged file (KeyError, struct.error, ...)
        _unless_out_of_memory(exc)
        raise ValidationError("xlsx.error.corrupt", detail=_xls_damage(exc)) from None
    try:
        names = book.sheet_names()
        sheet_list = [{"name": n, "hidden": bool(book.sheet_by_name(n).visibility)} for n in names]
        chosen = sheet if sheet is not None else next((s["name"] for s in sheet_list if not s["hidden"]), names[0])
        if chosen not in names:
            raise ValidationError("xlsx.error.sheet_not_found", detail=f"no sheet named {chosen!r} (sheets: {names})")
        data = book.sheet_by_name(chosen)
        rows = [[_xls_value(cell, book.datemode) for cell in data.row(i)] for i in range(min(limit, data.nrows))]
        return sheet_list, rows, chosen, data.nrows
    except ValidationError:
        raise
    except Exception as exc:
        _unless_out_of_memory(exc)
        raise ValidationError("xlsx.error.corrupt", detail=_xls_damage(exc)) from None
    finally:
        book.release_resources()


def _unless_out_of_memory(exc: Exception) -> None:
    """Running out of memory is the sandbox's limit speaking ("too big: import a range"), not damage."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        raise exc


def _xls_damage(exc: Exception) -> str:
    """What xlrd tripped over, short (its messages are often just a number or a struct format)."""
    text = str(exc).strip()
    return f"the .xls structure is inconsistent ({type(exc).__name__}{': ' + text[:120] if text else ''})"


def _xls_value(cell: Any, datemode: int) -> Any:
    import xlrd

    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
        return None
    if cell.ctype == xlrd.XL_CELL_DATE:
        moment = xlrd.xldate.xldate_as_datetime(cell.value, datemode)
        if cell.value < 1:
            return moment.strftime("%H:%M:%S")
        return moment.date().isoformat() if moment.time() == moment.min.time() else moment.isoformat()
    if cell.ctype == xlrd.XL_CELL_NUMBER:
        return int(cell.value) if float(cell.value).is_integer() else cell.value
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return bool(cell.value)
    return cell.value if str(cell.value).strip() else None


EXCEL_ERRORS = frozenset({"#DIV/0!", "#N/A", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#GETTING_DATA"})


def calamine_rows(path: str, sheet: str | None, limits: dict[str, int]) -> list[list[Any]]:
    """Every row of an .xlsx/.xlsm sheet through calamine (Rust, so only ever run in the sandbox),
    with the same value rules as the preview: ISO dates, whole numbers as ints, blanks and errors None."""
    from python_calamine import CalamineWorkbook

    chosen = sheet if sheet is not None else next(
        (s["name"] for s in xlsx_preview.sheets(path) if not s["hidden"]), None)
    try:
        book = CalamineWorkbook.from_path(path)
        data = book.get_sheet_by_name(chosen) if chosen is not None else book.get_sheet_by_index(0)
    except Exception as exc:  # calamine raises its own error types for damaged or missing parts
        raise ValidationError("xlsx.error.corrupt", detail=str(exc)[:200]) from None
    if data.total_height > int(limits["dataset_max_rows"]) + 50:
        raise ValidationError("dataset.error.too_many_rows", rows=data.total_height, max=limits["dataset_max_rows"])
    if data.total_width > int(limits["dataset_max_columns"]):
        raise ValidationError("dataset.error.too_many_columns", columns=data.total_width,
                              max=limits["dataset_max_columns"])
    return [[_excel_value(v) for v in row] for row in data.to_python(skip_empty_area=False)]


def _excel_value(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else value
    if isinstance(value, str):
        return None if value == "" or value in EXCEL_ERRORS else value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return duration_text(value)
    return value


def duration_text(value: timedelta) -> str:
    """A duration cell as `H:MM:SS` with hours past 24 (`[h]:mm:ss`), the preview's rule: never Python's
    `1 day, 2:30:00`."""
    seconds = round(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- the import, in the sandbox child -------------------------------------------------------------------
def await_checks(gate: str) -> str | None:
    """In the child: wait for the parent's checks; the format they found, or None to stop unread (also
    when the parent is gone: an orphan never reads the file)."""
    parent, deadline = os.getppid(), _time.monotonic() + _CHECKS_WAIT_SECONDS
    while not os.path.exists(gate):
        if _time.monotonic() > deadline or os.getppid() != parent or not os.path.isdir(os.path.dirname(gate)):
            return None
        _time.sleep(0.002)
    return Path(gate).read_text(encoding="utf-8") or None


def import_file(path: str, config: dict[str, Any], limits: dict[str, int], out: str,
                gate: str) -> dict[str, Any] | None:
    """The sandboxed import: wait for the checks, then `write_table` (None when the checks refused the
    file, which is then never read)."""
    fmt = await_checks(gate)
    return None if fmt is None else write_table(path, fmt, config, limits, out, fast=False)


def write_table(path: str, fmt: str, config: dict[str, Any], limits: dict[str, int], out: str, *,
                fast: bool = True) -> dict[str, Any]:
    """Import a checked file: its normalized records as a JSON list written to `out` (a temporary file
    beside the final one, which the parent renames into place), and back only `names`, `row_count`,
    `schema` (types from the first 1000 records), `reader` and `fallback` (why the fast path declined,
    or None). Runs in the sandbox; nothing the size of the data crosses the process boundary.

    With `fast`, .xlsx/.xlsm go through the columnar fast path (`core.xlsx_import`, whose libraries the
    sandbox child must have loaded before its limits: `xlsx_import.import_file`) unless it declines the
    sheet; the per-cell reader (`read_table`) produces the same records.
    """
    fallback = None
    if fmt in ("xlsx", "xlsm"):
        if not fast:
            fallback = "the columnar libraries were not loaded"
        else:
            from core import xlsx_import

            try:
                return xlsx_import.write_json(path, config.get("sheet"), config, limits, out)
            except xlsx_import.Fallback as exc:
                fallback = exc.reason
            except (WorkbenchError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                # a library failing on this file (a Rust panic is a BaseException): the per-cell reader decides
                fallback = f"the fast path failed: {type(exc).__name__}: {str(exc)[:200]}"
    names, records = read_table(path, fmt, config, limits)
    data = json.dumps(records, ensure_ascii=False, default=str).encode("utf-8")
    with open(out, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return {"names": names, "row_count": len(records), "schema": tabular.schema(records, names),
            "reader": "calamine" if fmt in ("xlsx", "xlsm") else fmt, "fallback": fallback}


def check_range(config: dict[str, Any], limit: int | None = None) -> None:
    """Row options are 1-based Excel row numbers: 0 or less (Python would count from the end) and an
    end before the start are refused, not quietly turned into other rows."""
    for field in ("header_row", "start_row", "end_row"):
        value = config.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValidationError("dataset.error.row_number", field=field, value=value)
    if limit is not None and limit < 0:
        raise ValidationError("dataset.error.row_number", field="limit", value=limit)
    start, end = config.get("start_row"), config.get("end_row")
    if start is not None and end is not None and end < start:
        raise ValidationError("dataset.error.row_order", start=start, end=end)


def read_table(path: str, fmt: str, config: dict[str, Any],
               limits: dict[str, int]) -> tuple[list[str], list[dict[str, Any]]]:
    """A whole checked file as (column names, records), within the limits. Runs in the sandbox."""
    check_range(config)
    if fmt == "json":
        records = tabular.read_json_records(Path(path))
        names = tabular.column_names(records)
        _check_limits(len(records), len(names), limits)
        return names, records
    if fmt == "csv":
        rows = list(tabular.iter_csv(Path(path)))
    elif fmt in ("xlsx", "xlsm"):
        rows = calamine_rows(path, config.get("sheet"), limits)
    elif fmt == "xls":
        rows = xls_rows(path, config.get("sheet"), int(limits["dataset_max_rows"]) + 50)[1]
    else:
        raise ValidationError("dataset.error.format", format=fmt, supported="xlsx, xlsm, xls, csv, json")
    _, header, body = _window(rows, config.get("header_row"), config.get("start_row"), config.get("end_row"))
    _check_limits(len(body), max([len(header), *(len(r) for r in body)]), limits)
    return tabular.to_records(header, body)


def _window(rows: list[list[Any]], header_row: int | None, start_row: int | None,
            end_row: int | None) -> tuple[int, list[Any], list[list[Any]]]:
    """(0-based header index, header cells, non-empty body rows) of 1-based Excel row options: the
    header is the given row or the detected one, the body starts after it unless told to start later."""
    header_at = int(header_row) - 1 if header_row else tabular.detect_header(rows)
    first = max(int(start_row or header_at + 2) - 1, header_at + 1)
    last = int(end_row) if end_row else len(rows)
    body = [r for r in rows[first:last] if any(v is not None for v in r)]
    return header_at, rows[header_at] if header_at < len(rows) else [], body


def _check_limits(rows: int, columns: int, limits: dict[str, int]) -> None:
    if rows > int(limits["dataset_max_rows"]):
        raise ValidationError("dataset.error.too_many_rows", rows=rows, max=limits["dataset_max_rows"])
    if columns > int(limits["dataset_max_columns"]):
        raise ValidationError("dataset.error.too_many_columns", columns=columns, max=limits["dataset_max_columns"])
