"""The README documents every setting and every other environment variable the code reads."""
from __future__ import annotations

import pytest

from conftest import ROOT
from core.config import OTHER_ENV, SETTINGS


def readme() -> str:
    path = ROOT / "README.md"
    assert path.is_file(), "README.md is missing"
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented_with_its_default(setting) -> None:
    text = readme()
    assert setting.env in text
    lines = [line.lower() for line in text.splitlines() if setting.env in line]
    assert any(str(setting.default).lower() in line for line in lines), \
        f"no README line for {setting.env} gives its default {setting.default!r}"


@pytest.mark.parametrize("name", sorted(OTHER_ENV))
def test_every_other_environment_variable_is_documented(name: str) -> None:
    assert name in readme()
