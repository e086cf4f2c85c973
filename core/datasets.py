"""Data Center registry (seed §6.4): datasets, their files, their ingest status and lineage.

Files live under `<home>/.docetl/<namespace>/data_center/`: the raw upload in `raw/<id>/`, the
normalized JSON (a list of objects, what pipelines read) in `datasets/user|generated/<id>.json`, always
written to a temporary file and renamed. This module is the only place an ingest status changes.
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from core import audit, clock, filesafety, readers, sandbox, tabular, workers
from core.errors import NotFound, ValidationError, WorkbenchError
from core.i18n import t
from core.permissions import Action, require
from core.principal import Principal
from core.store import Store, Tx

_LOG = logging.getLogger(__name__)
_SAFE_FILENAME = re.compile(r"[^\w.\-() ]+", re.UNICODE)
PUBLIC_COLUMNS = ("id", "namespace", "name", "description", "source", "format", "original_format", "path",
                  "ingest_status", "ingest_config", "error", "schema", "row_count", "lineage", "tags",
                  "created_by", "created_at", "updated_at")


class IngestStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Source(str, Enum):
    USER_UPLOAD = "user_upload"
    PIPELINE_GENERATED = "pipeline_generated"


# -- files -------------------------------------------------------------------------------------------
def data_center_dir(store: Store, namespace: str) -> Path:
    return store.config.namespace_dir(namespace) / "data_center"


def safe_filename(filename: str) -> str:
    """The base name of an uploaded file, stripped of paths and odd characters (never trusted as a path)."""
    base = Path(str(filename).replace("\\", "/")).name
    cleaned = _SAFE_FILENAME.sub("_", base).strip(" .")[:120]
    return cleaned or "upload"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside the target, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, json.dumps(records, ensure_ascii=False, default=str).encode("utf-8"))


# -- rows --------------------------------------------------------------------------------------------
def _validate_name(name: str) -> str:
    clean = (name or "").strip()
    if not clean or len(clean) > 200 or any(c in clean for c in "\r\n\t"):
        raise ValidationError("dataset.error.name", name=name or "")
    return clean


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in PUBLIC_COLUMNS}
    for key in ("ingest_config", "error", "schema", "lineage", "tags"):
        out[key] = json.loads(row[key]) if row[key] else (None if key != "tags" else [])
    return out


def _row(tx: Tx, dataset_id: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM datasets WHERE id = ?", [dataset_id])
    if not row:
        raise NotFound("dataset.error.not_found", id=dataset_id)
    return row


def _name_free(tx: Tx, namespace: str, name: str, except_id: str | None = None) -> None:
    if tx.scalar("SELECT count(*) FROM datasets WHERE namespace = ? AND name = ? AND id <> ?",
                 [namespace, name, except_id or ""]):
        raise ValidationError("dataset.error.name_taken", name=name, namespace=namespace)


def get(store: Store, principal: Principal, dataset_id: str) -> dict[str, Any]:
    with store.read() as tx:
        row = _row(tx, dataset_id)
    require(principal, Action.VIEW, row["namespace"])
    return _public(row)


def find(store: Store, principal: Principal, namespace: str, name_or_id: str) -> dict[str, Any]:
    """A namespace's dataset by id or by name (what the CLI and notebooks accept)."""
    require(principal, Action.VIEW, namespace)
    with store.read() as tx:
        found = tx.execute("SELECT * FROM datasets WHERE namespace = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC",
                           [namespace, name_or_id, name_or_id, name_or_id])
    if not found:
        raise NotFound("dataset.error.not_found_name", name=name_or_id, namespace=namespace)
    return _public(found[0])


def list_datasets(store: Store, principal: Principal, namespace: str, *, source: str | None = None,
                  search: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
    """A namespace's datasets, newest first, filtered by source, a name/description search and a tag."""
    require(principal, Action.VIEW, namespace)
    rows = store.execute("SELECT * FROM datasets WHERE namespace = ? ORDER BY created_at DESC", [namespace])
    return matching([_public(r) for r in rows], source=source, search=search, tag=tag)


def matching(found: list[dict[str, Any]], *, source: str | None = None, search: str | None = None,
             tag: str | None = None) -> list[dict[str, Any]]:
    """The filter of `list_datasets`, for a page that already holds the whole list (one read per render)."""
    wanted = Source(source).value if source else None
    needle = (search or "").strip().casefold()
    return [d for d in found if (not wanted or d["source"] == wanted) and (not tag or tag in d["tags"])
            and (not needle or needle in d["name"].casefold() or needle in (d["description"] or "").casefold())]


def error_message(error: dict[str, Any] | None, lang: str) -> str:
    """A failed import's stored error (catalog key + params) in the reader's language."""
    if not error:
        return ""
    return t(error["key"], lang, **(error.get("params") or {})) if error.get("key") else error.get("message", "")


# -- upload and ingest ---------------------------------------------------------------------------------
def create_upload(store: Store, principal: Principal, namespace: str, filename: str, content: bytes, *,
                  name: str | None = None, config: dict[str, Any] | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """Keep the raw file and register a `pending` dataset; the import runs as a job (`ingest`)."""
    require(principal, Action.UPLOAD_DATASET, namespace)
    readers.check_range(config or {})  # before anything is stored
    limit = int(store.config["dataset_max_mb"]) * 1024 * 1024
    if len(content) > limit:
        raise ValidationError("dataset.error.too_big", size_mb=round(len(content) / 1048576, 1),
                              max_mb=store.config["dataset_max_mb"])
    clean = safe_filename(filename)
    dataset_name = _validate_name(name or Path(clean).stem)
    dataset_id = uuid.uuid4().hex
    base = data_center_dir(store, namespace)
    raw = base / "raw" / dataset_id / clean
    write_atomic(raw, content)
    now = clock.resolve(now)
    try:
        with store.transaction() as tx:
            _name_free(tx, namespace, dataset_name)
            tx.execute_write(
                "INSERT INTO datasets (id, namespace, name, source, original_format, raw_path, path, ingest_status,"
                " ingest_config, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [dataset_id, namespace, dataset_name, Source.USER_UPLOAD.value, Path(clean).suffix.lstrip(".").lower(),
                 str(raw), str(base / "datasets" / "user" / f"{dataset_id}.json"), IngestStatus.PENDING.value,
                 json.dumps(config or {}), principal.username, now, now])
            audit.record(tx, principal, "dataset.upload", resource_type="dataset", resource_id=dataset_id,
                         namespace=namespace, detail={"name": dataset_name, "file": clean, "bytes": len(content)},
                         now=now)
            return _public(_row(tx, dataset_id))
    except BaseException:
        shutil.rmtree(raw.parent, ignore_errors=True)  # nothing half-registered stays behind
        raise


def claim(store: Store, dataset_id: str, now: datetime | None = None,
          worker: str | None = None) -> dict[str, Any] | None:
    """pending → processing, for exactly one worker (None when another took it or it is not pending).
    The worker's identity is kept so that a restart can tell a live import from an orphaned one."""
    with store.transaction() as tx:
        changed = tx.execute("UPDATE datasets SET ingest_status = ?, ingest_worker = ?, updated_at = ? WHERE id = ?"
                             " AND ingest_status = ? RETURNING *",
                             [IngestStatus.PROCESSING.value, worker or workers.identity(), clock.resolve(now),
                              dataset_id, IngestStatus.PENDING.value])
    return changed[0] if changed else None


def next_pending(store: Store) -> str | None:
    """The oldest import waiting for a worker (the service takes them one at a time)."""
    with store.read() as tx:
        found = tx.execute("SELECT id FROM datasets WHERE ingest_status = ? ORDER BY created_at, id LIMIT 1",
                           [IngestStatus.PENDING.value])
    return found[0]["id"] if found else None


def finish(store: Store, dataset_id: str, *, records: list[dict[str, Any]] | None = None,
           schema: list[dict[str, str]] | None = None, error: WorkbenchError | None = None,
           now: datetime | None = None, written: Path | None = None, row_count: int | None = None) -> None:
    """processing → ready (the normalized JSON in place first) or → failed with a readable error.

    The JSON is either `records`, written here, or a complete file the import already `written` beside
    the final path (holding `row_count` records), renamed into place: readers never see half a file.
    """
    now = clock.resolve(now)
    with store.read() as tx:
        row = _row(tx, dataset_id)
    if error is None:
        if written is not None:
            os.replace(written, row["path"])
        else:
            write_records(Path(row["path"]), records or [])
    with store.transaction() as tx:
        if error is None:
            count = row_count if written is not None else len(records or [])
            tx.execute_write("UPDATE datasets SET ingest_status = ?, schema = ?, row_count = ?, error = NULL,"
                             " updated_at = ? WHERE id = ?", [IngestStatus.READY.value, json.dumps(schema or []),
                                                             count, now, dataset_id])
        else:
            tx.execute_write("UPDATE datasets SET ingest_status = ?, error = ?, updated_at = ? WHERE id = ?",
                             [IngestStatus.FAILED.value, json.dumps({"key": error.key, "params": error.params,
                                                                     "message": str(error)}, default=str),
                              now, dataset_id])


def ingest_in_background(store: Store, dataset_id: str, spares: sandbox.Spares | None = None) -> threading.Thread:
    """Start the import job on a daemon thread of this process (the app's own worker), so a page
    returns at once and shows the status. The scheduler service runs the same `ingest` for pending
    imports too; the claim lets exactly one of them do it. If this process dies mid-import, the
    service's reclaim puts the dataset back to pending (its worker is gone) and imports it."""
    def work() -> None:
        try:
            ingest(store, dataset_id, spares=spares)
        except Exception:  # the import records its own failures; this only keeps a stray bug visible
            _LOG.exception("background import of %s failed", dataset_id)

    thread = threading.Thread(target=work, name=f"wb-import-{dataset_id[:8]}", daemon=True)
    thread.start()
    return thread


def recover_interrupted(store: Store, now: datetime | None = None,
                        is_alive: Callable[[str | None], bool] = workers.alive) -> int:
    """Imports left `processing` by a process that is gone go back to `pending`, so a worker picks
    them up again (never stuck); one whose worker still lives is left alone."""
    with store.transaction() as tx:
        stuck = tx.execute("SELECT id, ingest_worker FROM datasets WHERE ingest_status = ?",
                           [IngestStatus.PROCESSING.value])
        lost = [r["id"] for r in stuck if not is_alive(r["ingest_worker"])]
        for dataset_id in lost:
            tx.execute_write("UPDATE datasets SET ingest_status = ?, ingest_worker = NULL, updated_at = ?"
                             " WHERE id = ? AND ingest_status = ?", [IngestStatus.PENDING.value, clock.resolve(now),
                                                                    dataset_id, IngestStatus.PROCESSING.value])
    return len(lost)


# -- changes -----------------------------------------------------------------------------------------
def update(store: Store, principal: Principal, dataset_id: str, *, name: str | None = None,
           description: str | None = None, tags: list[str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Rename, describe or tag a dataset (editors and up), audited with before/after."""
    now = clock.resolve(now)
    with store.transaction() as tx:
        row = _row(tx, dataset_id)
        require(principal, Action.UPLOAD_DATASET, row["namespace"])
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _validate_name(name)
            _name_free(tx, row["namespace"], changes["name"], dataset_id)
        if description is not None:
            changes["description"] = description.strip()[:2000]
        if tags is not None:
            changes["tags"] = json.dumps(sorted({t.strip() for t in tags if t.strip()}), ensure_ascii=False)
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            tx.execute_write(f"UPDATE datasets SET {sets}, updated_at = ? WHERE id = ?", [*changes.values(), now, dataset_id])
            audit.record(tx, principal, "dataset.update", resource_type="dataset", resource_id=dataset_id,
                         namespace=row["namespace"], detail={k: {"before": row[k], "after": v} for k, v in changes.items()},
                         now=now)
        return _public(_row(tx, dataset_id))


def delete(store: Store, principal: Principal, dataset_id: str, now: datetime | None = None) -> None:
    """Remove the row (audited), then its files; a legacy file in `files/` is left where it was."""
    with store.transaction() as tx:
        row = _row(tx, dataset_id)
        require(principal, Action.DELETE_RESOURCE, row["namespace"])
        tx.execute_write("DELETE FROM datasets WHERE id = ?", [dataset_id])
        legacy = _is_legacy(store, row)
        if legacy:  # DocWrangler's file stays where it is; the next discovery must not bring it back
            tx.execute_write("INSERT INTO dismissed_legacy_files (namespace, path, dismissed_at, dismissed_by)"
                             " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                             [row["namespace"], row["raw_path"] or row["path"], clock.resolve(now), principal.username])
        audit.record(tx, principal, "dataset.delete", resource_type="dataset", resource_id=dataset_id,
                     namespace=row["namespace"], detail={"name": row["name"], "legacy_file_kept": legacy}, now=now)
    base = data_center_dir(store, row["namespace"]).resolve()
    for owned in (Path(row["raw_path"]).parent if row["raw_path"] else None, Path(row["path"])):
        # where the entry itself sits (its folder resolved, not the entry: a link is judged by its place)
        if owned and (owned.parent.resolve() / owned.name).is_relative_to(base) and owned.exists():
            shutil.rmtree(owned) if owned.is_dir() and not owned.is_symlink() else owned.unlink()


def _is_legacy(store: Store, row: dict[str, Any]) -> bool:
    """A dataset registered from the namespace's `files/` (DocWrangler's uploads), in place or copied.
    The folder is compared, not the file resolved: a link in `files/` is still DocWrangler's."""
    folder = (store.config.namespace_dir(row["namespace"]) / "files").resolve()
    return Path(row["raw_path"] or row["path"]).parent.resolve() == folder


# -- the import job ------------------------------------------------------------------------------------
def ingest(store: Store, dataset_id: str, now: datetime | None = None, worker: str | None = None,
           spares: sandbox.Spares | None = None) -> dict[str, Any] | None:
    """Run one pending import to its end (ready or failed); None when it was not pending.

    Called by a worker thread now and by the scheduler service later: the same function either way.
    The file is checked before any parser sees it, and parsed in a resource-limited child process, so
    a hostile file can fail its own import but never take down the app or the service. The child
    writes the normalized JSON to a temporary file beside the final one, renamed into place here once
    the import succeeded (deleted when it failed); only the names, row count and schema come back.
    A long-running caller passes its `spares` (`import_spares()`): a child started ahead takes the work.
    """
    row = claim(store, dataset_id, now, worker)
    if row is None:
        return None
    config = json.loads(row["ingest_config"] or "{}")
    limits = {key: store.config[key] for key in ("dataset_max_rows", "dataset_max_columns")}
    final = Path(row["path"])
    part = final.with_name(f"{final.name}.part-{uuid.uuid4().hex}")  # the child writes it; renamed on success
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            fmt, result = _checked_import(store, row, config, limits, part, spares)
        except WorkbenchError as exc:
            part.unlink(missing_ok=True)
            finish(store, dataset_id, error=exc, now=now)
        except Exception as exc:  # a check or reader failed in a way nobody foresaw: the import fails, never hangs
            logging.getLogger(__name__).exception("dataset %s: unexpected error while importing", dataset_id)
            part.unlink(missing_ok=True)
            finish(store, dataset_id, error=WorkbenchError("dataset.error.unexpected", kind=type(exc).__name__),
                   now=now)
        else:
            if result["fallback"]:
                logging.getLogger(__name__).info("dataset %s: %s imported by the per-cell reader (%s)", dataset_id,
                                                 fmt, result["fallback"])
            finish(store, dataset_id, written=part, row_count=result["row_count"], schema=result["schema"], now=now)
    finally:
        part.unlink(missing_ok=True)  # gone after the rename; after any failure, never left behind
    with store.read() as tx:
        return _public(_row(tx, dataset_id))


def _checked_import(store: Store, row: dict[str, Any], config: dict[str, Any], limits: dict[str, int],
                    part: Path, spares: sandbox.Spares | None) -> tuple[str, dict[str, Any]]:
    """The file's checks here, its import (`readers.import_file`) in the sandbox child, which writes `part`.

    The child starts at once and loads its interpreter and libraries while the checks run; it reads
    nothing until a gate file says they passed (or stops unread when they failed). Returns the format
    and the child's result; raises the checks' or the child's error.
    """
    gate = Path(tempfile.mkdtemp(prefix="wb-import-")) / "checked"
    columnar = (row["original_format"] or "") in ("xlsx", "xlsm") and _columnar_available()
    entry = _XLSX_ENTRY if columnar else readers.import_file
    outcome: dict[str, Any] = {}

    def run_child() -> None:
        try:
            outcome["value"] = sandbox.run_isolated(entry, row["raw_path"], config, limits, str(part), str(gate),
                                                    spares=spares)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    child = threading.Thread(target=run_child, name=f"import-{row['id'][:8]}", daemon=True)
    child.start()
    fmt = None
    try:
        try:
            fmt = filesafety.check_upload(row["raw_path"], max_bytes=int(store.config["dataset_max_mb"]) * 1048576)
        finally:
            _release(gate, fmt)  # the format to read, or stop when the checks refused the file
        child.join()
        if "error" in outcome:
            raise outcome["error"]
        return fmt, outcome["value"]
    finally:
        try:
            _release(gate, None)
        except OSError:
            shutil.rmtree(gate.parent, ignore_errors=True)  # a child whose gate's folder is gone stops too
        child.join()
        shutil.rmtree(gate.parent, ignore_errors=True)


class _ChildEntry:
    """A sandbox entry point named by its module path (all `sandbox.run_isolated` uses), so naming it
    does not load its module into this process."""

    def __init__(self, module: str, qualname: str) -> None:
        self.__module__, self.__qualname__ = module, qualname


# the .xlsx/.xlsm import: that module loads fastexcel, polars and pyarrow, in the child before its limits
_XLSX_ENTRY = _ChildEntry("core.xlsx_import", "import_file")


def import_spares() -> sandbox.Spares:
    """Standby import children for a long-running process (the app, the service): one for the .xlsx
    import, whose libraries take a third of a second to load. Idle, it holds about 200 MB."""
    return sandbox.Spares([_XLSX_ENTRY.__module__] if _columnar_available() else [])


def _columnar_available() -> bool:
    """Whether the fast path's libraries are installed (looked up here, not loaded)."""
    return all(importlib.util.find_spec(name) is not None for name in ("fastexcel", "polars", "pyarrow"))


def _release(gate: Path, fmt: str | None) -> None:
    """Tell the waiting child the outcome of the checks, once: the format to read, or stop."""
    if gate.exists():
        return
    tmp = gate.with_name(gate.name + ".tmp")
    tmp.write_text(fmt or "", encoding="utf-8")
    os.replace(tmp, gate)


def ready_path(store: Store, dataset_id: str, namespace: str) -> Path:
    """The normalized JSON of a ready dataset in `namespace`, for the executor of a run whose rights
    were checked when it was queued; a clear error when it is gone, elsewhere or not ready."""
    with store.read() as tx:
        found = tx.execute("SELECT * FROM datasets WHERE id = ?", [dataset_id])
    if not found or found[0]["namespace"] != namespace:
        raise NotFound("dataset.error.not_found", id=dataset_id)
    row = found[0]
    if row["ingest_status"] != IngestStatus.READY.value:
        raise ValidationError("dataset.error.not_ready", name=row["name"], status=row["ingest_status"])
    return Path(row["path"])


# -- pipeline outputs --------------------------------------------------------------------------------
def register_generated(store: Store, principal: Principal, namespace: str, name: str, source: Path, *,
                       lineage: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A run's output (a JSON list of objects) saved as a `pipeline_generated` dataset with lineage.

    The file is copied (the run keeps its own output) to a temporary file and renamed into place; a
    taken name gets a " (2)" suffix rather than failing a finished run.
    """
    require(principal, Action.UPLOAD_DATASET, namespace)
    records = tabular.read_json_records(Path(source))
    schema = tabular.schema(records)
    dataset_id = uuid.uuid4().hex
    target = data_center_dir(store, namespace) / "datasets" / "generated" / f"{dataset_id}.json"
    write_atomic(target, Path(source).read_bytes())
    now = clock.resolve(now)
    try:
        with store.transaction() as tx:
            unique = _legacy_name(tx, namespace, _validate_name(name))
            tx.execute_write(
                "INSERT INTO datasets (id, namespace, name, source, original_format, path, ingest_status, schema,"
                " row_count, lineage, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [dataset_id, namespace, unique, Source.PIPELINE_GENERATED.value, "json", str(target),
                 IngestStatus.READY.value, json.dumps(schema, ensure_ascii=False), len(records),
                 json.dumps(lineage, ensure_ascii=False, default=str), principal.username, now, now])
            audit.record(tx, principal, "dataset.save_output", resource_type="dataset", resource_id=dataset_id,
                         namespace=namespace, detail={"name": unique, **lineage}, now=now)
            return _public(_row(tx, dataset_id))
    except BaseException:
        target.unlink(missing_ok=True)
        raise


# -- DocWrangler's uploads ---------------------------------------------------------------------------
def sync_legacy(store: Store, principal: Principal, namespace: str, now: datetime | None = None) -> int:
    """Register `<namespace>/files/*.json` (DocWrangler's uploads) as user uploads (seed §6.4).

    Files are never moved. A plain UTF-8 JSON list is used in place; NDJSON, a BOM or GBK text gets a
    normalized copy under the Data Center (what pages and runs read). A file that cannot be read is
    registered as `failed` with the reason, so nothing is silently skipped. Two sessions discovering at
    once register each file once. Returns how many were new.
    """
    require(principal, Action.VIEW, namespace)
    folder = store.config.namespace_dir(namespace) / "files"
    files = sorted(p for p in folder.glob("*.json") if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
    # (a link could point anywhere: DocWrangler writes plain files)
    if not files:
        return 0
    known = {r["path"] for r in store.execute(_LEGACY_KNOWN, [namespace] * 3)}
    added = 0
    for path in files:
        if str(path) in known:
            continue
        dataset_id, records, error, target = uuid.uuid4().hex, [], None, path
        try:
            records = tabular.read_json_records(path)
            if not _plain_json_list(path):
                target = data_center_dir(store, namespace) / "datasets" / "user" / f"{dataset_id}.json"
                write_records(target, records)
        except WorkbenchError as exc:
            records, error = [], exc
        except (ValueError, RecursionError) as exc:  # the content is unreadable: it fails alone, not the page
            logging.getLogger(__name__).warning("legacy file %s: %s", path.name, type(exc).__name__)
            records, error = [], ValidationError("file.error.corrupt", name=path.name)
        except OSError as exc:  # the machine's trouble (disk full, rights), not the file's: try again next time
            logging.getLogger(__name__).warning("legacy file %s skipped for now: %s", path.name, exc.strerror or exc)
            if target != path:
                with contextlib.suppress(OSError):
                    target.unlink(missing_ok=True)
            continue
        if not _register_legacy(store, principal, namespace, dataset_id, path, target, records, error, now):
            if target != path:
                target.unlink(missing_ok=True)
            continue
        added += 1
    return added


_LEGACY_KNOWN = ("SELECT path FROM datasets WHERE namespace = ? UNION ALL SELECT raw_path FROM datasets WHERE"
                 " namespace = ? UNION ALL SELECT path FROM dismissed_legacy_files WHERE namespace = ?")


def _plain_json_list(path: Path) -> bool:
    """Whatever reads a dataset (pages, runs, docetl) reads a UTF-8 JSON list: is the file one already?"""
    raw = path.read_bytes()
    try:
        return raw.lstrip()[:1] == b"[" and isinstance(json.loads(raw.decode("utf-8"), parse_constant=_strict), list)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False


def _strict(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: the file needs the normalized copy


def _register_legacy(store: Store, principal: Principal, namespace: str, dataset_id: str, original: Path,
                     target: Path, records: list[dict[str, Any]], error: WorkbenchError | None,
                     now: datetime | None) -> bool:
    """One legacy file's row and audit, unless another session registered (or someone dismissed) it first."""
    now_ = clock.resolve(now)
    with store.transaction() as tx:
        if str(original) in {r["path"] for r in tx.execute(_LEGACY_KNOWN, [namespace] * 3)}:
            return False
        name = _legacy_name(tx, namespace, original.stem)
        schema = tabular.schema(records)
        tx.execute_write(
            "INSERT INTO datasets (id, namespace, name, source, original_format, raw_path, path, ingest_status,"
            " error, schema, row_count, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [dataset_id, namespace, name, Source.USER_UPLOAD.value, "json", str(original), str(target),
             (IngestStatus.FAILED if error else IngestStatus.READY).value,
             json.dumps({"key": error.key, "params": error.params, "message": str(error)}) if error else None,
             json.dumps(schema, ensure_ascii=False), len(records), principal.username, now_, now_])
        audit.record(tx, principal, "dataset.discover_legacy", resource_type="dataset", namespace=namespace,
                     detail={"file": original.name, "status": "failed" if error else "ready"}, now=now_)
    return True


def _legacy_name(tx: Tx, namespace: str, stem: str) -> str:
    name, n = stem[:190] or "upload", 1
    while tx.scalar("SELECT count(*) FROM datasets WHERE namespace = ? AND name = ?", [namespace, name]):
        n += 1
        name = f"{stem[:190]} ({n})"
    return name


# -- downloads and previews of uploaded bytes ------------------------------------------------------
def preview_bytes(data: bytes, filename: str, **options: Any) -> dict[str, Any]:
    """`preview` of an upload still in memory, through a private temporary file removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="wb-preview-") as tmp:
        path = Path(tmp) / safe_filename(filename)
        path.write_bytes(data)
        return readers.preview(path, **options)


def export(records: list[dict[str, Any]], columns: list[str], fmt: str) -> bytes:
    """A dataset as CSV (UTF-8 with BOM, so Excel opens it) or XLSX; nested values as JSON text."""
    def cell(value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value

    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([cell(r.get(c)) for c in columns] for r in records)
        return ("\ufeff" + out.getvalue()).encode("utf-8")
    if fmt == "xlsx":
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        book = Workbook(write_only=True)
        sheet = book.create_sheet("data")

        def xlsx_cell(value: Any) -> Any:
            """Text stays text: "=1+1" is not turned into a formula, and control characters Excel cannot
            hold are dropped rather than failing the whole download."""
            value = cell(value)
            if not isinstance(value, str):
                return value
            out = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
            out.data_type = "s"
            return out

        sheet.append([xlsx_cell(c) for c in columns])
        for r in records:
            sheet.append([xlsx_cell(r.get(c)) for c in columns])
        buffer = io.BytesIO()
        book.save(buffer)
        return buffer.getvalue()
    raise ValidationError("error.export_format", value=fmt, choices="csv, xlsx")
