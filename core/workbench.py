"""The notebook entry: `Workbench.open()` (local operator) or `Workbench.login(user, password)`.

Every method calls the same core function a page calls, with the same permission checks; tables come
back as polars DataFrames so they render in Jupyter.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from core import audit, auth, datasets, execute, namespaces, pipelines, readers, runs, settings, users
from core.config import Config
from core.errors import ValidationError, WorkbenchError
from core.principal import Principal
from core.store import Store


class Workbench:
    def __init__(self, store: Store, principal: Principal, base: Config | None = None,
                 login_at: datetime | None = None) -> None:
        self.store = store
        self._principal = principal
        self._login_at = login_at  # set for a user's session: re-checked on every call
        self.base = base or store.config  # the environment's settings, before admin overrides

    @property
    def principal(self) -> Principal:
        """The acting user with their current memberships; a disabled or logged-out user is refused."""
        if self._login_at is None:
            return self._principal
        result = auth.resume(self.store, self._principal.username, self._login_at)
        if result is None:
            raise WorkbenchError("auth.error.session_ended")
        return result.principal

    @classmethod
    def open(cls, home: str | Path | None = None, environ: Mapping[str, str] | None = None) -> "Workbench":
        """Act as the local operator (whoever can read the files on this host), audited as such."""
        base = _config(home, environ)
        return cls(settings.open_store(base), Principal.operator(), base)

    @classmethod
    def login(cls, username: str, password: str, home: str | Path | None = None,
              environ: Mapping[str, str] | None = None) -> "Workbench":
        """Act as a user with that user's permissions (same lockout rules as the login page)."""
        base = _config(home, environ)
        store = settings.open_store(base)
        result = auth.authenticate(store, username, password)
        return cls(store, result.principal, base, result.login_at)

    def __repr__(self) -> str:
        return f"Workbench(user={self._principal.username!r}, home={str(self.store.config.home)!r})"

    # -- identity --------------------------------------------------------------------------------
    def change_password(self, current: str, new: str) -> None:
        """Change your own password (also how a temporary one from an admin reset is replaced)."""
        self._login_at = users.change_password(self.store, self.principal, current, new)

    def users(self) -> pl.DataFrame:
        return pl.DataFrame(users.list_all(self.store, self.principal))

    def create_user(self, username: str, password: str, **kwargs: Any) -> dict[str, Any]:
        return users.create(self.store, self.principal, username, password, **kwargs)

    def disable_user(self, username: str) -> None:
        users.set_active(self.store, self.principal, username, False)

    def enable_user(self, username: str) -> None:
        users.set_active(self.store, self.principal, username, True)

    def reset_password(self, username: str) -> str:
        return users.reset_password(self.store, self.principal, username)

    def namespaces(self) -> pl.DataFrame:
        return pl.DataFrame(namespaces.list_visible(self.store, self.principal))

    def create_namespace(self, name: str, description: str = "") -> dict[str, Any]:
        return namespaces.create(self.store, self.principal, name, description)

    def members(self, namespace: str) -> pl.DataFrame:
        return pl.DataFrame(namespaces.list_members(self.store, self.principal, namespace))

    def add_member(self, namespace: str, username: str, role: str) -> None:
        namespaces.add_member(self.store, self.principal, namespace, username, role)

    def remove_member(self, namespace: str, username: str) -> None:
        namespaces.remove_member(self.store, self.principal, namespace, username)

    def audit(self, since: datetime | None = None, **filters: Any) -> pl.DataFrame:
        rows = audit.query(self.store, self.principal, since=since, **filters)
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema=list(audit.COLUMNS))

    # -- Data Center -----------------------------------------------------------------------------
    def preview_excel(self, path: str | Path, **options: Any) -> "PreviewTable":
        """Preview a spreadsheet (or CSV/JSON) before importing it: renders as a table in Jupyter."""
        return PreviewTable(readers.preview(path, max_mb=int(self.store.config["dataset_max_mb"]), **options))

    def import_dataset(self, path: str | Path, namespace: str, name: str | None = None,
                       **config: Any) -> dict[str, Any]:
        """Upload a local file into a namespace and wait for the import (same checks as the page)."""
        source = Path(path)
        made = datasets.create_upload(self.store, self.principal, namespace, source.name, source.read_bytes(),
                                      name=name, config=config)
        return datasets.ingest(self.store, made["id"]) or datasets.get(self.store, self.principal, made["id"])

    def datasets(self, namespace: str) -> pl.DataFrame:
        rows = datasets.list_datasets(self.store, self.principal, namespace)
        return pl.DataFrame([{k: r[k] for k in ("id", "name", "source", "ingest_status", "row_count", "updated_at")}
                             for r in rows]) if rows else pl.DataFrame()

    # -- pipelines and runs ----------------------------------------------------------------------
    def pipelines(self, namespace: str) -> pl.DataFrame:
        """A namespace's pipelines, by name."""
        from core.cli import PIPELINE_COLUMNS

        rows = pipelines.list_pipelines(self.store, self.principal, namespace)
        return (pl.DataFrame([{k: r[k] for k in PIPELINE_COLUMNS} for r in rows]) if rows
                else pl.DataFrame(schema=list(PIPELINE_COLUMNS)))

    def run(self, pipeline: str, namespace: str | None = None, *, input: str | None = None,
            sample: int | None = None, save_output_as: str | None = None, wait: bool = True,
            in_process: bool = False) -> dict[str, Any]:
        """Run a pipeline (name, id or YAML file path) on a Data Center dataset (name or id; default the
        pipeline's own). Queued for the scheduler service (started when `autostart_service` allows),
        or executed in this kernel with `in_process=True` (docetl then changes this process's state,
        e.g. its environment). With waiting: {run_id, status, cost, output_path, output_rows, error}
        as `python -m core run --wait --json` prints it; without: {run_id, status}."""
        from core.cli import ensure_service, run_in_process, run_summary

        namespace = namespace or self._only_namespace()
        who = self.principal
        run = execute.submit(self.store, who, namespace, str(pipeline), input_dataset=input, sample_rows=sample,
                             save_output_as=save_output_as, trigger=runs.Trigger.NOTEBOOK)
        if in_process:
            return run_summary(run_in_process(self.store, who, run, quiet=False))
        ensure_service(self.store)
        if not wait:
            return {"run_id": run["id"], "status": run["status"]}
        return run_summary(execute.wait(self.store, self.principal, run["id"]))

    def runs(self, namespace: str | None = None, status: str | None = None, pipeline: str | None = None,
             limit: int = 200, offset: int = 0) -> pl.DataFrame:
        """Runs newest first, in one namespace or every namespace you may see (`offset` pages back); errors
        in words."""
        from core.cli import RUN_ROW_COLUMNS, run_row

        rows = [run_row(r) for r in runs.list_runs(self.store, self.principal, namespace, status=status,
                                                    pipeline=pipeline, limit=limit, offset=offset)]
        return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema=list(RUN_ROW_COLUMNS))

    def run_info(self, run_id: str, log: bool = False) -> dict[str, Any]:
        """One run: its record, error and warnings in words, its progress (and the end of its log)."""
        from core.cli import run_details

        run = runs.get(self.store, self.principal, run_id)
        info = run_details(run)
        if log:
            info["log"] = runs.log_tail(run)
        return info

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a queued run at once, or ask a running one to stop; returns its run_id and status."""
        run = runs.cancel(self.store, self.principal, run_id)
        return {"run_id": run["id"], "status": run["status"], "cancel_requested": bool(run["cancel_requested"])}

    def run_output(self, run_id: str) -> pl.DataFrame:
        """The output rows of a completed run."""
        run = runs.get(self.store, self.principal, run_id)
        if run["status"] != runs.RunStatus.COMPLETED.value or not run["output_path"]:
            raise ValidationError("run.error.no_output", run=run_id, status=run["status"])
        try:
            rows = json.loads(Path(run["output_path"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValidationError("run.error.output_missing", run=run_id, path=run["output_path"]) from None
        return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()

    def _only_namespace(self) -> str:
        """Without a namespace: the only one you belong to (else say which to choose)."""
        names = [r["name"] for r in namespaces.list_visible(self.store, self.principal)]
        if len(names) == 1:
            return names[0]
        raise ValidationError("run.error.namespace_needed", choices=", ".join(names) or "-")

    def settings(self) -> pl.DataFrame:
        rows = settings.describe(self.store, self.principal, self.base)
        return pl.DataFrame([{k: str(v) for k, v in r.items()} for r in rows])


def _config(home: str | Path | None, environ: Mapping[str, str] | None) -> Config:
    import os

    env = dict(os.environ if environ is None else environ)
    if home is not None:
        env["DOCETL_HOME_DIR"] = str(home)
    return Config.from_env(env)


class PreviewTable(dict):
    """A preview (the CLI's JSON contract, as a dict) that Jupyter shows as its rows, with the detected
    header row, column types and warnings above them."""

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self["rows"], infer_schema_length=None) if self["rows"] else pl.DataFrame()

    def _repr_html_(self) -> str:
        import html

        types = ", ".join(f"{c['name']}: {c['type']}" for c in self["columns"])
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in self["warnings"])
        head = (f"<p>{html.escape(self['format'])} · sheet {html.escape(str(self['sheet']))} · header row "
                f"{self['header_row']} · rows {self['total_rows'] if self['total_rows'] is not None else '?'}</p>"
                f"<p>{html.escape(types)}</p>" + (f"<ul>{notes}</ul>" if notes else ""))
        return head + self.frame()._repr_html_()
