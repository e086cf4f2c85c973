"""One translation function over the 简体中文 and English catalogs (`core/locales/*.json`).

Keys are dotted (`auth.login.title`); parameters use `str.format` names. A test fails when a key used in
the code is missing from either catalog, or when the catalogs' keys differ.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

LANGUAGES = {"zh_CN": "简体中文", "en": "English"}
DEFAULT_LANGUAGE = "zh_CN"
_LOCALES = Path(__file__).parent / "locales"


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    """A language's catalog, read once per process (the files ship with the code)."""
    return json.loads((_LOCALES / f"{lang}.json").read_text(encoding="utf-8"))


def t(key: str, lang: str | None = None, /, **params: Any) -> str:
    """The text for `key` in `lang` (falling back to English, then to the key itself)."""
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = catalog(lang).get(key) or catalog("en").get(key) or key
    if not params:
        return text
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text
