"""`python -m core`: the operator's command line.

It acts as the local operator (who has the files anyway), audited as such; with `--user NAME` (password
from DOCETL_WB_PASSWORD) it acts with that user's permissions. Errors: exit 1 and one clear line.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import duckdb

from core import audit, auth, datasets, namespaces, settings, users
from core.config import Config
from core.errors import PermissionDenied, ValidationError, WorkbenchError
from core.principal import Principal
from core.settings import open_store
from core.store import Store


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    raise WorkbenchError("cli.error.password_stdin")


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False, default=str))
    elif isinstance(data, list):
        for row in data:
            print("\t".join("" if v is None else str(v) for v in row.values()))
    elif isinstance(data, dict):
        for k, v in data.items():
            print(f"{k}: {v}")
    elif data is not None:
        print(data)


def cmd_init(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.count(store)  # opens, creates and migrates the store
    return {"home": str(store.config.home), "store": str(store.path), "users": users.count(store)}


def cmd_user_add(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    password = _read_password(args)
    if who.is_operator and auth.needs_bootstrap(store) and args.admin:
        return auth.create_first_admin(store, args.name, password, email=args.email, display_name=args.display_name,
                                       client=who)
    return users.create(store, who, args.name, password, email=args.email, display_name=args.display_name,
                        is_platform_admin=args.admin)


def cmd_user_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{k: r[k] for k in ("username", "display_name", "email", "active", "is_platform_admin")}
            for r in users.list_all(store, who)]


def cmd_user_disable(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.set_active(store, who, args.name, False)
    return f"disabled {args.name}"


def cmd_user_enable(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    users.set_active(store, who, args.name, True)
    return f"enabled {args.name}"


def cmd_user_reset(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    temporary = users.reset_password(store, who, args.name)
    return {"username": args.name, "temporary_password": temporary} if args.json else temporary


def cmd_user_unlock(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    auth.unlock(store, who, args.name)
    return f"unlocked {args.name}"


def cmd_user_unlock_address(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    auth.unlock_address(store, who, args.address)
    return f"unlocked address {args.address}"


def cmd_ns_create(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    row = namespaces.create(store, who, args.name, args.description or "")
    return {"name": row["name"], "path": str(store.config.namespace_dir(row["name"]))}


def cmd_ns_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{"name": r["name"], "role": r["role"], "description": r["description"]}
            for r in namespaces.list_visible(store, who)]


def cmd_member_add(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    namespaces.add_member(store, who, args.namespace, args.member, args.role)
    return f"{args.member} is {args.role} in {args.namespace}"


def cmd_member_remove(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    namespaces.remove_member(store, who, args.namespace, args.member)
    return f"removed {args.member} from {args.namespace}"


def cmd_audit_export(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    rows = audit.query(store, who, action=args.action, actor=args.actor, namespace=args.namespace, limit=args.limit)
    sys.stdout.write(audit.export(rows, args.format))
    return None


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are errors too: one line on stderr, exit 2 (subcommand parsers inherit this)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see: {self.prog} --help)\n")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def cmd_settings_list(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return [{"key": r["key"], "effective": r["effective"], "override": r["override"], "env": r["env"]}
            for r in settings.describe(store, who, store.config)]


def cmd_settings_set(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return f"{args.key} = {settings.update(store, who, args.key, args.value)}"


def cmd_settings_reset(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    """The way back from an override that locked people out: the environment or default applies again."""
    settings.reset(store, who, args.key)
    return f"{args.key} reset"


def _ingest_config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("sheet", args.sheet), ("header_row", args.header_row), ("start_row", args.start_row),
                              ("end_row", args.end_row)) if v is not None}


def cmd_dataset_preview(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    return datasets.preview(args.path, limit=args.limit, max_mb=int(store.config["dataset_max_mb"]),
                            **_ingest_config(args))


def cmd_dataset_import(store: Store, who: Principal, args: argparse.Namespace) -> Any:
    """Upload a local file into a namespace and wait for its import."""
    path = Path(args.path)
    made = datasets.create_upload(store, who, args.namespace, path.name, path.read_bytes(), name=args.name,
                                  config=_ingest_config(args))
    done = datasets.ingest(store, made["id"]) or datasets.get(store, who, made["id"])
    if done["error"]:  # registered as failed; the command itself fails with the reason
        raise ValidationError(done["error"]["key"], **done["error"]["params"])
    return {"id": done["id"], "name": done["name"], "status": done["ingest_status"], "row_count": done["row_count"],
            "columns": done["schema"] or [], "path": done["path"], "error": None}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="DocETL Workbench command line")
    parser.add_argument("--user", dest="acting_user", help="act as this user (password from DOCETL_WB_PASSWORD)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(group: Any, name: str, func: Callable, **kw: Any) -> argparse.ArgumentParser:
        p = group.add_parser(name, **kw)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return p

    add(sub, "init", cmd_init, help="create the home layout and the metadata store")
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    p = add(user, "add", cmd_user_add)
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--email")
    p.add_argument("--display-name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    add(user, "list", cmd_user_list)
    for name, func in (("disable", cmd_user_disable), ("enable", cmd_user_enable),
                       ("reset-password", cmd_user_reset), ("unlock", cmd_user_unlock)):
        add(user, name, func).add_argument("name")
    add(user, "unlock-address", cmd_user_unlock_address).add_argument("address")
    ns = sub.add_parser("namespace", help="manage namespaces").add_subparsers(dest="action", required=True)
    p = add(ns, "create", cmd_ns_create)
    p.add_argument("name")
    p.add_argument("--description")
    add(ns, "list", cmd_ns_list)
    member = sub.add_parser("member", help="manage memberships").add_subparsers(dest="action", required=True)
    p = add(member, "add", cmd_member_add)
    p.add_argument("namespace")
    p.add_argument("member", metavar="USER")
    p.add_argument("--role", required=True, choices=["namespace_admin", "editor", "viewer"])
    p = add(member, "remove", cmd_member_remove)
    p.add_argument("namespace")
    p.add_argument("member", metavar="USER")
    aud = sub.add_parser("audit", help="audit log").add_subparsers(dest="action", required=True)
    p = add(aud, "export", cmd_audit_export)
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--action", help="action, * as wildcard (e.g. auth.*)")
    p.add_argument("--actor")
    p.add_argument("--namespace")
    p.add_argument("--limit", type=int, default=100_000)
    data = sub.add_parser("dataset", help="Data Center").add_subparsers(dest="action", required=True)
    for name, func in (("preview", cmd_dataset_preview), ("import", cmd_dataset_import)):
        p = add(data, name, func)
        p.add_argument("path")
        p.add_argument("--sheet")
        p.add_argument("--header-row", type=int)
        p.add_argument("--start-row", type=int)
        p.add_argument("--end-row", type=int)
        if name == "preview":
            p.add_argument("--limit", type=int, default=20)
        else:
            p.add_argument("--namespace", required=True)
            p.add_argument("--name")
    conf = sub.add_parser("settings", help="admin settings").add_subparsers(dest="action", required=True)
    add(conf, "list", cmd_settings_list)
    p = add(conf, "set", cmd_settings_set)
    p.add_argument("key")
    p.add_argument("value")
    add(conf, "reset", cmd_settings_reset).add_argument("key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = open_store(Config.from_env())
        who = Principal.operator()
        if args.acting_user:
            password = os.environ.get("DOCETL_WB_PASSWORD")
            if not password:
                raise WorkbenchError("cli.error.password_env")
            who = auth.authenticate(store, args.acting_user, password).principal
            if who.must_change_password:
                raise PermissionDenied("auth.error.must_change_password")
        _print(args.func(store, who, args), args.json)
        return 0
    except WorkbenchError as exc:
        if args.json and args.command == "dataset":  # the JSON contract: one {"error": ...} line
            print(json.dumps({"error": _one_line(exc)}, ensure_ascii=False))
        else:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})", file=sys.stderr)
        return 1
    except duckdb.Error as exc:  # e.g. a damaged or foreign database file
        print(f"error: metadata store: {_one_line(exc)}", file=sys.stderr)
        return 1
