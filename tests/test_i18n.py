"""Two languages from the start: both catalogs hold the same keys with the same placeholders, and every
key the code uses (translation calls, error keys) exists in both."""
from __future__ import annotations

import ast
import json
import re
import string
from pathlib import Path

import pytest

from conftest import ROOT
from core import i18n
from core.config import SETTINGS
from core.errors import LockedOut, PermissionDenied, ValidationError
from core.i18n import t
from core.permissions import PLATFORM_ACTIONS, Action
from core.principal import Role

LANGS = ("zh_CN", "en")
SOURCE_DIRS = ("core", "app", "scheduler_service")
ERROR_CALL = re.compile(r"(Error|Denied|NotFound|LockedOut|StoreBusy|Failed)$")
TRANSLATE_CALL = {"t", "T"}
# texts that are the same in every language (product names...): none yet
UNTRANSLATED_OK: set[str] = set()


def load(lang: str) -> dict[str, str]:
    return json.loads((ROOT / "core" / "locales" / f"{lang}.json").read_text(encoding="utf-8"))


def placeholders(text: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}


def sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def class_keys() -> dict[str, str]:
    """`key = "..."` class attributes of error classes: class name -> key."""
    found = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and [getattr(t_, "id", None) for t_ in stmt.targets] == ["key"]
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                        found[node.name] = stmt.value.value
    return found


def uses() -> list[tuple[str, str, set[str] | None]]:
    """(where, key, keyword names given or None when **params are spread) for every key use in the code."""
    by_class = class_keys()
    found = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            if name is None or not (name in TRANSLATE_CALL or ERROR_CALL.search(name)):
                continue
            given = None if any(k.arg is None for k in node.keywords) else {k.arg for k in node.keywords}
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((f"{where}:{node.lineno}", first.value, given))
            elif first is None and name in by_class:
                found.append((f"{where}:{node.lineno}", by_class[name], given))
    for cls, key in by_class.items():
        found.append((f"class {cls}", key, None))
    return found


def test_scanner_sees_the_code() -> None:
    """Guard against a scanner that silently finds nothing."""
    keys = {key for _, key, _ in uses()}
    assert {"user.error.password_short", "auth.error.locked", "error.permission_denied",
            "cli.error.password_env", "error.store_busy"} <= keys


def test_both_catalogs_have_exactly_the_same_keys() -> None:
    zh, en = load("zh_CN"), load("en")
    assert sorted(set(zh) - set(en)) == []
    assert sorted(set(en) - set(zh)) == []


@pytest.mark.parametrize("lang", LANGS)
def test_catalog_values_are_non_empty_text(lang: str) -> None:
    assert all(isinstance(v, str) and v.strip() for v in load(lang).values())


def test_chinese_catalog_is_translated() -> None:
    zh = load("zh_CN")
    untranslated = [k for k, v in zh.items() if k not in UNTRANSLATED_OK and not re.search(r"[\u4e00-\u9fff]", v)]
    assert untranslated == []


def test_placeholders_match_between_languages() -> None:
    zh, en = load("zh_CN"), load("en")
    mismatched = {k: (placeholders(zh[k]), placeholders(en[k])) for k in set(zh) & set(en)
                  if placeholders(zh[k]) != placeholders(en[k])}
    assert mismatched == {}


@pytest.mark.parametrize("lang", LANGS)
def test_every_key_used_in_the_code_exists(lang: str) -> None:
    catalog = load(lang)
    missing = sorted({f"{key} ({where})" for where, key, _ in uses() if key not in catalog})
    assert missing == []


def test_every_call_supplies_the_placeholders_its_text_needs() -> None:
    """A missing parameter would show a raw `{name}` to the user."""
    en = load("en")
    short = [f"{where}: {key} needs {sorted(placeholders(en[key]) - given)}" for where, key, given in uses()
             if given is not None and key in en and not placeholders(en[key]) <= given]
    assert short == []


def test_dynamic_key_families_are_complete() -> None:
    """Keys pages build at run time: one per setting, role and namespace action."""
    wanted = {f"setting.{s.key}" for s in SETTINGS} | {f"role.{r.value}" for r in Role} | {"role.platform_admin"} \
        | {f"action.{a.value}" for a in Action if a not in PLATFORM_ACTIONS}
    for lang in LANGS:
        assert sorted(wanted - set(load(lang))) == [], lang


# -- the translation function ----------------------------------------------------------------------------
def test_t_translates_and_formats() -> None:
    assert t("user.error.password_short", "en", min=8) == "The password is too short: use at least 8 characters."
    zh = t("user.error.password_short", "zh_CN", min=8)
    assert "8" in zh and re.search(r"[\u4e00-\u9fff]", zh)


def test_t_defaults_to_chinese_and_survives_bad_input() -> None:
    assert t("auth.error.bad_credentials") == load("zh_CN")["auth.error.bad_credentials"]
    assert t("auth.error.bad_credentials", "fr") == load("zh_CN")["auth.error.bad_credentials"]
    assert t("no.such.key", "en") == "no.such.key"
    raw = load("en")["user.error.password_short"]
    assert t("user.error.password_short", "en") == raw
    assert t("user.error.password_short", "en", other=1) == raw  # missing parameter: text, not a crash
    assert i18n.DEFAULT_LANGUAGE == "zh_CN" and set(i18n.LANGUAGES) == set(LANGS)


def test_errors_speak_both_languages() -> None:
    err = PermissionDenied(action="manage_users", namespace="-", user="bob")
    assert str(err) == err.message("en")
    assert "bob" in err.message("zh_CN") and err.message("zh_CN") != err.message("en")
    locked = LockedOut(until=None, minutes=7)
    assert "7" in locked.message("zh_CN") and "7" in str(locked)
    assert ValidationError("namespace.error.exists", name="alpha").message("zh_CN") == t(
        "namespace.error.exists", "zh_CN", name="alpha")
