"""Rules shared by every tabular reader (CSV, JSON, Excel): header detection, column names, value
normalization and column types, plus the CSV and JSON readers themselves.

Values follow SPEC "Data Center": empty → None, whole numbers → int, text such as "00123" stays text,
dates as ISO 8601 strings.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.errors import ValidationError

HEADER_SCAN_ROWS = 20
SAMPLE_BYTES = 64 * 1024
_INT_RE = re.compile(r"^[+-]?(0|[1-9]\d{0,14})$")  # past 15 digits (ID numbers) Excel and JS lose digits
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}:\d{2}$")


# -- column names and header -------------------------------------------------------------------
def unique_names(raw: Iterable[Any]) -> list[str]:
    """Non-empty, unique column names: a blank becomes `column_<n>` (1-based), a repeat `name_2`, `name_3`."""
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(raw, start=1):
        base = str(value).strip() if value is not None and str(value).strip() else f"column_{index}"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def detect_header(rows: list[list[Any]], scan: int = HEADER_SCAN_ROWS) -> int:
    """0-based index of the header row among the first `scan` rows.

    The heuristic: title blocks above a header have few filled cells, so the header is the first row
    whose filled cells number at least 60% of the widest row scanned (and at least 2 when any row has 2),
    and of which at least 80% are text. Without such a row, the first non-empty row is the header.
    """
    window = rows[:scan]
    filled = [sum(1 for v in row if v not in (None, "")) for row in window]
    if not filled or max(filled) == 0:
        return 0
    need = max(min(2, max(filled)), int(0.6 * max(filled) + 0.999))
    for index, row in enumerate(window):
        values = [v for v in row if v not in (None, "")]
        texts = sum(1 for v in values if isinstance(v, str) and not _looks_numeric(v))
        if len(values) >= need and texts >= 0.8 * len(values):
            return index
    return next(i for i, n in enumerate(filled) if n)


def _looks_numeric(text: str) -> bool:
    return bool(_FLOAT_RE.match(text.strip()))


# -- values and types ------------------------------------------------------------------------------
def normalize_text(value: str | None) -> Any:
    """A CSV field as a value: empty → None, whole numbers → int, decimals → float, "00123" stays text."""
    if value is None:
        return None
    text = value.strip()
    if text == "":
        return None
    if _INT_RE.match(text):
        return int(text)
    digits = text.lstrip("+-")
    if digits.isdigit() or (digits[:1] == "0" and digits[1:2].isdigit()):
        return value  # leading zeros or past 15 digits: an identifier, not a quantity
    if _FLOAT_RE.match(text) and len(digits) <= 24:
        number = float(text)
        return number if math.isfinite(number) else value  # 1e999 stays text: JSON has no Infinity
    return value


def value_type(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    text = str(value)
    if _DATE_RE.match(text):
        return "date"
    if _DATETIME_RE.match(text):
        return "datetime"
    if _TIME_RE.match(text):
        return "time"
    return "text"


SCHEMA_SAMPLE = 1000  # records a stored schema's types are inferred from


def column_names(records: list[dict[str, Any]]) -> list[str]:
    """Every key of the records, in first-seen order (records need not share their keys)."""
    return list(dict.fromkeys(k for r in records for k in r))


def schema(records: list[dict[str, Any]], names: list[str] | None = None) -> list[dict[str, str]]:
    """`[{name, type}]` of the records, types from the first `SCHEMA_SAMPLE` of them."""
    sample = records[:SCHEMA_SAMPLE]
    return [{"name": n, "type": infer_type(r.get(n) for r in sample)}
            for n in (column_names(records) if names is None else names)]


def infer_type(values: Iterable[Any]) -> str:
    """One type for a column sample: integers with decimals widen to number, anything mixed is text."""
    kinds = {value_type(v) for v in values} - {"empty"}
    if not kinds:
        return "empty"
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"integer", "number"}:
        return "number"
    if kinds <= {"date", "datetime"}:
        return "datetime"
    return "text"


def to_records(header: list[Any], rows: Iterable[list[Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows under a header as objects; short rows are padded with None, extra cells get their own columns."""
    materialized = list(rows)
    width = max([len(header), *(len(r) for r in materialized)]) if materialized else len(header)
    names = unique_names(list(header) + [None] * (width - len(header)))
    return names, [dict(zip(names, list(r) + [None] * (width - len(r)))) for r in materialized]


# -- CSV ---------------------------------------------------------------------------------------------
def detect_encoding(sample: bytes, complete: bool = False) -> str:
    """UTF-8 (with or without BOM), else GB18030 (a superset of the GBK that Excel writes on Chinese
    Windows); anything else is refused with a clear error. A sample cut mid-character still counts
    unless `complete` says it is the whole file."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=complete)
            return encoding
        except UnicodeDecodeError:
            continue
    raise ValidationError("dataset.error.encoding")


def detect_file_encoding(path: Path) -> str:
    """`detect_encoding` on the first block that is not plain ASCII: a GBK file whose first 64 KB happen
    to be ASCII (numbers, codes) is still GBK. Streams the file; ASCII-only is UTF-8."""
    with open(path, "rb") as fh:
        block = fh.read(SAMPLE_BYTES)
        if block.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return detect_encoding(block)
        while block:
            following = fh.read(SAMPLE_BYTES)
            if not block.isascii():  # an ASCII-only block ends on a character boundary: this one starts on one
                return detect_encoding(block, complete=not following)
            block = following
    return "utf-8"


def sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:SAMPLE_BYTES], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def iter_csv(path: Path) -> Iterator[list[Any]]:
    """Every CSV row, decoded and normalized, read as a stream (never the whole file at once)."""
    with open(path, "rb") as raw:
        sample = raw.read(SAMPLE_BYTES)
    encoding = detect_file_encoding(path)
    delimiter = sniff_delimiter(codecs.getincrementaldecoder(encoding)(errors="ignore").decode(sample))
    with open(path, encoding=encoding, newline="") as fh:
        try:
            for row in csv.reader(fh, delimiter=delimiter):
                yield [normalize_text(v) for v in row]
        except UnicodeDecodeError:
            raise ValidationError("dataset.error.encoding") from None
        except csv.Error as exc:
            raise ValidationError("dataset.error.csv", detail=str(exc)) from None


# -- JSON --------------------------------------------------------------------------------------------
def _json_constant(name: str) -> Any:
    """Python writes NaN and ±Infinity into "JSON", which no strict reader accepts: NaN is empty (null),
    the infinities stay text (as 1e999 does in a CSV)."""
    return None if name == "NaN" else name


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects, or NDJSON (one object a line); anything else is refused clearly."""
    try:
        text = path.read_text(encoding=detect_file_encoding(path))
    except UnicodeDecodeError:  # valid at first, broken further on
        raise ValidationError("dataset.error.encoding") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            data = json.loads(stripped, parse_constant=_json_constant)
        else:
            data = [json.loads(line, parse_constant=_json_constant) for line in io.StringIO(stripped) if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValidationError("dataset.error.json", line=exc.lineno, detail=exc.msg) from None
    except RecursionError:
        raise ValidationError("dataset.error.json", line=1, detail="nested too deeply") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValidationError("dataset.error.json_not_records")
    return data
