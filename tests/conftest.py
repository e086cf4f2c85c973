"""Shared fixtures: a temporary home with a real DuckDB store, and users in every role."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import auth, namespaces, users
from core.config import Config
from core.principal import Principal
from core.settings import open_store
from core.store import Store

PASSWORD = "correct-horse-1"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt cost 4 keeps the suite fast; the cost is a setting, so production keeps 12."""
    monkeypatch.setenv("DOCETL_WB_BCRYPT_ROUNDS", "4")
    monkeypatch.setenv("DOCETL_WB_AUTOSTART_SERVICE", "0")  # tests start their own service when they need one


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DOCETL_HOME_DIR", str(path))
    return path


@pytest.fixture
def config(home: Path) -> Config:
    return Config.from_env(os.environ)


@pytest.fixture
def store(config: Config) -> Store:
    return open_store(config)


@pytest.fixture
def admin(store: Store) -> Principal:
    auth.create_first_admin(store, "admin", PASSWORD)
    return auth.authenticate(store, "admin", PASSWORD).principal


@pytest.fixture
def team(store: Store, admin: Principal) -> dict[str, Principal]:
    """Namespaces `alpha` and `beta`; one user per role in `alpha`, and an outsider in `beta`."""
    for ns in ("alpha", "beta"):
        namespaces.create(store, admin, ns)
    people = {"nsadmin": "namespace_admin", "editor": "editor", "viewer": "viewer"}
    for name, role in people.items():
        users.create(store, admin, name, PASSWORD)
        namespaces.add_member(store, admin, "alpha", name, role)
    users.create(store, admin, "outsider", PASSWORD)
    namespaces.add_member(store, admin, "beta", "outsider", "editor")
    result = {name: auth.authenticate(store, name, PASSWORD).principal for name in [*people, "outsider"]}
    result["platform_admin"] = admin
    return result
