"""Checks that run before any parser touches an untrusted upload.

The format comes from the bytes, never from the extension (`sniff`). Workbooks are zip files: their
central directory is checked (entry count, sizes, compression ratio, names) without decompressing
anything (`check_zip`), and every XML part is scanned, streaming and in bounded chunks, for DOCTYPE and
ENTITY declarations (billion laughs, external entities), which no real workbook contains
(`check_xml_parts`). Password-protected workbooks are OLE2 (compound file) containers; they are
recognized from the compound file's directory, read here by a small bounded reader (the standard library
has none). `check_upload` runs all of it in order.

Every refusal is a `ValidationError` with a `file.error.*` catalog key that says what is wrong and what
to do. Nothing here imports a spreadsheet library: this module is what makes it safe to call one.
"""
from __future__ import annotations

import codecs
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core import tabular
from core.errors import ValidationError

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MIB = 1024 * 1024

FORMATS = ("xlsx", "xlsm", "xls", "encrypted", "csv", "json")

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TEXT_SAMPLE = 64 * 1024
_CONTENT_TYPES_MAX = 1 * MIB
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ZipLimits:
    """What a workbook's zip container may hold. Real workbooks sit far inside these."""

    max_entries: int = 10_000
    max_total_uncompressed: int = 1024 * MIB
    max_ratio: float = 200.0
    ratio_min_size: int = 1 * MIB  # the ratio is only checked for entries bigger than this


def _name(path: str | Path) -> str:
    return Path(path).name


def _mb(n: int | float) -> str:
    return f"{n / MIB:.1f}"


# -- format ---------------------------------------------------------------------------------------
def sniff(path: str | Path) -> str:
    """The file's format from its bytes: one of FORMATS; an unreadable or unsupported file raises."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(_TEXT_SAMPLE)
    if not head:
        raise ValidationError("file.error.empty", name=path.name)
    if head.startswith(_ZIP_MAGIC):
        return _sniff_zip(path)
    if head.startswith(_OLE_MAGIC):
        return _sniff_ole(path)
    return _sniff_text(path, head, complete=len(head) < _TEXT_SAMPLE)


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "[Content_Types].xml" not in names:
                raise ValidationError("file.error.not_workbook_zip", name=path.name)
            if "xl/workbook.bin" in names:
                raise ValidationError("file.error.xlsb", name=path.name)
            if "xl/workbook.xml" not in names:
                raise ValidationError("file.error.not_workbook_zip", name=path.name)
            with zf.open("[Content_Types].xml") as part:
                content_types = part.read(_CONTENT_TYPES_MAX)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError,
            ValueError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
        if isinstance(exc, RuntimeError) and "encrypted" in str(exc).lower():
            raise ValidationError("file.error.encrypted", name=path.name) from None
        raise ValidationError("file.error.corrupt", name=path.name) from None
    return "xlsm" if b"macroenabled" in content_types.lower() else "xlsx"


def _sniff_ole(path: Path) -> str:
    try:
        cfb = CompoundFile(path)
        names = cfb.root_names()
        if "EncryptionInfo" in names or "EncryptedPackage" in names:
            return "encrypted"
        stream = "Workbook" if "Workbook" in names else "Book" if "Book" in names else None
        if stream is None:
            raise ValidationError("file.error.not_workbook_ole", name=path.name)
        if _biff_has_filepass(cfb.read_stream(names[stream], limit=_BIFF_SCAN)):
            return "encrypted"
    except (CompoundFileDamaged, struct.error, IndexError, ValueError, OverflowError):
        raise ValidationError("file.error.corrupt", name=path.name) from None
    return "xls"


_BIFF_SCAN = 256 * 1024  # the FILEPASS record sits right after the workbook's first BOF


def _biff_has_filepass(data: bytes) -> bool:
    """True when the workbook globals (before their EOF record) hold FILEPASS: an encrypted .xls."""
    pos = 0
    while pos + 4 <= len(data):
        rtype, size = struct.unpack_from("<HH", data, pos)
        if rtype == 0x002F:  # FILEPASS
            return True
        if rtype == 0x000A:  # EOF of the globals substream
            return False
        pos += 4 + size
    return False


# control bytes no text file holds (tab, newlines, VT, FF and the old end-of-file mark ^Z are allowed)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x19\x1b-\x1f]")


def _sniff_text(path: Path, head: bytes, complete: bool) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16"
        try:
            text = head.decode(codec) if complete else codecs.getincrementaldecoder(codec)().decode(head)
        except UnicodeDecodeError:
            raise ValidationError("file.error.unknown_format", name=path.name) from None
        sample = text.encode("utf-8")
    else:
        sample = head[3:] if head.startswith(codecs.BOM_UTF8) else head
        if not _decodes_as_text(sample, complete):
            raise ValidationError("file.error.unknown_format", name=path.name)
    if _CONTROL.search(sample):
        raise ValidationError("file.error.unknown_format", name=path.name)
    stripped = sample.lstrip(b" \t\r\n\f\v")
    if not stripped:
        raise ValidationError("file.error.empty", name=path.name)
    return "json" if stripped[:1] in (b"[", b"{") else "csv"


def _decodes_as_text(sample: bytes, complete: bool) -> bool:
    """The same encodings the CSV reader accepts (`tabular.detect_encoding`)."""
    try:
        tabular.detect_encoding(sample, complete)
    except ValidationError:
        return False
    return True


# -- zip container --------------------------------------------------------------------------------
def check_zip(path: str | Path, limits: ZipLimits | None = None) -> None:
    """Refuse a zip whose central directory announces a bomb, too many entries or unsafe names.

    Reads only the central directory: nothing is decompressed.
    """
    limits = limits or ZipLimits()
    name = _name(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError):
        raise ValidationError("file.error.corrupt", name=name) from None
    if len(infos) > limits.max_entries:
        raise ValidationError("file.error.zip_entries", name=name, count=len(infos), max=limits.max_entries)
    total = 0
    seen: set[str] = set()
    for info in infos:
        if _unsafe_entry_name(info.filename):
            raise ValidationError("file.error.zip_path", name=name, entry=info.filename[:200])
        folded = info.filename.lower()
        if folded in seen:
            raise ValidationError("file.error.zip_duplicate", name=name, entry=info.filename[:200])
        seen.add(folded)
        if info.flag_bits & 0x1:
            raise ValidationError("file.error.encrypted", name=name)
        total += info.file_size
        if total > limits.max_total_uncompressed:
            raise ValidationError("file.error.zip_total", name=name, size_mb=_mb(total),
                                  max_mb=_mb(limits.max_total_uncompressed))
        if info.file_size > limits.ratio_min_size:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise ValidationError("file.error.zip_ratio", name=name, entry=info.filename[:200],
                                      ratio=int(ratio), max=int(limits.max_ratio))


def _unsafe_entry_name(entry: str) -> bool:
    if not entry or "\x00" in entry:
        return True
    norm = entry.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return True
    return ".." in PurePosixPath(norm).parts


# -- XML parts ------------------------------------------------------------------------------------
_XML_SUFFIXES = (".xml", ".rels", ".vml")
_DANGER = (b"<!DOCTYPE", b"<!ENTITY")
_OVERLAP = max(len(d) for d in _DANGER) - 1
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ASCII_COMPATIBLE = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252",
                     "cp1252"}


def check_xml_parts(path: str | Path, limits: ZipLimits | None = None) -> None:
    """Refuse a workbook any of whose XML parts declares a DOCTYPE or an ENTITY.

    Each part is decompressed as a stream, `_CHUNK` bytes at a time (never whole); the total read is
    bounded by the sizes `check_zip` accepted, which zipfile enforces while decompressing. Entries that do
    not look like XML by name are sniffed from their first bytes and scanned too when they do.
    """
    limits = limits or ZipLimits()
    name = _name(path)
    try:
        with zipfile.ZipFile(path) as zf:
            done = 0
            for info in zf.infolist():
                if info.is_dir():
                    continue
                with zf.open(info) as part:
                    done = _scan_part(part, info, name, done, limits.max_total_uncompressed)
    except ValidationError:
        raise
    except RuntimeError as exc:
        if "encrypted" in str(exc).lower():
            raise ValidationError("file.error.encrypted", name=name) from None
        raise ValidationError("file.error.corrupt", name=name) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
            UnicodeDecodeError, zlib.error):
        raise ValidationError("file.error.corrupt", name=name) from None


def _scan_part(part, info: zipfile.ZipInfo, name: str, done: int, cap: int) -> int:
    """Scan one entry; `done` bytes were read before it, at most `cap` in all. Returns the new `done`."""

    def read(n: int) -> bytes:
        nonlocal done
        chunk = part.read(min(n, cap - done + 1))
        done += len(chunk)
        if done > cap:
            raise ValidationError("file.error.zip_total", name=name, size_mb=_mb(done), max_mb=_mb(cap))
        return chunk

    first = read(4096)
    looks_xml = info.filename.lower().endswith(_XML_SUFFIXES) or _looks_like_xml(first)
    if not looks_xml:
        return done
    if first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ValidationError("file.error.xml_encoding", name=name, part=info.filename, encoding="UTF-32")
    decoder = None
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoder = codecs.getincrementaldecoder("utf-16")()
    elif first[:2] == b"<\x00":
        decoder = codecs.getincrementaldecoder("utf-16-le")()
    elif first[:2] == b"\x00<":
        decoder = codecs.getincrementaldecoder("utf-16-be")()
    else:
        m = _ENCODING.match(first[:512].removeprefix(codecs.BOM_UTF8))
        if m and m.group(1).decode("ascii").lower() not in _ASCII_COMPATIBLE:
            raise ValidationError("file.error.xml_encoding", name=name, part=info.filename,
                                  encoding=m.group(1).decode("ascii")[:40])
    tail = b""
    chunk = first
    while chunk:
        data = decoder.decode(chunk).encode("utf-8") if decoder else chunk
        window = tail + data
        root = _ROOT_ELEMENT.search(window)
        prolog = window[:root.start()] if root else window
        if b"<!" in prolog:
            upper = prolog.upper()
            if any(d in upper for d in _DANGER):
                raise ValidationError("file.error.xml_doctype", name=name, part=info.filename)
        if root:
            # A DOCTYPE (and with it any ENTITY) may only come before the root element: one later is not
            # well-formed, and every XML parser refuses it without expanding anything. So the scan stops
            # at the root element instead of decompressing the whole part (a 200k-row sheet: ~0.5 s).
            return done
        tail = window[-_OVERLAP:]
        chunk = read(_CHUNK)
    return done


_ROOT_ELEMENT = re.compile(rb"<[A-Za-z_:\x80-\xff]")  # an element's start tag (not <? <! or </)


def _looks_like_xml(first: bytes) -> bool:
    start = first[:64].lstrip(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    return start.startswith(b"<") or first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


# -- everything, in order -------------------------------------------------------------------------
def check_upload(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, limits: ZipLimits | None = None) -> str:
    """Run every check an upload needs before a parser may see it; returns the sniffed format.

    An encrypted workbook is refused here (no reader can open it without the password).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise ValidationError("file.error.unreadable", name=path.name) from None
    if size > max_bytes:
        raise ValidationError("file.error.too_large", name=path.name, size_mb=_mb(size), max_mb=_mb(max_bytes))
    if size == 0:
        raise ValidationError("file.error.empty", name=path.name)
    with path.open("rb") as f:
        magic = f.read(8)
    if magic.startswith(_ZIP_MAGIC):
        check_zip(path, limits)  # the central directory first: sniffing opens a part
    fmt = sniff(path)
    if fmt == "encrypted":
        raise ValidationError("file.error.encrypted", name=path.name)
    if fmt in ("xlsx", "xlsm"):
        check_xml_parts(path, limits)
    return fmt


# -- a small, bounded reader of compound file (OLE2 / CFB) directories -----------------------------
class CompoundFileDamaged(Exception):
    """The compound file's structure is damaged (or hostile)."""


_FREESECT, _ENDOFCHAIN, _FATSECT, _DIFSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFC
_NOSTREAM = 0xFFFFFFFF
_MAX_SECTORS = 1 << 22


class CompoundFile:
    """Reads the header, FAT, directory and (bounded) streams of a CFB file ([MS-CFB]).

    Every chain is followed with a visited set and a length bound, so a cyclic or absurd file raises
    CompoundFileDamaged instead of looping or allocating.
    """

    def __init__(self, path: str | Path) -> None:
        self._f = Path(path).read_bytes() if Path(path).stat().st_size <= 64 * MIB else None
        if self._f is None:
            raise CompoundFileDamaged("too large for a workbook compound file")
        data = self._f
        if len(data) < 512 or not data.startswith(_OLE_MAGIC):
            raise CompoundFileDamaged("not a compound file")
        major, byte_order, sector_shift, mini_shift = struct.unpack_from("<HHHH", data, 0x1A)
        if byte_order != 0xFFFE or sector_shift not in (9, 12) or mini_shift != 6:
            raise CompoundFileDamaged("bad header")
        self.sector_size = 1 << sector_shift
        self.mini_size = 1 << mini_shift
        (n_fat, first_dir, _, self.mini_cutoff, first_minifat, n_minifat, first_difat,
         n_difat) = struct.unpack_from("<IIIIIIII", data, 0x2C)
        self.n_sectors = max(0, (len(data) - 1) // self.sector_size)  # sector n starts at (n + 1) * size
        fat_sectors = [s for s in struct.unpack_from("<109I", data, 0x4C) if s < _DIFSECT]
        seen: set[int] = set()
        sect = first_difat
        per = self.sector_size // 4 - 1
        while sect < _DIFSECT and len(fat_sectors) < n_fat:
            if sect in seen or sect >= self.n_sectors:
                raise CompoundFileDamaged("bad DIFAT chain")
            seen.add(sect)
            entries = struct.unpack_from(f"<{per + 1}I", self._sector(sect))
            fat_sectors.extend(s for s in entries[:per] if s < _DIFSECT)
            sect = entries[per]
        fat_sectors = fat_sectors[:n_fat] if n_fat else fat_sectors
        if len(fat_sectors) > _MAX_SECTORS // (self.sector_size // 4):
            raise CompoundFileDamaged("FAT too large")
        self.fat: list[int] = []
        for s in fat_sectors:
            if s >= self.n_sectors:
                raise CompoundFileDamaged("FAT sector outside the file")
            self.fat.extend(struct.unpack(f"<{self.sector_size // 4}I", self._sector(s)))
        directory = self._chain_bytes(first_dir, limit=4 * MIB)
        self.entries = [directory[i:i + 128] for i in range(0, len(directory) - 127, 128)]
        if not self.entries:
            raise CompoundFileDamaged("no directory")
        self._first_minifat = first_minifat

    def _sector(self, n: int) -> bytes:
        start = (n + 1) * self.sector_size
        block = self._f[start:start + self.sector_size]
        return block.ljust(self.sector_size, b"\x00")

    def _chain(self, start: int, fat: list[int]) -> list[int]:
        chain: list[int] = []
        seen: set[int] = set()
        sect = start
        while sect != _ENDOFCHAIN:
            if sect >= len(fat) or sect in seen or len(chain) >= _MAX_SECTORS:
                raise CompoundFileDamaged("bad sector chain")
            seen.add(sect)
            chain.append(sect)
            sect = fat[sect]
        return chain

    def _chain_bytes(self, start: int, limit: int) -> bytes:
        out = bytearray()
        for sect in self._chain(start, self.fat):
            if sect >= self.n_sectors:
                raise CompoundFileDamaged("sector outside the file")
            out += self._sector(sect)
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def _entry(self, i: int) -> tuple[str, int, int, int, int, int, int]:
        """(name, type, left, right, child, start sector, size) of directory entry i."""
        raw = self.entries[i]
        name_len = min(struct.unpack_from("<H", raw, 64)[0], 64)
        name = raw[:max(name_len - 2, 0)].decode("utf-16-le", errors="replace")
        etype = raw[66]
        left, right, child = struct.unpack_from("<III", raw, 68)
        start, size = struct.unpack_from("<IQ", raw, 116)
        return name, etype, left, right, child, start, size

    def root_names(self) -> dict[str, int]:
        """Names of the root storage's children (its red-black tree, walked with a bound) -> entry index."""
        root = self._entry(0)
        if root[1] != 5:
            raise CompoundFileDamaged("first directory entry is not the root")
        found: dict[str, int] = {}
        stack, seen = [root[4]], set()
        while stack:
            i = stack.pop()
            if i == _NOSTREAM:
                continue
            if i >= len(self.entries) or i in seen:
                raise CompoundFileDamaged("bad directory tree")
            seen.add(i)
            name, etype, left, right, _, _, _ = self._entry(i)
            if etype in (1, 2):
                found[name] = i
            stack += [left, right]
        return found

    def read_stream(self, index: int, limit: int) -> bytes:
        """Up to `limit` bytes of the stream at directory entry `index`."""
        _, etype, _, _, _, start, size = self._entry(index)
        if etype != 2:
            raise CompoundFileDamaged("not a stream")
        want = min(size, limit)
        if size >= self.mini_cutoff:
            return self._chain_bytes(start, want)
        root_start = self._entry(0)[5]
        minifat_raw = self._chain_bytes(self._first_minifat, 4 * MIB) if self._first_minifat < _DIFSECT else b""
        minifat = list(struct.unpack(f"<{len(minifat_raw) // 4}I", minifat_raw))
        ministream = self._chain_bytes(root_start, 64 * MIB)
        out = bytearray()
        for m in self._chain(start, minifat):
            off = m * self.mini_size
            if off + self.mini_size > len(ministream):
                raise CompoundFileDamaged("mini sector outside the mini stream")
            out += ministream[off:off + self.mini_size]
            if len(out) >= want:
                break
        return bytes(out[:want])
