"""The full permission matrix: every core action × every role × own / other namespace.

The expected answers are the SPEC roles table written out by hand below, not read from
`core.permissions`, so a wrong rule in core fails here. A refused action must raise PermissionDenied
and leave the store exactly as it was.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import PASSWORD
from core import audit, auth, llm_settings, namespaces, settings, users
from core.config import Config
from core.errors import AuthenticationFailed, LockedOut, PermissionDenied
from core.permissions import Action, can, can_somewhere, require, visible_namespaces
from core.principal import Principal, Role
from core.settings import open_store
from core.store import Store

ROLES = ("platform_admin", "namespace_admin", "editor", "viewer", "nomember", "operator")
SCOPES = ("own", "other")
NS = {"own": "alpha", "other": "beta"}
# a user to act upon: a member of the actor's namespace, or of the other one (never the actor itself)
TARGET = {"own": "member2", "other": "outsider"}
LOCKED_AT = datetime(2020, 1, 1, 9, 0, tzinfo=timezone.utc)
LLM_KEY = "sk-matrix-0123456789abcdef"


def parse_table(text: str) -> dict[tuple[str, str, str], bool]:
    """`action  YY YN ...` rows, one Y/N pair (own, other) per role in ROLES order."""
    table = {}
    for line in text.strip().splitlines():
        if line.lstrip().startswith("#"):
            continue
        action, *cells = line.split()
        assert len(cells) == len(ROLES), line
        for role, cell in zip(ROLES, cells):
            assert len(cell) == 2 and set(cell) <= {"Y", "N"}, line
            table[(action, role, "own")] = cell[0] == "Y"
            table[(action, role, "other")] = cell[1] == "Y"
    return table


# SPEC "Roles": see / SQL: all, own, own, own; edit, run, cancel, deployments, upload: writers;
# delete and members: platform admin and namespace admin (own); users, namespaces, LLM settings:
# platform admin only; audit: all / own namespaces / no / no. The local operator has full rights.
CAN_TABLE = parse_table("""
#  action               platform_admin namespace_admin editor viewer nomember operator
   view                 YY YN YN YN NN YY
   sql_analytics        YY YN YN YN NN YY
   edit_pipeline        YY YN YN NN NN YY
   run                  YY YN YN NN NN YY
   cancel_run           YY YN YN NN NN YY
   manage_deployments   YY YN YN NN NN YY
   upload_dataset       YY YN YN NN NN YY
   delete_resource      YY YN NN NN NN YY
   manage_members       YY YN NN NN NN YY
   read_audit           YY YN NN NN NN YY
   manage_users         YY NN NN NN NN YY
   manage_namespaces    YY NN NN NN NN YY
   manage_llm_settings  YY NN NN NN NN YY
   manage_settings      YY NN NN NN NN YY
   read_audit_all       YY NN NN NN NN YY
""")

# Core functions. For user actions, "own"/"other" is the target user (member of the actor's namespace
# or of another one); for namespace actions it is the namespace.
CORE_TABLE = parse_table("""
#  action                    platform_admin namespace_admin editor viewer nomember operator
   users.create              YY NN NN NN NN YY
   users.list_all            YY NN NN NN NN YY
   users.get                 YY NN NN NN NN YY
   users.directory           YY YY NN NN NN YY
   users.set_active          YY NN NN NN NN YY
   users.reset_password      YY NN NN NN NN YY
   users.set_platform_admin  YY NN NN NN NN YY
   auth.unlock               YY NN NN NN NN YY
   namespaces.create         YY NN NN NN NN YY
   namespaces.list_members   YY YN YN YN NN YY
   namespaces.add_member     YY YN NN NN NN YY
   namespaces.remove_member  YY YN NN NN NN YY
   audit.query               YY YN NN NN NN YY
   settings.update           YY NN NN NN NN YY
   settings.describe         YY NN NN NN NN YY
   settings.reset            YY NN NN NN NN YY
   settings.system_info      YY NN NN NN NN YY
   llm_settings.set_key      YY NN NN NN NN YY
   llm_settings.delete_key   YY NN NN NN NN YY
   llm_settings.list_keys    YY NN NN NN NN YY
""")

VISIBLE = {"platform_admin": {"alpha", "beta"}, "namespace_admin": {"alpha"}, "editor": {"alpha"},
           "viewer": {"alpha"}, "nomember": set(), "operator": {"alpha", "beta"}}
# audit rows each role reads without a namespace filter (None = platform-level rows); absent = refused
AUDIT_SCOPE = {"platform_admin": {None, "alpha", "beta"}, "namespace_admin": {"alpha"},
               "operator": {None, "alpha", "beta"}}


def _env(home: Path) -> dict[str, str]:
    return {"DOCETL_HOME_DIR": str(home), "DOCETL_WB_BCRYPT_ROUNDS": "4"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Principal]]:
    """One populated home, copied for every case (building it per case would take minutes)."""
    home = tmp_path_factory.mktemp("matrix") / "home"
    home.mkdir()
    store = open_store(Config.from_env(_env(home)))
    auth.create_first_admin(store, "admin", PASSWORD)
    admin = auth.authenticate(store, "admin", PASSWORD).principal
    for ns in ("alpha", "beta"):
        namespaces.create(store, admin, ns)
    for name, ns, role in (("nsadmin", "alpha", "namespace_admin"), ("editor", "alpha", "editor"),
                           ("viewer", "alpha", "viewer"), ("member2", "alpha", "viewer"),
                           ("outsider", "beta", "editor")):
        users.create(store, admin, name, PASSWORD)
        namespaces.add_member(store, admin, ns, name, role)
    users.create(store, admin, "loner", PASSWORD)
    settings.update(store, admin, "default_timezone", "Europe/Berlin")
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", LLM_KEY)
    # both target users are locked (in the past), so unlock has something to lift
    for target in TARGET.values():
        for i in range(5):
            with pytest.raises((AuthenticationFailed, LockedOut)):
                auth.authenticate(store, target, "wrong-password", now=LOCKED_AT + timedelta(seconds=i))
    login = {role: auth.authenticate(store, name, PASSWORD).principal for role, name in (
        ("namespace_admin", "nsadmin"), ("editor", "editor"), ("viewer", "viewer"), ("nomember", "loner"))}
    return home, {**login, "platform_admin": admin, "operator": Principal.operator()}


@pytest.fixture
def world(template, tmp_path: Path) -> tuple[Store, dict[str, Principal]]:
    home, principals = template
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return open_store(Config.from_env(_env(copy))), principals


def snapshot(store: Store) -> dict:
    """Everything an action could change: data tables, successful audit rows, namespace folders."""
    with store.read() as tx:
        state = {table: tx.execute(f"SELECT * FROM {table} ORDER BY ALL")
                 for table in ("users", "namespaces", "memberships", "settings", "login_attempts", "llm_secrets")}
        state["audit_ok"] = tx.execute("SELECT * FROM audit_logs WHERE success ORDER BY id")
    state["folders"] = sorted(p.name for p in store.config.docetl_dir.iterdir())
    return state


def user_row(store: Store, name: str) -> dict:
    with store.read() as tx:
        return users.get_row(tx, name)


def member_roles(store: Store, ns: str) -> dict[str, str]:
    rows = store.execute("SELECT u.username, m.role FROM memberships m JOIN users u ON u.id = m.user_id"
                         " JOIN namespaces n ON n.id = m.namespace_id WHERE n.name = ?", [ns])
    return {r["username"]: r["role"] for r in rows}


# -- each core action and the effect it must have when allowed -----------------------------------
def _create_user(store, who, scope):
    users.create(store, who, f"new-{scope}", PASSWORD)
    return lambda: user_row(store, f"new-{scope}") is not None


def _list_all(store, who, scope):
    rows = users.list_all(store, who)
    return lambda: {r["username"] for r in rows} == {
        "admin", "nsadmin", "editor", "viewer", "member2", "outsider", "loner"} and all(
        "password_hash" not in r for r in rows)


def _get_user(store, who, scope):
    row = users.get(store, who, TARGET[scope])
    return lambda: row["username"] == TARGET[scope] and "password_hash" not in row


def _directory(store, who, scope):
    rows = users.directory(store, who)
    return lambda: {r["username"] for r in rows} >= {"admin", "member2", "outsider", "loner"}


def _set_active(store, who, scope):
    users.set_active(store, who, TARGET[scope], False)
    return lambda: user_row(store, TARGET[scope])["active"] is False


def _reset_password(store, who, scope):
    temporary = users.reset_password(store, who, TARGET[scope])
    return lambda: auth.authenticate(store, TARGET[scope], temporary).must_change_password


def _set_platform_admin(store, who, scope):
    users.set_platform_admin(store, who, TARGET[scope], True)
    return lambda: user_row(store, TARGET[scope])["is_platform_admin"] is True


def _unlock(store, who, scope):
    assert auth.lock_status(store, TARGET[scope], now=LOCKED_AT + timedelta(minutes=1)) is not None
    auth.unlock(store, who, TARGET[scope], now=LOCKED_AT + timedelta(minutes=1))
    return lambda: auth.lock_status(store, TARGET[scope], now=LOCKED_AT + timedelta(minutes=2)) is None


def _create_namespace(store, who, scope):
    namespaces.create(store, who, "gamma")
    return lambda: (store.config.docetl_dir / "gamma" / "files").is_dir() and any(
        r["name"] == "gamma" for r in namespaces.list_visible(store, Principal.operator()))


def _list_members(store, who, scope):
    rows = namespaces.list_members(store, who, NS[scope])
    expected = {"alpha": {"nsadmin", "editor", "viewer", "member2"}, "beta": {"outsider"}}[NS[scope]]
    return lambda: {r["username"] for r in rows} == expected


def _add_member(store, who, scope):
    namespaces.add_member(store, who, NS[scope], "loner", "viewer")
    return lambda: member_roles(store, NS[scope]).get("loner") == "viewer"


def _remove_member(store, who, scope):
    namespaces.remove_member(store, who, NS[scope], TARGET[scope])
    return lambda: TARGET[scope] not in member_roles(store, NS[scope])


def _audit_query(store, who, scope):
    rows = audit.query(store, who, namespace=NS[scope])
    return lambda: rows and {r["namespace"] for r in rows} == {NS[scope]}


def _settings_update(store, who, scope):
    settings.update(store, who, "password_min_length", 10)
    return lambda: settings.overrides(store).get("password_min_length") == 10


def _settings_describe(store, who, scope):
    rows = settings.describe(store, who, store.config)
    return lambda: {r["key"]: r["override"] for r in rows}["default_timezone"] == "Europe/Berlin"


def _system_info(store, who, scope):
    info = settings.system_info(store, who)
    return lambda: (info["users"], info["namespaces"]) == (7, 2)


def _settings_reset(store, who, scope):
    settings.reset(store, who, "default_timezone")
    return lambda: "default_timezone" not in settings.overrides(store)


def _llm_set_key(store, who, scope):
    llm_settings.set_key(store, who, "DEEPSEEK_API_KEY", "sk-new-key-for-the-matrix")
    return lambda: llm_settings.run_environment(store) == {"OPENAI_API_KEY": LLM_KEY,
                                                          "DEEPSEEK_API_KEY": "sk-new-key-for-the-matrix"}


def _llm_delete_key(store, who, scope):
    llm_settings.delete_key(store, who, "OPENAI_API_KEY")
    return lambda: llm_settings.run_environment(store) == {}


def _llm_list_keys(store, who, scope):
    rows = llm_settings.list_keys(store, who)
    return lambda: [(r["name"], r["masked"]) for r in rows] == [("OPENAI_API_KEY", "sk-…cdef")]


ACTIONS = {
    "users.create": _create_user, "users.list_all": _list_all, "users.get": _get_user,
    "users.directory": _directory, "users.set_active": _set_active,
    "users.reset_password": _reset_password, "users.set_platform_admin": _set_platform_admin,
    "auth.unlock": _unlock, "namespaces.create": _create_namespace,
    "namespaces.list_members": _list_members, "namespaces.add_member": _add_member,
    "namespaces.remove_member": _remove_member, "audit.query": _audit_query,
    "settings.update": _settings_update, "settings.describe": _settings_describe,
    "settings.reset": _settings_reset, "settings.system_info": _system_info,
    "llm_settings.set_key": _llm_set_key, "llm_settings.delete_key": _llm_delete_key,
    "llm_settings.list_keys": _llm_list_keys,
}


def test_tables_cover_every_action_and_role() -> None:
    assert {a for a, _, _ in CAN_TABLE} == {a.value for a in Action}
    assert {a for a, _, _ in CORE_TABLE} == set(ACTIONS)
    assert {r for _, r, _ in CAN_TABLE} == {r for _, r, _ in CORE_TABLE} == set(ROLES)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_core_action(world, action: str, role: str, scope: str) -> None:
    store, principals = world
    who = principals[role]
    allowed = CORE_TABLE[(action, role, scope)]
    before = snapshot(store)
    if allowed:
        effect = ACTIONS[action](store, who, scope)
        assert effect(), f"{role} did {action} ({scope}) but the effect is missing"
    else:
        with pytest.raises(PermissionDenied) as caught:
            ACTIONS[action](store, who, scope)
        assert caught.value.key == "error.permission_denied"
        assert who.username in str(caught.value)
        assert snapshot(store) == before, f"refused {action} by {role} changed the store"


@pytest.mark.parametrize("role", [r for r in ROLES if CORE_TABLE[("namespaces.add_member", r, "own")]])
def test_allowed_changes_are_audited_under_the_actor(world, role: str) -> None:
    store, principals = world
    who = principals[role]
    namespaces.add_member(store, who, "alpha", "loner", "editor")
    row = audit.query(store, Principal.operator(), action="member.grant", limit=1)[0]
    assert (row["actor_username"], row["namespace"], row["resource_id"], row["success"]) == (
        who.username, "alpha", "loner", True)


@pytest.mark.parametrize("role", ROLES)
def test_list_visible_shows_only_own_namespaces(world, role: str) -> None:
    store, principals = world
    rows = namespaces.list_visible(store, principals[role])
    assert {r["name"] for r in rows} == VISIBLE[role]
    if role in ("namespace_admin", "editor", "viewer"):
        assert rows[0]["role"] == role


@pytest.mark.parametrize("role", ROLES)
def test_audit_query_without_namespace(world, role: str) -> None:
    """Platform-level rows (users, settings) are for platform admins; a namespace admin reads own rows."""
    store, principals = world
    before = snapshot(store)
    if role not in AUDIT_SCOPE:
        with pytest.raises(PermissionDenied):
            audit.query(store, principals[role])
        assert snapshot(store) == before
        return
    rows = audit.query(store, principals[role])
    assert {r["namespace"] for r in rows} == AUDIT_SCOPE[role]
    platform_actions = {r["action"] for r in rows if r["namespace"] is None}
    assert ("user.create" in platform_actions) == (None in AUDIT_SCOPE[role])


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(a.value for a in Action))
def test_can(template, action: str, role: str, scope: str) -> None:
    _, principals = template
    who = principals[role]
    expected = CAN_TABLE[(action, role, scope)]
    assert can(who, Action(action), NS[scope]) is expected
    if expected:
        require(who, Action(action), NS[scope])
    else:
        with pytest.raises(PermissionDenied) as caught:
            require(who, Action(action), NS[scope])
        assert action in str(caught.value)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(a.value for a in Action))
def test_can_without_namespace_only_for_platform_admins(template, action: str, role: str) -> None:
    _, principals = template
    assert can(principals[role], Action(action)) is (role in ("platform_admin", "operator"))


@pytest.mark.parametrize("action", list(Action))
def test_anonymous_can_do_nothing(action: Action) -> None:
    nobody = Principal.anonymous(ip="10.0.0.1")
    assert not can(nobody, action, "alpha")
    assert not can(nobody, action)


@pytest.mark.parametrize("role", ROLES)
def test_visible_namespaces(template, role: str) -> None:
    _, principals = template
    assert set(visible_namespaces(principals[role], ["alpha", "beta"])) == VISIBLE[role]


def test_membership_in_one_namespace_grants_nothing_in_another(template) -> None:
    """A namespace admin of alpha who is also a viewer of beta gets only viewer rights there."""
    _, principals = template
    both = replace(principals["namespace_admin"], memberships={"alpha": Role.NAMESPACE_ADMIN, "beta": Role.VIEWER})
    assert can(both, Action.MANAGE_MEMBERS, "alpha")
    assert not can(both, Action.MANAGE_MEMBERS, "beta")
    assert can(both, Action.VIEW, "beta")
    assert not can(both, Action.RUN, "beta")
    assert not can(both, Action.MANAGE_MEMBERS, "gamma")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(a.value for a in Action))
def test_can_somewhere_matches_the_own_namespace_column(template, action: str, role: str) -> None:
    """Navigation asks "may this user do X in any namespace?": the table's own-namespace column."""
    _, principals = template
    assert can_somewhere(principals[role], Action(action)) is CAN_TABLE[(action, role, "own")]
