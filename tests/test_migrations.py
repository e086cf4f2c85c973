"""Versioned schema: applied on open, idempotent, an upgrade keeps every row and writes a backup first,
a failing migration changes nothing, and a store newer than the program is a clear error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import PASSWORD, ROOT
from core import auth, settings, users
from core.config import Config
from core.errors import WorkbenchError
from core.migrations import MIGRATIONS
from core.settings import open_store
from core.store import Store, migrate, schema_version

LATEST = MIGRATIONS[-1][0]
NEXT = LATEST + 1
V_NEXT = (NEXT, "test: nicknames and widgets", [
    "ALTER TABLE users ADD COLUMN nickname VARCHAR",
    "CREATE TABLE widgets (id INTEGER PRIMARY KEY, owner VARCHAR NOT NULL)",
    "INSERT INTO widgets SELECT row_number() OVER (), username FROM users",
])
DATA_TABLES = ("users", "namespaces", "memberships", "audit_logs", "login_attempts", "settings")


def contents(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every row of the identity tables, in a stable order (the columns that existed at v1)."""
    out = {}
    for table in DATA_TABLES:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database()"
            " AND table_name = ? ORDER BY ordinal_position", [table]).fetchall() if r[0] != "nickname"]
        out[table] = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()
    return out


@pytest.fixture
def populated(store: Store, team) -> Store:
    """A store at the current version holding users, memberships, audit rows, attempts and a setting."""
    settings.update(store, team["platform_admin"], "login_max_failures", 6)
    with pytest.raises(WorkbenchError):
        auth.authenticate(store, "viewer", "wrong-password")
    return store


def open_file(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path))


def test_migration_list_is_append_only_shaped() -> None:
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert all(name.strip() and statements for _, name, statements in MIGRATIONS)


def test_fresh_store_is_at_the_latest_version(store: Store) -> None:
    assert users.count(store) == 0
    with open_file(store.path) as conn:
        assert schema_version(conn) == LATEST
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()] == \
            [v for v, _, _ in MIGRATIONS]
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(DATA_TABLES) <= tables
    assert not list(store.path.parent.glob("*.bak"))  # nothing to back up on a new file


def test_many_opens_change_nothing(populated: Store, config: Config) -> None:
    with open_file(populated.path) as conn:
        before = contents(conn)
    for _ in range(8):
        fresh = open_store(config)
        assert auth.authenticate(fresh, "editor", PASSWORD).principal.username == "editor"
    with open_file(populated.path) as conn:
        assert migrate(conn, populated.path) == LATEST
        assert migrate(conn, populated.path) == LATEST
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)
        after = contents(conn)
    assert not list(populated.path.parent.glob("*.bak"))
    # only the logins just made were added
    assert {t: rows for t, rows in after.items() if t not in ("users", "audit_logs", "login_attempts")} == \
        {t: rows for t, rows in before.items() if t not in ("users", "audit_logs", "login_attempts")}
    assert len(after["users"]) == len(before["users"])
    assert after["audit_logs"][:len(before["audit_logs"])] == before["audit_logs"]


def test_upgrade_keeps_every_row_and_writes_a_backup_first(populated: Store) -> None:
    path = populated.path
    with open_file(path) as conn:
        before = contents(conn)
        assert migrate(conn, path, [*MIGRATIONS, V_NEXT]) == NEXT
        assert schema_version(conn) == NEXT
        assert contents(conn) == before
        assert conn.execute("SELECT count(*) FROM users WHERE nickname IS NULL").fetchone()[0] == len(before["users"])
        assert conn.execute("SELECT count(*) FROM widgets").fetchone()[0] == len(before["users"])
        # a second run is a no-op, and makes no second backup
        assert migrate(conn, path, [*MIGRATIONS, V_NEXT]) == NEXT
    backups = sorted(p.name for p in path.parent.glob("*.bak"))
    assert backups == [f"{path.name}.v{LATEST}.bak"]
    with open_file(path.parent / backups[0]) as old:
        assert schema_version(old) == LATEST
        assert contents(old) == before


@pytest.fixture
def next_release():
    """This program with one more migration appended, as a later issue would add it."""
    MIGRATIONS.append(V_NEXT)
    try:
        yield
    finally:
        MIGRATIONS.remove(V_NEXT)


def test_opening_an_older_store_upgrades_it(populated: Store, config: Config, next_release) -> None:
    with open_file(populated.path) as conn:
        before = contents(conn)
    upgraded = open_store(config)
    assert auth.authenticate(upgraded, "viewer", PASSWORD).principal.role_in("alpha").value == "viewer"
    assert upgraded.execute("SELECT count(*) AS n FROM widgets")[0]["n"] == len(before["users"])
    assert upgraded.config["login_max_failures"] == 6
    assert (populated.path.parent / f"{populated.path.name}.v{LATEST}.bak").is_file()
    with open_file(populated.path) as conn:
        assert schema_version(conn) == NEXT
        after = contents(conn)
    assert after["memberships"] == before["memberships"] and after["settings"] == before["settings"]
    assert after["audit_logs"][:len(before["audit_logs"])] == before["audit_logs"]


def test_a_failing_migration_changes_nothing(populated: Store) -> None:
    broken = (NEXT, "test: broken", ["CREATE TABLE half_done (id INTEGER)", "ALTER TABLE users ADD COLUMN nickname VARCHAR",
                                     "ALTER TABLE no_such_table ADD COLUMN x INTEGER"])
    with open_file(populated.path) as conn:
        before = contents(conn)
        with pytest.raises(duckdb.Error):
            migrate(conn, populated.path, [*MIGRATIONS, broken])
        assert schema_version(conn) == LATEST
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'"
                            ).fetchone()[0] == 0
        assert "nickname" not in [d[0] for d in conn.execute("SELECT * FROM users LIMIT 0").description]
        assert contents(conn) == before
        # fixed in the next build: it applies cleanly
        assert migrate(conn, populated.path, [*MIGRATIONS, V_NEXT]) == NEXT


def test_a_newer_store_is_a_clear_error_and_left_alone(populated: Store, config: Config) -> None:
    with open_file(populated.path) as conn:
        migrate(conn, populated.path, [*MIGRATIONS, V_NEXT])
        before = contents(conn)
    with pytest.raises(WorkbenchError) as caught:
        Store(config).execute("SELECT 1")
    assert caught.value.key == "error.store_newer"
    assert (caught.value.params["found"], caught.value.params["known"]) == (NEXT, LATEST)
    assert f"{NEXT}" in str(caught.value) and "upgrade" in str(caught.value).lower()
    with open_file(populated.path) as conn:
        assert schema_version(conn) == NEXT and contents(conn) == before


def test_cli_on_a_newer_store_is_one_line(populated: Store, config: Config) -> None:
    with open_file(populated.path) as conn:
        migrate(conn, populated.path, [*MIGRATIONS, V_NEXT])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCETL_")}
    env["DOCETL_HOME_DIR"] = str(config.home)
    result = subprocess.run([sys.executable, "-m", "core", "--json", "user", "list"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
    assert "newer" in result.stderr
