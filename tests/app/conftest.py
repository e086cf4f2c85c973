"""AppTest helpers: drive app/Home.py in-process against the temporary home."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
ZH = json.loads((ROOT / "core/locales/zh_CN.json").read_text(encoding="utf-8"))
EN = json.loads((ROOT / "core/locales/en.json").read_text(encoding="utf-8"))


def new_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app/Home.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def login(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    at.button(key="FormSubmitter:login_form-" + ZH["login.submit"]).click().run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Everything a user can read on the page, as one string."""
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                                  "error", "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def app_factory(home):
    return new_app
