"""Checks before any parser sees an upload, against a hostile corpus the tests build in tmp_path.

The zip bomb is real (a 300 MB entry stored in about 300 KB) but cheap to make: the same full-flushed
deflate block is repeated, so nothing large is ever compressed or held in memory.
"""
from __future__ import annotations

import codecs
import io
import json
import random
from xml.etree import ElementTree
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import openpyxl
import pytest

from core.errors import ValidationError
from core.filesafety import ZipLimits, check_upload, check_xml_parts, check_zip, sniff

MIB = 1024 * 1024


# -- corpus helpers ---------------------------------------------------------------------------------
def real_xlsx(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Data"
    ws.append(["name", "amount", "date"])
    ws.append(["苹果", 3, "2024-01-02"])
    ws.append(["pear", 4.5, None])
    wb.save(path)
    return path


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes] | None = None,
                add: dict[str, bytes] | None = None, drop: set[str] = frozenset()) -> Path:
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))
        for name, data in add.items():
            zout.writestr(name, data)
    return dst


def raw_zip(path: Path, entries: list[dict]) -> Path:
    """A zip written by hand: each entry gives name, raw deflate `data`, `crc`, `size` (as declared), `flags`."""
    out = io.BytesIO()
    central = []
    for e in entries:
        name = e["name"].encode()
        offset = out.tell()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, e.get("flags", 0), 8, 0, 0, e["crc"],
                              len(e["data"]), e["size"], len(name), 0))
        out.write(name)
        out.write(e["data"])
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, e.get("flags", 0), 8, 0, 0,
                                   e["crc"], len(e["data"]), e["size"], len(name), 0, 0, 0, 0, 0, offset) + name)
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start,
                          start, 0))
    path.write_bytes(out.getvalue())
    return path


def damaged_deflate(src: Path, dst: Path, member: str) -> Path:
    """A copy of `src` whose `member` has a broken deflate stream (its first block of an invalid type):
    the central directory is intact, so only decompressing finds it (zlib.error, not BadZipFile)."""
    data = bytearray(src.read_bytes())
    info = zipfile.ZipFile(src).getinfo(member)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len] = 0x07  # BFINAL=1, BTYPE=11 (reserved)
    dst.write_bytes(bytes(data))
    return dst


def deflated(data: bytes) -> dict:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return {"data": c.compress(data) + c.flush(), "crc": zlib.crc32(data), "size": len(data)}


def zeros_entry(mb: int) -> dict:
    """`mb` MiB of zeros as one deflate stream, built from one full-flushed 1 MiB block repeated."""
    block = bytes(MIB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    crc = 0
    for _ in range(mb):
        crc = zlib.crc32(block, crc)
    return {"data": piece * mb + end, "crc": crc, "size": mb * MIB}


CONTENT_TYPES = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                 b'content-types"><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
                 b'officedocument.spreadsheetml.sheet.main+xml"/></Types>')
WORKBOOK = b'<?xml version="1.0" encoding="UTF-8"?><workbook/>'


def bomb_xlsx(path: Path, mb: int = 300, **sheet: object) -> Path:
    entry = {**zeros_entry(mb), **sheet}
    return raw_zip(path, [{"name": "[Content_Types].xml", **deflated(CONTENT_TYPES)},
                          {"name": "xl/workbook.xml", **deflated(WORKBOOK)},
                          {"name": "xl/worksheets/sheet1.xml", **entry}])


LAUGHS = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
          + b"".join(b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                     for i in range(1, 10))
          + b']>\n<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
            b'<c r="A1" t="inlineStr"><is><t>&lol9;</t></is></c></row></sheetData></worksheet>')
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>&e;</t></si></sst>')


def cfb(path: Path, streams: dict[str, bytes]) -> Path:
    """A minimal compound file (CFB v3, 512-byte sectors): small streams in the mini stream, others not."""
    S, M, CUTOFF = 512, 64, 4096
    END, FREE, FATSECT, NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    names = list(streams)
    small = [n for n in names if len(streams[n]) < CUTOFF]
    big = [n for n in names if len(streams[n]) >= CUTOFF]
    ceil = lambda a, b: -(-a // b)  # noqa: E731
    mini = bytearray()
    mini_start: dict[str, int] = {}
    minifat: list[int] = []
    for n in small:
        count = ceil(len(streams[n]), M)
        mini_start[n] = len(mini) // M if count else END
        minifat += [len(mini) // M + i + 1 for i in range(count - 1)] + ([END] if count else [])
        mini += streams[n].ljust(count * M, b"\x00")
    regions = {"dir": ceil(len(names) + 1, 4), "minifat": ceil(len(minifat) * 4, S), "mini": ceil(len(mini), S)}
    for n in big:
        regions[n] = ceil(len(streams[n]), S)
    others = sum(regions.values())
    n_fat = 1
    while n_fat * (S // 4) < n_fat + others:
        n_fat += 1
    fat = [FATSECT] * n_fat
    start: dict[str, int] = {}
    for region, count in regions.items():
        start[region] = len(fat) if count else END
        fat += [len(fat) + i + 1 for i in range(count - 1)] + ([END] if count else [])
    fat += [FREE] * (n_fat * (S // 4) - len(fat))

    def entry(name: str, etype: int, right: int, child: int, first: int, size: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\x00\x00"
        return (raw.ljust(64, b"\x00") + struct.pack("<HBB", len(raw), etype, 1)
                + struct.pack("<III", NOSTREAM, right, child) + bytes(16 + 4 + 16)
                + struct.pack("<IQ", first, size))

    directory = [entry("Root Entry", 5, NOSTREAM, 1 if names else NOSTREAM, start["mini"], len(mini))]
    for i, n in enumerate(names, 1):
        first = mini_start[n] if n in mini_start else start[n]
        directory.append(entry(n, 2, i + 1 if i < len(names) else NOSTREAM, NOSTREAM, first, len(streams[n])))
    dir_bytes = b"".join(directory).ljust(regions["dir"] * S, b"\x00")
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
              + bytes(6) + struct.pack("<IIIIIIIII", 0, n_fat, start["dir"], 0, CUTOFF, start["minifat"],
                                       len(minifat) and regions["minifat"], END, 0)
              + struct.pack("<109I", *(list(range(n_fat)) + [FREE] * (109 - n_fat))))
    assert len(header) == 512
    body = struct.pack(f"<{len(fat)}I", *fat) + dir_bytes
    body += struct.pack(f"<{len(minifat)}I", *minifat).ljust(regions["minifat"] * S, b"\xff")
    body += bytes(mini).ljust(regions["mini"] * S, b"\x00")
    for n in big:
        body += streams[n].ljust(regions[n] * S, b"\x00")
    path.write_bytes(header + body)
    return path


def biff(encrypted: bool = False, pad_to: int = 0) -> bytes:
    """A BIFF8 workbook globals stream: BOF, FILEPASS when encrypted, EOF (padded with a junk record)."""
    data = struct.pack("<HH", 0x0809, 16) + struct.pack("<HHHHII", 0x0600, 0x0005, 0x1DA4, 1997, 0, 0x06)
    if encrypted:
        data += struct.pack("<HH", 0x002F, 54) + struct.pack("<HHH", 1, 1, 2) + bytes(48)
    data += struct.pack("<HH", 0x000A, 0)
    if pad_to > len(data):
        data += bytes(pad_to - len(data))
    return data


def refused(key: str, func, *args, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        func(*args, **kwargs)
    assert info.value.key == key, (info.value.key, str(info.value))
    for lang in ("en", "zh_CN"):
        text = info.value.message(lang)
        assert text and "{" not in text, text
    return info.value


# -- sniffing ---------------------------------------------------------------------------------------
def test_real_xlsx_passes(tmp_path: Path) -> None:
    path = real_xlsx(tmp_path / "ok.xlsx")
    assert sniff(path) == "xlsx"
    check_zip(path)
    check_xml_parts(path)
    assert check_upload(path) == "xlsx"


def test_xlsm_is_recognized_from_content_types(tmp_path: Path) -> None:
    src = real_xlsx(tmp_path / "src.xlsx")
    with zipfile.ZipFile(src) as zf:
        types = zf.read("[Content_Types].xml").replace(
            b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
            b"application/vnd.ms-excel.sheet.macroEnabled.main+xml")
    path = rewrite_zip(src, tmp_path / "renamed.xlsx", replace={"[Content_Types].xml": types})
    assert check_upload(path) == "xlsm"


@pytest.mark.parametrize(("raw", "expected"), [
    (b"name,amount\napple,3\n", "csv"),
    (codecs.BOM_UTF8 + "名称,数量\n苹果,3\n".encode(), "csv"),
    ("名称,数量\n苹果,3\n".encode("gbk"), "csv"),
    (codecs.BOM_UTF16_LE + "名称\t数量\r\n苹果\t3\r\n".encode("utf-16-le"), "csv"),
    (b'[{"a": 1}, {"a": 2}]', "json"),
    (codecs.BOM_UTF8 + b' \r\n\t{"a": 1}\n{"a": 2}\n', "json"),
])
def test_text_formats(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "data.xlsx"  # the name lies on purpose
    path.write_bytes(raw)
    assert sniff(path) == expected
    assert check_upload(path) == expected


def test_long_gbk_csv_cut_mid_character_is_still_text(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    raw = ("编号,名称\n" + "1,中文名称测试\n" * 20_000).encode("gb18030")
    assert raw[65535] >= 0x80  # the 64 KiB sample ends inside a two-byte character
    path.write_bytes(raw)
    assert sniff(path) == "csv"


def test_csv_renamed_xlsx_is_csv(tmp_path: Path) -> None:
    path = tmp_path / "report.xlsx"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    assert check_upload(path) == "csv"


def test_random_bytes_named_xlsx_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.xlsx"
    path.write_bytes(os.urandom(20_000))
    refused("file.error.unknown_format", check_upload, path)
    path.write_bytes(b"PK\x03\x04" + os.urandom(20_000))
    refused("file.error.corrupt", check_upload, path)


@pytest.mark.parametrize("raw", [b"", b"  \r\n\t ", codecs.BOM_UTF8])
def test_empty_files_are_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(raw)
    refused("file.error.empty", check_upload, path)


def test_truncated_xlsx_is_corrupt(tmp_path: Path) -> None:
    full = real_xlsx(tmp_path / "full.xlsx").read_bytes()
    path = tmp_path / "half.xlsx"
    path.write_bytes(full[: len(full) // 2])
    refused("file.error.corrupt", sniff, path)
    refused("file.error.corrupt", check_upload, path)


@pytest.mark.parametrize("member", ["[Content_Types].xml", "xl/worksheets/sheet1.xml"])
def test_a_damaged_compressed_part_is_corrupt(tmp_path: Path, member: str) -> None:
    path = damaged_deflate(real_xlsx(tmp_path / "ok.xlsx"), tmp_path / "damaged.xlsx", member)
    refused("file.error.corrupt", check_upload, path)


def test_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = real_xlsx(tmp_path / "ok.xlsx")
    err = refused("file.error.too_large", check_upload, path, max_bytes=1000)
    assert "ok.xlsx" in str(err)


def test_other_zips_are_not_workbooks(tmp_path: Path) -> None:
    docx = tmp_path / "letter.xlsx"
    with zipfile.ZipFile(docx, "w") as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("word/document.xml", b"<w:document/>")
    refused("file.error.not_workbook_zip", check_upload, docx)
    xlsb = tmp_path / "binary.xlsx"
    with zipfile.ZipFile(xlsb, "w") as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("xl/workbook.bin", b"\x83\x01\x00")
    refused("file.error.xlsb", check_upload, xlsb)


# -- compound files: .xls and password-protected workbooks -----------------------------------------
def test_encrypted_ooxml_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = cfb(tmp_path / "secret.xlsx", {"EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00" + bytes(200),
                                          "EncryptedPackage": struct.pack("<Q", 9000) + os.urandom(9000)})
    assert sniff(path) == "encrypted"
    err = refused("file.error.encrypted", check_upload, path)
    assert "password" in str(err) and "Protect Workbook" in str(err)
    assert "密码" in err.message("zh_CN")


def test_xls_is_recognized_in_either_stream_size(tmp_path: Path) -> None:
    big = cfb(tmp_path / "big.xls", {"Workbook": biff(pad_to=8192), "\x05SummaryInformation": bytes(300)})
    small = cfb(tmp_path / "small.bin", {"\x05SummaryInformation": bytes(100), "Workbook": biff()})
    biff5 = cfb(tmp_path / "old.xls", {"Book": biff(pad_to=5000)})
    assert [sniff(p) for p in (big, small, biff5)] == ["xls", "xls", "xls"]
    assert check_upload(big) == "xls"


def test_password_protected_xls_is_encrypted(tmp_path: Path) -> None:
    big = cfb(tmp_path / "big.xls", {"Workbook": biff(encrypted=True, pad_to=8192)})
    small = cfb(tmp_path / "small.xls", {"Workbook": biff(encrypted=True)})
    assert sniff(big) == sniff(small) == "encrypted"
    refused("file.error.encrypted", check_upload, small)


def test_other_compound_files_and_broken_ones(tmp_path: Path) -> None:
    doc = cfb(tmp_path / "letter.xls", {"WordDocument": bytes(5000)})
    refused("file.error.not_workbook_ole", check_upload, doc)
    cut = tmp_path / "cut.xls"
    cut.write_bytes(doc.read_bytes()[:600])
    refused("file.error.corrupt", check_upload, cut)
    looped = bytearray(cfb(tmp_path / "x.xls", {"Workbook": biff(pad_to=8192)}).read_bytes())
    first_fat = struct.unpack_from("<I", looped, 0x4C)[0]
    fat_at = 512 * (first_fat + 1)
    dir_sector = struct.unpack_from("<I", looped, 0x30)[0]
    struct.pack_into("<I", looped, fat_at + 4 * dir_sector, dir_sector)  # the directory chain points to itself
    loop = tmp_path / "loop.xls"
    loop.write_bytes(bytes(looped))
    refused("file.error.corrupt", sniff, loop)


# -- zip container ----------------------------------------------------------------------------------
def test_zip_bomb_is_refused_from_the_central_directory(tmp_path: Path) -> None:
    path = bomb_xlsx(tmp_path / "bomb.xlsx", mb=300)
    assert path.stat().st_size < 1 * MIB
    err = refused("file.error.zip_ratio", check_zip, path)
    assert err.params["entry"] == "xl/worksheets/sheet1.xml" and err.params["ratio"] > 200
    refused("file.error.zip_ratio", check_upload, path)


def test_total_uncompressed_size_is_limited(tmp_path: Path) -> None:
    path = bomb_xlsx(tmp_path / "bomb.xlsx", mb=300)
    limits = ZipLimits(max_ratio=10_000, max_total_uncompressed=100 * MIB)
    refused("file.error.zip_total", check_zip, path, limits)
    # the streaming scan stops at the same bound instead of decompressing everything
    refused("file.error.zip_total", check_xml_parts, path, limits)


def test_declared_size_that_lies_is_caught_while_scanning(tmp_path: Path) -> None:
    path = bomb_xlsx(tmp_path / "liar.xlsx", mb=50, size=1000)  # says 1000 bytes, holds 50 MiB
    check_zip(path)  # the directory alone looks harmless
    refused("file.error.corrupt", check_xml_parts, path)
    refused("file.error.corrupt", check_upload, path)


def test_too_many_entries(tmp_path: Path) -> None:
    path = tmp_path / "many.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("xl/workbook.xml", WORKBOOK)
        for i in range(10_000):
            zf.writestr(f"xl/media/{i}.bin", b"")
    err = refused("file.error.zip_entries", check_upload, path)
    assert err.params == {"name": "many.xlsx", "count": 10_002, "max": 10_000}


@pytest.mark.parametrize("entry", ["../evil.xml", "xl/../../evil.xml", "/etc/evil.xml", "C:/evil.xml",
                                   "xl\\..\\..\\evil.xml"])
def test_unsafe_entry_names(tmp_path: Path, entry: str) -> None:
    path = rewrite_zip(real_xlsx(tmp_path / "src.xlsx"), tmp_path / "evil.xlsx", add={entry: b"<x/>"})
    with zipfile.ZipFile(path) as zf:
        assert entry in zf.namelist()
    refused("file.error.zip_path", check_zip, path)
    refused("file.error.zip_path", check_upload, path)


def test_duplicate_and_zip_encrypted_entries(tmp_path: Path) -> None:
    src = real_xlsx(tmp_path / "src.xlsx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dup = rewrite_zip(src, tmp_path / "dup.xlsx", add={"xl/workbook.xml": WORKBOOK})
    refused("file.error.zip_duplicate", check_upload, dup)
    locked = raw_zip(tmp_path / "locked.xlsx", [
        {"name": "[Content_Types].xml", **deflated(CONTENT_TYPES)},
        {"name": "xl/workbook.xml", **deflated(WORKBOOK), "flags": 1}])
    refused("file.error.encrypted", check_upload, locked)


# -- XML parts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("part", "xml"), [("xl/worksheets/sheet1.xml", LAUGHS), ("xl/sharedStrings.xml", EXTERNAL)])
def test_xml_bombs_and_external_entities_are_refused(tmp_path: Path, part: str, xml: bytes) -> None:
    src = real_xlsx(tmp_path / "src.xlsx")
    path = rewrite_zip(src, tmp_path / "bomb.xlsx", replace={part: xml}, add={} if part in
                       zipfile.ZipFile(src).namelist() else {part: xml})
    check_zip(path)
    err = refused("file.error.xml_doctype", check_xml_parts, path)
    assert err.params["part"] == part
    refused("file.error.xml_doctype", check_upload, path)


@pytest.mark.parametrize("cut", [4096 - 3, 4096 + 256 * 1024 - 5])
def test_doctype_split_across_chunks_is_found(tmp_path: Path, cut: int) -> None:
    xml = b"<?xml version='1.0'?>" + b" " * (cut - 21) + b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>"
    path = rewrite_zip(real_xlsx(tmp_path / "src.xlsx"), tmp_path / "split.xlsx", add={"xl/custom.xml": xml})
    refused("file.error.xml_doctype", check_upload, path)


def test_doctype_after_long_comments_is_found_and_the_scan_stops_at_the_root(tmp_path: Path) -> None:
    """The prolog may be long (comments, processing instructions): a DOCTYPE anywhere in it is found.
    After the root element a DOCTYPE is not well-formed XML; the parser refuses it without expanding
    anything, so the scan does not read the rest of the part (the whole sheet)."""
    noise = random.Random(7).randbytes(150 * 1024).hex().encode()  # incompressible: no ratio refusal
    prolog = b"<?xml version='1.0'?>" + b"<!-- " + noise + b" --><?pi data?>"
    bad = rewrite_zip(real_xlsx(tmp_path / "src.xlsx"), tmp_path / "late.xlsx",
                      add={"xl/custom.xml": prolog + b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"})
    refused("file.error.xml_doctype", check_upload, bad)
    late = prolog + b"<x>" + noise + b"<!DOCTYPE y [<!ENTITY b 'c'>]></x>"
    with pytest.raises(ElementTree.ParseError):  # what a parser makes of a DOCTYPE after the root: an error
        ElementTree.fromstring(late)
    fine = rewrite_zip(real_xlsx(tmp_path / "src2.xlsx"), tmp_path / "fine.xlsx", add={"xl/custom.xml": late})
    assert check_upload(fine) == "xlsx"  # so the scan stopped at <x>, never reading the rest


def test_doctype_hidden_in_other_encodings_or_names(tmp_path: Path) -> None:
    src = real_xlsx(tmp_path / "src.xlsx")
    utf16 = codecs.BOM_UTF16_LE + LAUGHS.replace(b'encoding="UTF-8"', b'encoding="UTF-16"').decode().encode(
        "utf-16-le")
    path = rewrite_zip(src, tmp_path / "u16.xlsx", replace={"xl/worksheets/sheet1.xml": utf16})
    refused("file.error.xml_doctype", check_upload, path)
    odd_name = rewrite_zip(src, tmp_path / "odd.xlsx", add={"xl/media/image1.png": EXTERNAL})
    refused("file.error.xml_doctype", check_upload, odd_name)
    ebcdic = rewrite_zip(src, tmp_path / "enc.xlsx", add={
        "xl/x.xml": b'<?xml version="1.0" encoding="cp500"?>' + "<x/>".encode("cp500")})
    refused("file.error.xml_encoding", check_upload, ebcdic)


def test_messages_name_the_file_and_say_what_to_do(tmp_path: Path) -> None:
    path = bomb_xlsx(tmp_path / "季度报表.xlsx", mb=20)
    err = refused("file.error.zip_ratio", check_upload, path)
    for lang in ("en", "zh_CN"):
        assert "季度报表.xlsx" in err.message(lang) and "Excel" in err.message(lang)
    json.dumps({"error": str(err)})  # what the CLI prints
