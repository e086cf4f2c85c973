"""The fast path of the full .xlsx/.xlsm import: fastexcel reads the sheet into Arrow columns and polars
builds the normalized JSON text column by column, straight into the output file. Runs only inside the
import sandbox (`core.sandbox`), like every reader of uploaded files: `import_file` is the child's entry
point, which `core.datasets.ingest` names by module path without importing this module, so fastexcel,
polars and pyarrow load in the child, before its resource limits apply (the sandbox counts only the
work against them), and never in the app or the service.

The value rules are those of the per-cell reader, `core.readers.calamine_rows` + `read_table`, which
stays the reference and the fallback: a number is an int when whole and below 1e15 (per value, so one
column can hold both), text "" and Excel error codes are null, dates are "YYYY-MM-DD" when the serial is
whole and "YYYY-MM-DDTHH:MM:SS[.ffffff]" otherwise, entirely empty rows are dropped, the header row is
the configured one or `tabular.detect_header`'s, names follow `tabular.unique_names`.

Exactness first: whatever this path cannot reproduce exactly raises `Fallback` (with the reason) and
the caller runs the per-cell reader instead. It is detected, never guessed:

- a column with more than one kind of cell (fastexcel's strict dtype check over every row, whose types the
  conversion then uses even where the first rows alone would have guessed text), and any
  cell fastexcel could not convert (error cells excepted: both paths read them as empty);
- durations, time-of-day cells (serials below 1), dates past 9999, the 1904 date system, ISO date cells
  (``t="d"``), and date serials within half a millisecond of a whole day without being whole (the
  per-cell reader writes those as datetimes; found by a scan of the sheet XML that runs beside the
  parse), non-finite numbers;
- layouts the header window cannot vouch for: a used range that does not start in column A, a header
  row that is empty or whose cells fastexcel names differently from the window (bools, dates, numbers
  past 1e15), reader warnings or numbers / date-like text in the rows a detected header was chosen over,
  window rows that the full read contradicts, an empty row window (end_row before start_row);
- a sheet the reader cannot open, or one that is not the workbook's worksheet under that name.

The header window (the first `tabular.HEADER_SCAN_ROWS` rows, for header detection and the header's
values) comes from `core.xlsx_preview`, which streams only those rows. What header detection saw there
is checked against the full read: fastexcel names the columns from the same header row, and when the
header was detected, every row below it is read (the body is sliced out afterwards) so each window row
can be compared cell by cell (empty / text / other) with what the per-cell reader would have seen.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import re
import threading
import zipfile
from datetime import datetime
from typing import Any

# The sandbox limits the child's address space, so what the libraries reserve without using counts:
# pyarrow's default (jemalloc) pool reserves about 1 GB (the system allocator reserves what it uses; set
# before pyarrow loads), and glibc gives each thread that allocates under contention an arena of its
# own, 64 MB of address space apiece (two are plenty).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
try:
    ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
except (OSError, AttributeError):  # not glibc
    pass

import fastexcel  # noqa: E402  (the libraries load with this module: in the sandbox child, before its limits)
import polars as pl  # noqa: E402
import pyarrow  # noqa: E402,F401  (fastexcel's Arrow export needs it)

from core import readers, tabular, xlsx_preview  # noqa: E402
from core.errors import ValidationError  # noqa: E402

EXCEL_ERRORS = tuple(sorted(readers.EXCEL_ERRORS))
pl.DataFrame({"warm": [0, 1]}).select(pl.col("warm").sum())  # the thread pool starts now, not under the limit
SCHEMA_SAMPLE = tabular.SCHEMA_SAMPLE  # the same sample as every other reader
_WHOLE_LIMIT = 1e15
_DATE_LIKE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"  # what the window makes of
                        r"|-?\d+:\d{2}(:\d{2}(\.\d+)?)?)\s*$")  # date-styled numbers
_WARNING_CELL = re.compile(r"^([A-Z]{1,3})(\d+): ")
_CELL_ERROR = re.compile(r"^Expected \w+ but got 'Error\(")


class Fallback(Exception):
    """The fast path cannot reproduce this sheet exactly; `reason` says why (for logs and tests)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the guard scan of the sheet XML ------------------------------------------------------------------
_RUNS = (b"0000000", b"9999999")  # a number within 1e-8 of a whole one has such a digit run, in any notation
_ISO_CELL = (b'"d"', b"'d'")
_ATTR_T = re.compile(rb"\st\s*=\s*$")
_CELL_REF = re.compile(rb"""\sr\s*=\s*["']([A-Za-z]{1,3})(\d+)["']""")
_TAG_NAME = re.compile(rb"<(/?)(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_VALUE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?v>([^<]{0,64})</")
_LOOKBACK = 64 * 1024
_SLACK = 1024  # bytes left for the next round, so a cell's value is never cut in two
_MAX_HITS = 1_000_000
_DAY_MS = 86_400_000


class _Scan(threading.Thread):
    """Streams the sheet XML once (zlib and fastexcel both release the GIL, so this runs beside the
    parse) and records what fastexcel's Arrow output hides: ISO date cells (``t="d"``), and the number
    cells whose serial is not whole yet rounds to midnight at calamine's millisecond precision (the
    per-cell reader writes those as datetimes, fastexcel's timestamp cannot tell them from dates)."""

    def __init__(self, path: str, part: str) -> None:
        super().__init__(daemon=True, name="xlsx-import-scan")
        self.path, self.part = path, part
        self.iso_cells = False
        self.unplaced = False  # a candidate the scan could not tie to a cell: trust nothing
        self.midnight_not_whole: set[tuple[int, int]] = set()  # (0-based row, 0-based column)
        self.error: BaseException | None = None
        self._hits = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported to the main thread, which falls back
            self.error = exc

    def _run(self) -> None:
        with zipfile.ZipFile(self.path) as zf, zf.open(self.part) as fh:
            buf, buf_at, done = b"", 0, 0
            while True:
                chunk = fh.read(1 << 20)
                buf += chunk
                limit = len(buf) if not chunk else max(0, len(buf) - _SLACK)
                begin = done - buf_at
                for pattern in _ISO_CELL:
                    at = buf.find(pattern, begin, limit + len(pattern) - 1)
                    while at != -1:
                        if _ATTR_T.search(buf, max(0, at - 32), at):
                            self.iso_cells = True
                            return
                        at = buf.find(pattern, at + 1, limit + len(pattern) - 1)
                seen_cells: set[int] = set()
                for pattern in _RUNS:
                    at = buf.find(pattern, begin, limit + len(pattern) - 1)
                    while at != -1:
                        self._hits += 1
                        if self._hits > _MAX_HITS:
                            self.unplaced = True
                        else:
                            self._check(buf, at, seen_cells)
                        if self.unplaced:
                            return
                        at = buf.find(pattern, at + 1, limit + len(pattern) - 1)
                done = buf_at + limit
                if not chunk:
                    return
                keep = buf[-_LOOKBACK:]
                buf_at += len(buf) - len(keep)
                buf = keep

    def _check(self, buf: bytes, at: int, seen_cells: set[int]) -> None:
        """Walk back from `at` to the enclosing ``<c ...>``; check that cell's number."""
        end = at
        for _ in range(10_000):
            lt = buf.rfind(b"<", 0, end)
            if lt == -1:
                self.unplaced = True
                return
            m = _TAG_NAME.match(buf, lt)
            if m is None:  # a comment, a processing instruction
                end = lt
                continue
            closing, name = m.group(1), m.group(2)
            if name == b"c" and not closing:
                if lt in seen_cells:
                    return
                seen_cells.add(lt)
                tag_end = buf.find(b">", lt)
                ref = _CELL_REF.search(buf, lt, tag_end if tag_end != -1 else len(buf))
                if ref is None:
                    self.unplaced = True
                    return
                close = buf.find(b"/c>", lt)  # the cell's end ("</c>" or "</x:c>"), or a later one
                value = _VALUE.search(buf, tag_end, close if close != -1 else len(buf))
                if value is not None and _midnight_not_whole(value.group(1)):
                    self.midnight_not_whole.add((int(ref.group(2)) - 1, _col_index(ref.group(1).decode("ascii"))))
                return
            if name in (b"c", b"row", b"sheetData", b"worksheet"):
                return  # between cells or outside the sheet data (widths, margins): not a cell value
            end = lt
        self.unplaced = True


def _midnight_not_whole(text: bytes) -> bool:
    """calamine turns serial `v` into a datetime rounded to the millisecond; python-calamine writes a
    date only when `v` itself is whole. True when the two disagree (a datetime at exactly 00:00:00)."""
    try:
        v = float(text)
    except ValueError:
        return False
    if not math.isfinite(v) or v == math.floor(v):
        return False
    shifted = (v if v >= 60.0 else v + 1.0) * _DAY_MS
    ms = math.floor(abs(shifted) + 0.5) * (1 if shifted >= 0 else -1)  # Rust's f64::round
    return ms % _DAY_MS == 0


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n - 1


# -- the fast path --------------------------------------------------------------------------------------
def import_file(path: str, config: dict[str, Any], limits: dict[str, int], out: str,
                gate: str) -> dict[str, Any] | None:
    """The sandboxed import of a file uploaded as .xlsx/.xlsm: `readers.import_file` with this fast
    path available (this module, hence its libraries, is loaded before the child's limits apply)."""
    fmt = readers.await_checks(gate)
    return None if fmt is None else readers.write_table(path, fmt, config, limits, out)


def write_json(path: str, sheet: str | None, config: dict[str, Any], limits: dict[str, int],
               out: str) -> dict[str, Any]:
    """Write the normalized records of one sheet as a JSON list to `out`; return names, row count and
    the schema of the first `SCHEMA_SAMPLE` records. Raises `Fallback` when the sheet needs the per-cell
    reader, a `ValidationError` exactly where the per-cell reader would raise the same one."""
    package = _workbook(path)
    chosen = sheet if sheet is not None else next((s["name"] for s in package.sheets if not s["hidden"]), None)
    target = next((s for s in package.sheets if s["name"] == chosen), None)
    if target is None or target["part"] is None:
        raise Fallback("sheet not found, or not a worksheet")
    if package.date1904:
        raise Fallback("1904 date system")

    scan = _Scan(path, target["part"])
    scan.start()
    try:
        return _write(path, chosen, config, limits, out, scan)
    finally:
        scan.join()


def _workbook(path: str) -> Any:
    pkg = xlsx_preview._Package(path)  # the preview's package reader: sheet list, parts, date system
    try:
        return xlsx_preview._workbook(pkg)
    except ValidationError as exc:
        raise Fallback(f"workbook unreadable here: {exc.key}") from None
    finally:
        pkg.close()


def _write(path: str, chosen: str, config: dict[str, Any], limits: dict[str, int], out: str,
           scan: _Scan) -> dict[str, Any]:
    configured = int(config["header_row"]) - 1 if config.get("header_row") else None
    if configured is not None and configured < 0:
        raise Fallback("header_row before the first row")
    scanned = max(tabular.HEADER_SCAN_ROWS, (configured or 0) + 1)
    try:
        window = xlsx_preview.read_rows(path, sheet=chosen, limit=scanned)
    except ValidationError as exc:
        raise Fallback(f"header window unreadable: {exc.key}") from None
    # the per-cell reader's text rules on the window: "" and error codes are empty (`_excel_value`)
    rows = [[None if isinstance(v, str) and (v == "" or v in readers.EXCEL_ERRORS) else v for v in row]
            for row in window.rows]
    header_at = configured if configured is not None else tabular.detect_header(rows)
    start = max(int(config.get("start_row") or header_at + 2) - 1, header_at + 1)
    end = int(config["end_row"]) if config.get("end_row") else None
    if end is not None and end <= start:
        raise Fallback("no rows between start_row and end_row")
    if header_at >= len(rows) or all(v is None for v in rows[header_at]):
        raise Fallback("empty header row")
    header, header_cells = rows[header_at], window.rows[header_at]
    warned_rows = _warned_rows(window.warnings)
    if warned_rows is None or header_at + 1 in warned_rows:
        raise Fallback("reader warnings in the header window")
    # the rows read: the body, or when the header was detected, every row from the header on that
    # detection looked at too (to check the window against); the body is sliced out afterwards
    if configured is not None:
        first, stop = start, end
    else:
        first, stop = header_at + 1, None if end is None else max(end, scanned)
        _check_title_rows(rows, header_at, warned_rows)

    try:
        reader = fastexcel.read_excel(path)
        options: dict[str, Any] = {"header_row": header_at, "skip_rows": first - header_at - 1,
                                   "dtype_coercion": "strict"}
        if stop is not None:
            options["n_rows"] = stop - first
        loaded = reader.load_sheet(chosen, **options)
        columns = loaded.available_columns()  # strict over every row: a column of two kinds raises
        if [c.absolute_index for c in columns] != list(range(len(columns))):
            raise Fallback("the used range does not start in column A")
        if [c.dtype for c in columns] != [c.dtype for c in loaded.selected_columns]:
            # the conversion's types come from the first rows only: a column empty there (or holding only
            # text like "NA") would be read as text; read again with every column's type from all rows
            del loaded  # never two parsed copies of the sheet at once
            loaded = reader.load_sheet(chosen, **options, dtypes={c.index: c.dtype for c in columns})
            columns = loaded.available_columns()
        # the per-cell reader's limits, on the same numbers: calamine's last row / last column index
        last_row, last_col = header_at + loaded.total_height, len(columns) - 1
        _check_header_names(header_cells, [c.name for c in columns])
        if last_row > int(limits["dataset_max_rows"]) + 50 or last_col > int(limits["dataset_max_columns"]):
            raise Fallback("over the limits: the per-cell reader raises the error")
        batch, cell_errors = loaded.to_arrow_with_errors()
    except fastexcel.FastExcelError as exc:
        raise Fallback(f"fastexcel: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if cell_errors is not None and not all(_CELL_ERROR.match(e.detail) for e in cell_errors.errors):
        raise Fallback("cells fastexcel could not convert")
    width = len(columns)
    # calamine's cells (the Arrow columns hold the data now) are freed on a thread while polars works
    cells = [loaded, reader]
    del loaded, reader
    try:
        threading.Thread(target=cells.clear, name="xlsx-import-free", daemon=True).start()
    except RuntimeError:  # no thread to be had: free them here
        cells.clear()
    if any(v is not None for v in header[width:]):
        raise Fallback("the header window is wider than the used range")
    names = tabular.unique_names(list(header[:width]) + [None] * (width - len(header)))
    frame = pl.from_arrow(batch)
    del batch
    frame.columns = [f"c{i}" for i in range(width)]
    datetime_cols = {i for i, dtype in enumerate(frame.dtypes) if isinstance(dtype, pl.Datetime)}
    values, present = _literals(frame)
    # two steps: the literals column-parallel, then one row-wise concatenation (one select is slower)
    literals = frame.select(*[v.alias(f"v{i}") for i, v in enumerate(values)],
                            (pl.any_horizontal(present) if present else pl.lit(False)).alias("present"))
    del frame
    row_json = pl.concat_str(_row_pieces(names)).alias("json")

    # every window row the full read covers must look the same to header detection in both
    covered = range(first, scanned if stop is None else min(stop, scanned))
    firsts = literals.head(len(covered)).select(row_json)["json"].to_list()
    for i, r in enumerate(covered):
        seen = _kinds(rows[r]) if r < len(rows) else []
        read = _kinds(list(json.loads(firsts[i][1:]).values())) if i < len(firsts) else []
        if seen != read:
            raise Fallback(f"the header window and the full read disagree on row {r + 1}")
    literals = literals.slice(start - first, None if end is None else end - start)
    kept = literals.filter(pl.col("present")).select(row_json)
    del literals
    count = kept.height
    if count > int(limits["dataset_max_rows"]):
        raise ValidationError("dataset.error.too_many_rows", rows=count, max=limits["dataset_max_rows"])
    if width > int(limits["dataset_max_columns"]):
        raise ValidationError("dataset.error.too_many_columns", columns=width, max=limits["dataset_max_columns"])

    scan.join()
    if scan.error is not None:
        raise Fallback(f"sheet scan failed: {type(scan.error).__name__}")
    if scan.iso_cells:
        raise Fallback("ISO date cells (t=\"d\")")
    if scan.unplaced:
        raise Fallback("a near-whole number the sheet scan could not tie to a cell")
    last = float("inf") if end is None else end
    if any(c in datetime_cols and start <= r < last for r, c in scan.midnight_not_whole):
        raise Fallback("a date serial within half a millisecond of a whole day")

    head = kept.head(SCHEMA_SAMPLE)["json"].to_list()
    _write_rows(kept, head[0] if head else None, out)
    sample = json.loads("[" + "".join(head)[1:] + "]") if head else []
    return {"names": names, "row_count": count, "schema": tabular.schema(sample, names), "reader": "fastexcel",
            "fallback": None}


def _warned_rows(warnings: list[str]) -> set[int] | None:
    """1-based rows named by the window's warnings; None when one names no cell."""
    found: set[int] = set()
    for warning in warnings:
        m = _WARNING_CELL.match(warning)
        if m is None:
            return None
        found.add(int(m.group(2)))
    return found


def _check_title_rows(rows: list[list[Any]], header_at: int, warned_rows: set[int]) -> None:
    """The rows above a detected header, which the full read does not cover: the window's values there
    must be ones the per-cell reader cannot see differently (empty, or plain text: not a number, not
    text the window may have made from a date-styled number, not whitespace only, which calamine drops)."""
    for r, row in enumerate(rows[:header_at]):
        if r + 1 in warned_rows:
            raise Fallback(f"reader warnings in row {r + 1}, above the data")
        for value in row:
            if value is not None and not (isinstance(value, str) and value.strip() and not _DATE_LIKE.match(value)):
                raise Fallback(f"numbers, dates or blank text in row {r + 1}, above the data the full read checks")


def _check_header_names(header: list[Any], fx_names: list[str]) -> None:
    """fastexcel named the columns from the same row: each name must be what that cell's window value
    gives (text as is, or with fastexcel's ``_1`` suffix for a repeat; whole numbers; empty cells)."""
    seen: set[str] = set()
    for i, name in enumerate(fx_names):
        value = header[i] if i < len(header) else None
        if value is None:
            ok = name == f"__UNNAMED__{i}"
        elif isinstance(value, bool):
            ok = False
        elif isinstance(value, int):
            ok = abs(value) < _WHOLE_LIMIT and name == str(value)
        elif isinstance(value, float):  # fastexcel writes at most nine decimals, trailing zeros dropped
            ok = math.isfinite(value) and name == f"{value:.9f}".rstrip("0").rstrip(".")
        elif isinstance(value, str):
            ok = name == value or (value in seen and name.startswith(value + "_"))
        else:
            ok = False
        if not ok:
            raise Fallback(f"header cell {i + 1}: the window and fastexcel disagree")
        if isinstance(value, str):
            seen.add(value)


def _kinds(values: list[Any]) -> list[str]:
    """What header detection sees of a row: per cell empty / text / other, trailing empties dropped."""
    kinds = ["e" if v is None or v == "" else "t" if isinstance(v, str) and not tabular._looks_numeric(v) else "o"
             for v in values]
    while kinds and kinds[-1] == "e":
        kinds.pop()
    return kinds


def _literals(frame: pl.DataFrame) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Per column, an expression giving each value's JSON literal ("null" for none), and one telling
    whether the value is present (for dropping empty rows)."""
    stats_exprs = []
    for name, dtype in frame.schema.items():
        c = pl.col(name)
        if dtype == pl.Float64:
            whole = (c == c.floor()) & (c.abs() < _WHOLE_LIMIT)
            stats_exprs += [(c.is_nan() | c.is_infinite()).any().alias(name), whole.any().alias(name + ":whole"),
                            (~whole).any().alias(name + ":fraction")]
        elif isinstance(dtype, pl.Datetime):
            stats_exprs += [c.min().alias(name), c.max().alias(name + ":max"),
                            (c.dt.time() != pl.time(0)).any().alias(name + ":time"),
                            (c.dt.millisecond() != 0).any().alias(name + ":ms")]
        elif dtype == pl.String:
            stats_exprs += [c.str.contains(r'["\\\x00-\x1f\x7f]').any().alias(name),
                            ((c == "") | c.is_in(EXCEL_ERRORS)).any().alias(name + ":empty")]
    stats = frame.select(stats_exprs).row(0, named=True) if stats_exprs else {}

    values, present = [], []
    for name, dtype in frame.schema.items():
        c = pl.col(name)
        if dtype == pl.Float64:
            if stats[name]:
                raise Fallback("non-finite numbers")
            whole = (c == c.floor()) & (c.abs() < _WHOLE_LIMIT)
            as_int = c.cast(pl.Int64, strict=False).cast(pl.String)  # strict=False: 1e300 never takes this branch
            if not stats[name + ":fraction"]:
                literal = as_int
            elif not stats[name + ":whole"]:
                literal = c.cast(pl.String)
            else:  # both branches run on every value
                literal = pl.when(whole).then(as_int).otherwise(c.cast(pl.String))
            is_present = c.is_not_null()
        elif dtype == pl.Int64:
            literal, is_present = c.cast(pl.String), c.is_not_null()
        elif dtype == pl.Boolean:
            literal = pl.when(c).then(pl.lit("true")).when(c.not_()).then(pl.lit("false"))  # null stays null
            is_present = c.is_not_null()
        elif dtype == pl.String:
            text = pl.when((c == "") | c.is_in(EXCEL_ERRORS)).then(None).otherwise(c) if stats[name + ":empty"] else c
            if stats[name]:  # quotes, backslashes or control characters: JSON-escape through a struct
                literal = pl.struct(text.alias("")).struct.json_encode().str.slice(4).str.head(-1)
            else:
                literal = pl.concat_str([pl.lit('"'), text, pl.lit('"')])
            is_present = text.is_not_null()
        elif isinstance(dtype, pl.Datetime):
            low, high = stats[name], stats[name + ":max"]
            if low is not None and (low < datetime(1900, 1, 1) or high.year > 9999):
                raise Fallback("time-of-day cells or dates outside 1900..9999")
            day = c.dt.date().cast(pl.String)
            if not stats[name + ":time"]:
                text = day
            else:
                clock = c.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f" if stats[name + ":ms"] else "%Y-%m-%dT%H:%M:%S")
                if stats[name + ":ms"]:  # isoformat() writes microseconds only when there are some
                    clock = pl.when(c.dt.millisecond() == 0).then(c.dt.strftime("%Y-%m-%dT%H:%M:%S")).otherwise(clock)
                text = pl.when(c.dt.time() == pl.time(0)).then(day).otherwise(clock)
            literal, is_present = pl.concat_str([pl.lit('"'), text, pl.lit('"')]), c.is_not_null()
        elif dtype == pl.Null:
            values.append(pl.lit("null"))
            continue
        else:
            raise Fallback(f"column type {dtype}")
        values.append(literal.fill_null("null"))
        present.append(is_present)
    return values, present


def _row_pieces(names: list[str]) -> list[pl.Expr]:
    """`,{"name":value,...}` per row from the literal columns `v0`.. (the leading comma is dropped from
    the first row when written)."""
    pieces: list[pl.Expr] = []
    for i, name in enumerate(names):
        pieces += [pl.lit(("," + "{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"), pl.col(f"v{i}")]
    pieces.append(pl.lit("}" if names else ",{}"))
    return pieces


def _write_rows(rows: pl.DataFrame, first: str | None, out: str) -> None:
    """`[` + the rows' text (each `,{...}`, the first one's comma skipped) + `]` into `out`, flushed to
    disk. polars writes the rows itself (a one-column CSV, never quoted, no line ends: the text as is)."""
    with open(out, "wb") as fh:
        fh.write(b"[")
        if first is not None:
            fh.write(first[1:].encode("utf-8"))
            rows.slice(1).write_csv(fh, include_header=False, quote_style="never", line_terminator="")
        fh.write(b"]")
        fh.flush()
        os.fsync(fh.fileno())
