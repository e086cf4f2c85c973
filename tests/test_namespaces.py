"""Namespaces (the isolation boundary) and memberships with a role in each."""
from __future__ import annotations

import json

import pytest

from conftest import PASSWORD
from core import audit, auth, namespaces, users
from core.config import NAMESPACE_SUBDIRS
from core.errors import NotFound, PermissionDenied, ValidationError
from core.principal import Principal, Role
from core.store import Store


def relogin(store: Store, name: str) -> Principal:
    return auth.authenticate(store, name, PASSWORD).principal


def names(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows]


def test_create_makes_the_row_the_folder_tree_and_an_audit_row(store: Store, admin: Principal) -> None:
    row = namespaces.create(store, admin, "sales-cn", "Sales team (China)")
    assert (row["name"], row["description"], row["created_by"]) == ("sales-cn", "Sales team (China)", "admin")
    folder = store.config.docetl_dir / "sales-cn"
    for sub in NAMESPACE_SUBDIRS:
        assert (folder / sub).is_dir(), sub
    entry = audit.query(store, admin, action="namespace.create")[0]
    assert (entry["actor_username"], entry["namespace"], entry["resource_id"]) == ("admin", "sales-cn", "sales-cn")


@pytest.mark.parametrize("name", ["", "Upper", "_platform", "-dash", "has space", "../escape", "a/b", ".", "x" * 64,
                                  "名字"])
def test_invalid_names_are_refused_and_create_nothing(store: Store, admin: Principal, name: str) -> None:
    before = sorted(p.name for p in store.config.docetl_dir.iterdir())
    with pytest.raises(ValidationError) as caught:
        namespaces.create(store, admin, name)
    assert caught.value.key == "namespace.error.name"
    assert sorted(p.name for p in store.config.docetl_dir.iterdir()) == before
    assert namespaces.list_visible(store, admin) == []


def test_duplicate_names_are_refused(store: Store, admin: Principal) -> None:
    namespaces.create(store, admin, "alpha", "first")
    with pytest.raises(ValidationError) as caught:
        namespaces.create(store, admin, "alpha", "second")
    assert caught.value.key == "namespace.error.exists"
    assert [r["description"] for r in namespaces.list_visible(store, admin)] == ["first"]
    assert len(audit.query(store, admin, action="namespace.create")) == 1


def test_create_keeps_files_already_in_the_folder(store: Store, admin: Principal) -> None:
    """Seed §6.4: a namespace folder may already hold files from docetl; creating it keeps them."""
    existing = store.config.docetl_dir / "legacy" / "files" / "old.json"
    existing.parent.mkdir(parents=True)
    existing.write_text("[]")
    namespaces.create(store, admin, "legacy")
    assert existing.read_text() == "[]"


def test_grant_change_and_revoke(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.create(store, admin, "dana", PASSWORD)
    namespaces.add_member(store, admin, "beta", "Dana", "viewer")
    assert relogin(store, "dana").role_in("beta") is Role.VIEWER
    namespaces.add_member(store, admin, "beta", "dana", Role.EDITOR)
    assert relogin(store, "dana").memberships == {"beta": Role.EDITOR}
    members = {r["username"]: r["role"] for r in namespaces.list_members(store, admin, "beta")}
    assert members == {"dana": "editor", "outsider": "editor"}
    namespaces.remove_member(store, admin, "beta", "dana")
    dana = relogin(store, "dana")
    assert dana.memberships == {}
    assert namespaces.list_visible(store, dana) == []
    details = [(r["action"], json.loads(r["detail"])) for r in
               reversed(audit.query(store, admin, action="member.*", namespace="beta")) if r["resource_id"] == "dana"]
    assert details == [("member.grant", {"before": None, "after": "viewer"}),
                       ("member.grant", {"before": "viewer", "after": "editor"}),
                       ("member.revoke", {"before": "editor"})]


def test_namespace_admin_manages_members_of_own_namespace(store: Store, team) -> None:
    nsadmin = team["nsadmin"]
    namespaces.add_member(store, nsadmin, "alpha", "outsider", "namespace_admin")
    assert relogin(store, "outsider").memberships == {"alpha": Role.NAMESPACE_ADMIN, "beta": Role.EDITOR}
    namespaces.remove_member(store, nsadmin, "alpha", "viewer")
    assert relogin(store, "viewer").memberships == {}
    with pytest.raises(PermissionDenied):
        namespaces.add_member(store, nsadmin, "beta", "nsadmin", "namespace_admin")  # no self-service elsewhere
    assert "beta" not in relogin(store, "nsadmin").memberships


def test_invalid_role_unknown_user_or_namespace(store: Store, team) -> None:
    admin = team["platform_admin"]
    with pytest.raises(ValidationError) as caught:
        namespaces.add_member(store, admin, "alpha", "outsider", "owner")
    assert caught.value.key == "namespace.error.role"
    assert "viewer" in str(caught.value)
    with pytest.raises(NotFound) as caught:
        namespaces.add_member(store, admin, "alpha", "ghost", "viewer")
    assert caught.value.key == "user.error.not_found"
    with pytest.raises(NotFound) as caught:
        namespaces.add_member(store, admin, "gamma", "outsider", "viewer")
    assert caught.value.key == "namespace.error.not_found"
    with pytest.raises(NotFound) as caught:
        namespaces.remove_member(store, admin, "alpha", "outsider")
    assert caught.value.key == "namespace.error.not_member"
    with pytest.raises(NotFound):
        namespaces.remove_member(store, admin, "alpha", "ghost")
    with pytest.raises(NotFound):
        namespaces.list_members(store, admin, "gamma")
    assert relogin(store, "outsider").memberships == {"beta": Role.EDITOR}


def test_outsiders_cannot_probe_for_namespaces(store: Store, team) -> None:
    """A non-member gets the same refusal for an existing and a missing namespace."""
    with pytest.raises(PermissionDenied):
        namespaces.list_members(store, team["outsider"], "alpha")
    with pytest.raises(PermissionDenied):
        namespaces.list_members(store, team["outsider"], "does-not-exist")


def test_list_visible_with_roles(store: Store, team) -> None:
    admin = team["platform_admin"]
    namespaces.add_member(store, admin, "beta", "editor", "viewer")
    editor = relogin(store, "editor")
    assert [(r["name"], r["role"]) for r in namespaces.list_visible(store, editor)] == [
        ("alpha", "editor"), ("beta", "viewer")]
    assert [(r["name"], r["role"]) for r in namespaces.list_visible(store, admin)] == [
        ("alpha", "platform_admin"), ("beta", "platform_admin")]
    assert names(namespaces.list_visible(store, Principal.operator())) == ["alpha", "beta"]


def test_removing_membership_of_a_disabled_user(store: Store, team) -> None:
    admin = team["platform_admin"]
    users.set_active(store, admin, "viewer", False)
    namespaces.remove_member(store, admin, "alpha", "viewer")
    assert "viewer" not in {r["username"] for r in namespaces.list_members(store, admin, "alpha")}


def test_private_folders_and_reserved_names(store, admin) -> None:
    import stat

    from core.errors import ValidationError

    namespaces.create(store, admin, "private")
    assert stat.S_IMODE((store.config.docetl_dir / "private").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.config.platform_dir.stat().st_mode) == 0o700
    with pytest.raises(ValidationError):
        namespaces.create(store, admin, "cache")  # docetl's own cache folder
