"""Preview speed: the first 100 rows of a 200k-row x 20-column workbook with many shared strings.

    .venv/bin/python benchmarks/preview.py            # generates the workbook once, then measures
    .venv/bin/python benchmarks/preview.py --rebuild  # generate it again
    .venv/bin/python benchmarks/preview.py --limit N  # preview N rows instead of 100

The workbook is cached as benchmarks/.cache/preview_200000x20.xlsx (gitignored). It is written the way
Excel writes it: strings in a shared-string table (xl/sharedStrings.xml) numbered by first use, dates
as styled serial numbers. openpyxl cannot write that layout (3.1 writes every string inline), and
inline strings would hide the very cost measured here, so the generator streams the XML parts into the
zip itself; openpyxl reading the same first rows back is the check that the file is well-formed.

Columns: an int id, unique text (customer names, notes, codes), a few repeated categories, floats,
dates, datetimes, text like "00123", and blanks (about one cell in eight).

Each reader runs in its own fresh interpreter, so its peak RSS (VmHWM; ru_maxrss elsewhere) is its own:
- ours:     core.xlsx_preview.read_rows(path, limit=100)
- openpyxl: load_workbook(path, read_only=True) + iter_rows(max_row=100) (parses the whole
            shared-string table before the first row).
The time is the read alone (imports excluded); the goal from issue 3 is a preview in at most 0.6 s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = ROOT / "benchmarks" / ".cache"
ROWS, COLS = 200_000, 20
GOAL_SECONDS = 0.6
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _col(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def generate(path: Path, rows: int = ROWS) -> None:
    """Stream a workbook with shared strings into `path` (via a temporary file, then renamed)."""
    rng = random.Random(42)
    letters = [_col(i) for i in range(COLS)]
    strings: dict[str, int] = {}
    categories = ["北区 North", "South", "East", "West", "Central", "海外 Overseas"]
    base = dt.date(2015, 1, 1).toordinal() - dt.date(1899, 12, 30).toordinal()
    header = ["id", "customer", "region", "amount", "order date", "shipped at", "qty", "note", "zip", "rate",
              "sku", "score", "status", "city", "discount", "comment", "batch", "created", "ref", "flag"]
    tmp = path.with_suffix(".tmp")
    started = time.perf_counter()

    def s(text: str) -> str:
        index = strings.get(text)
        if index is None:
            index = strings[text] = len(strings)
        return str(index)

    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
            fh.write(f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
                     f'<dimension ref="A1:T{rows + 1}"/><sheetData>'.encode())
            head = "".join(f'<c r="{letters[j]}1" t="s"><v>{s(h)}</v></c>' for j, h in enumerate(header))
            fh.write(f'<row r="1">{head}</row>'.encode())
            buf: list[str] = []
            for i in range(1, rows + 1):
                r = i + 1
                vals = [
                    ("n", str(i)),
                    ("s", s(f"Customer {rng.randrange(10**9):09d} {i}")),
                    ("s", s(categories[i % len(categories)])),
                    ("n", repr(round(rng.uniform(-1000, 100000), 2))),
                    ("d", str(base + rng.randrange(3650))),
                    ("t", repr(base + rng.randrange(3650) + rng.randrange(86400) / 86400)),
                    ("n", str(rng.randrange(1, 500))),
                    ("s", s(f"note {i}: {rng.choice(['fragile', 'urgent', 'gift', 'repeat', '退货'])} #{rng.randrange(10**6)}")),
                    ("s", s(f"{rng.randrange(100000):05d}")),
                    ("n", repr(rng.random())),
                    ("s", s(f"SKU-{rng.randrange(10**7):07d}")),
                    ("n", str(rng.randrange(100))),
                    ("s", s(rng.choice(["open", "closed", "pending"]))),
                    ("s", s(rng.choice(["Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Berlin", "Lyon"]))),
                    ("n", repr(round(rng.random() * 0.3, 3))),
                    ("s", s(f"comment {i}-{rng.randrange(10**8)}")),
                    ("n", str(i // 1000)),
                    ("d", str(base + i % 3650)),
                    ("s", s(f"REF{i:08d}")),
                    ("b", str(i % 2)),
                ]
                cells = []
                for j, (kind, v) in enumerate(vals):
                    if (i * 7 + j * 3) % 8 == 0 and j:  # blanks
                        continue
                    ref = f"{letters[j]}{r}"
                    if kind == "s":
                        cells.append(f'<c r="{ref}" t="s"><v>{v}</v></c>')
                    elif kind == "d":
                        cells.append(f'<c r="{ref}" s="1"><v>{v}</v></c>')
                    elif kind == "t":
                        cells.append(f'<c r="{ref}" s="2"><v>{v}</v></c>')
                    elif kind == "b":
                        cells.append(f'<c r="{ref}" t="b"><v>{v}</v></c>')
                    else:
                        cells.append(f'<c r="{ref}"><v>{v}</v></c>')
                buf.append(f'<row r="{r}">{"".join(cells)}</row>')
                if len(buf) == 2000:
                    fh.write("".join(buf).encode())
                    buf.clear()
                if i % 50_000 == 0:
                    print(f"  generated {i:,} rows, {len(strings):,} shared strings, {time.perf_counter() - started:.0f} s", flush=True)
            fh.write(("".join(buf) + "</sheetData></worksheet>").encode())
        with z.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            fh.write(f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="{MAIN_NS}" count="{len(strings)}" uniqueCount="{len(strings)}">'.encode())
            chunk: list[str] = []
            for text in strings:
                chunk.append(f"<si><t>{escape(text)}</t></si>")
                if len(chunk) == 10000:
                    fh.write("".join(chunk).encode())
                    chunk.clear()
            fh.write(("".join(chunk) + "</sst>").encode())
        z.writestr("xl/styles.xml", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<styleSheet xmlns="{MAIN_NS}">'
                   '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
                   '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
                   '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                   '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                   '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
                   '<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
                   '<xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
                   '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>')
        z.writestr("xl/workbook.xml", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
                   '<workbookPr/><bookViews><workbookView activeTab="0"/></bookViews>'
                   '<sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_REL}">'
                   f'<Relationship Id="rId1" Type="{DOC_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
                   f'<Relationship Id="rId2" Type="{DOC_REL}/sharedStrings" Target="sharedStrings.xml"/>'
                   f'<Relationship Id="rId3" Type="{DOC_REL}/styles" Target="styles.xml"/></Relationships>')
        z.writestr("_rels/.rels", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_REL}">'
                   f'<Relationship Id="rId1" Type="{DOC_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>')
        ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
        z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                   '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                   '<Default Extension="xml" ContentType="application/xml"/>'
                   f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
                   f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
                   f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
                   f'<Override PartName="/xl/styles.xml" ContentType="{ct}.styles+xml"/></Types>')
    os.replace(tmp, path)
    print(f"  wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(strings):,} shared strings) in {time.perf_counter() - started:.0f} s", flush=True)


# -- one reader in a fresh interpreter --------------------------------------------------------------
def _peak_rss_kb() -> int:
    """This process's peak RSS. Linux's VmHWM belongs to the process image, while ru_maxrss survives
    fork+exec and would report the parent's peak (e.g. right after generating the workbook)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def child(reader: str, path: str, limit: int) -> None:
    t0 = time.perf_counter()
    if reader == "ours":
        from core.xlsx_preview import read_rows

        imported = time.perf_counter()
        preview = read_rows(path, limit=limit)
        seconds = time.perf_counter() - imported
        rows = preview.rows
        again = []
        for _ in range(3):  # warm repeats, for the spread
            t = time.perf_counter()
            read_rows(path, limit=limit)
            again.append(time.perf_counter() - t)
    else:
        import openpyxl

        imported = time.perf_counter()
        wb = openpyxl.load_workbook(path, read_only=True)
        ws = wb.worksheets[0]
        rows = [[c.value for c in row] for row in ws.iter_rows(max_row=limit)]
        wb.close()
        seconds = time.perf_counter() - imported
        again = []
    peak_kb = _peak_rss_kb()
    print(json.dumps({"seconds": seconds, "import_seconds": imported - t0, "again": again,
                      "peak_rss_mb": peak_kb / 1024, "rows": rows}, default=str))


def run_child(reader: str, path: Path, limit: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", reader, str(path), "--limit", str(limit)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same(ours: list[list], theirs: list[list]) -> bool:
    """Our rows against openpyxl's (its datetimes normalized to our ISO text, trailing blanks trimmed)."""
    def norm(v: object) -> object:
        if isinstance(v, str) and len(v) >= 19 and v[10] == " " and v[:4].isdigit():  # str(datetime)
            return v.replace(" ", "T", 1)[:19] if not v.endswith("00:00:00") else v[:10]
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    theirs = [[norm(v) for v in row] for row in theirs]
    for a, b in zip(ours, theirs):
        b = list(b)
        while b and b[-1] is None:
            b.pop()
        a = list(a)
        while a and a[-1] is None:
            a.pop()
        if a != b:
            print("  differ:", a, b)
            return False
    return len(ours) == len(theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.limit)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"preview_{args.rows}x{COLS}.xlsx"
    if args.rebuild or not path.exists():
        print(f"generating {args.rows:,} x {COLS} workbook (once; cached) ...", flush=True)
        generate(path, args.rows)
    with zipfile.ZipFile(path) as z:
        sizes = {i.filename: i.file_size for i in z.infolist()}
    print(f"workbook: {path} ({path.stat().st_size / 1e6:.1f} MB; sheet XML {sizes['xl/worksheets/sheet1.xml'] / 1e6:.0f} MB, "
          f"shared strings {sizes['xl/sharedStrings.xml'] / 1e6:.0f} MB uncompressed)")
    ours = run_child("ours", path, args.limit)
    theirs = run_child("openpyxl", path, args.limit)
    ratio = theirs["seconds"] / ours["seconds"] if ours["seconds"] else float("inf")
    print(f"first {args.limit} rows, each reader in a fresh process:")
    print(f"  core.xlsx_preview.read_rows   {ours['seconds']:.3f} s   peak RSS {ours['peak_rss_mb']:.0f} MB"
          f"   (warm repeats {', '.join(f'{s:.3f}' for s in ours['again'])} s)")
    print(f"  openpyxl read_only iter_rows  {theirs['seconds']:.3f} s   peak RSS {theirs['peak_rss_mb']:.0f} MB")
    print(f"  ratio: openpyxl / ours = {ratio:.0f}x   goal: preview <= {GOAL_SECONDS} s -> {'met' if ours['seconds'] <= GOAL_SECONDS else 'MISSED'}")
    print(f"  values agree with openpyxl: {_same(ours['rows'], theirs['rows'])}")


if __name__ == "__main__":
    main()
