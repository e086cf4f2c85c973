"""LLM settings: API keys stored encrypted, shown masked, audited by name only, lent to runs in plaintext;
a lost or replaced platform key says which keys to enter again; platform admins only."""
from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from cryptography.fernet import Fernet

from core import audit, llm_settings, settings
from core.config import Config
from core.errors import NotFound, PermissionDenied, ValidationError, WorkbenchError
from core.llm_settings import SecretUnreadableError
from core.principal import Principal
from core.settings import open_store

SECRET = "sk-proj-Zq81mW0LkT4vX9rB2nC7aE5dF3gH6jabcd"
OTHER = "sk-ant-api03-Yy72pQ0rS1tU9vW8xZ3aB4cD5eF6ghwxyz"
NOW = datetime(2025, 5, 1, 8, 30, tzinfo=timezone.utc)


def key_file(store):
    return store.config.secrets_dir / llm_settings.KEY_FILE


def stored_rows(store):
    return store.execute("SELECT * FROM llm_secrets ORDER BY name")


# -- storing, listing, masking ---------------------------------------------------------------------------
def test_set_list_and_run_environment(store, admin):
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET, now=NOW)
    llm_settings.set_key(store, admin, "ANTHROPIC_API_KEY", f"  {OTHER}\n")  # pasted with whitespace
    rows = llm_settings.list_keys(store, admin)
    assert [r["name"] for r in rows] == ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
    openai = rows[1]
    assert openai == {"name": "OPENAI_API_KEY", "masked": "sk-…abcd", "readable": True, "updated_at": NOW,
                      "updated_by": "admin"}
    assert rows[0]["masked"] == "sk-…wxyz"
    assert SECRET not in repr(rows) and OTHER not in repr(rows)
    env = llm_settings.run_environment(store)
    assert env == {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": OTHER}
    assert SECRET not in repr(env) and SECRET not in str(env) and "OPENAI_API_KEY" in repr(env)
    assert {**os.environ, **env}["OPENAI_API_KEY"] == SECRET  # usable as an environment


def test_replacing_a_key_keeps_one_row(store, admin):
    llm_settings.set_key(store, admin, "DEEPSEEK_API_KEY", SECRET)
    llm_settings.set_key(store, admin, "DEEPSEEK_API_KEY", OTHER)
    assert len(stored_rows(store)) == 1
    assert llm_settings.run_environment(store) == {"DEEPSEEK_API_KEY": OTHER}
    details = [json.loads(r["detail"]) for r in audit.query(store, admin, action="llm.key_set")]
    assert details == [{"replaced": True}, {"replaced": False}]


def test_delete_key(store, admin):
    llm_settings.set_key(store, admin, "GEMINI_API_KEY", SECRET)
    llm_settings.delete_key(store, admin, "GEMINI_API_KEY")
    assert llm_settings.list_keys(store, admin) == [] and llm_settings.run_environment(store) == {}
    with pytest.raises(NotFound) as caught:
        llm_settings.delete_key(store, admin, "GEMINI_API_KEY")
    assert "GEMINI_API_KEY" in str(caught.value)


@pytest.mark.parametrize("value, masked", [
    ("sk-abcdefghijklmnop1234", "sk-…1234"),      # a short prefix and the last four
    ("abcdefghijklmnopqrstuvwx", "…uvwx"),         # no prefix to show
    ("sk-abcdefgh1234", "…1234"),                  # shorter than 20: no prefix
    ("short-key", "…"),                            # shorter than 12: nothing at all
    ("http://127.0.0.1:8000/v1", "…0/v1"),
])
def test_mask_never_shows_the_secret(value, masked):
    assert llm_settings.mask(value) == masked
    assert len(masked.replace("…", "")) <= len(value) // 2


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY", "GEMINI_API_KEY",
                                  "DEEPSEEK_API_KEY", "DASHSCOPE_API_KEY", "OPENAI_API_BASE", "MY_GATEWAY2_API_BASE",
                                  " OPENAI_API_KEY "])
def test_valid_names(store, admin, name):
    llm_settings.set_key(store, admin, name, SECRET)
    assert [r["name"] for r in llm_settings.list_keys(store, admin)] == [name.strip()]


@pytest.mark.parametrize("name", ["", "openai_api_key", "PATH", "OPENAI_KEY", "1_API_KEY", "_API_KEY", "OPENAI-API-KEY",
                                  "OPENAI_API_KEY\nX", "LD_PRELOAD", "API_KEY", "A" * 60 + "_API_KEY", SECRET])
def test_invalid_names_are_refused_without_echo(store, admin, name):
    with pytest.raises(ValidationError) as caught:
        llm_settings.set_key(store, admin, name, SECRET)
    assert caught.value.key == "llm.error.name"
    assert "OPENAI_API_KEY" in str(caught.value)  # says what a good name looks like
    with pytest.raises(ValidationError) as other:
        llm_settings.check_name("lower_case_api_key")
    assert str(caught.value) == str(other.value)  # never echoed: it may be a key pasted into the wrong field
    assert stored_rows(store) == []


@pytest.mark.parametrize("value, key", [("", "llm.error.value_empty"), ("   ", "llm.error.value_empty"),
                                        (SECRET + "\n" + OTHER, "llm.error.value_bad"),
                                        ("sk-\x00abc", "llm.error.value_bad"),
                                        ("x" * 5000, "llm.error.value_bad")])
def test_invalid_values_are_refused_without_echo(store, admin, value, key):
    with pytest.raises(ValidationError) as caught:
        llm_settings.set_key(store, admin, "OPENAI_API_KEY", value)
    assert caught.value.key == key and "OPENAI_API_KEY" in str(caught.value)
    assert SECRET not in str(caught.value) and "x" * 20 not in str(caught.value)
    assert SECRET not in repr(caught.value.params)
    assert stored_rows(store) == []


# -- permissions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("who", ["nsadmin", "editor", "viewer", "outsider"])
def test_only_platform_admins_manage_keys(store, team, who):
    principal = team[who]
    llm_settings.set_key(store, team["platform_admin"], "OPENAI_API_KEY", SECRET)
    before = stored_rows(store)
    for call in (lambda: llm_settings.set_key(store, principal, "OPENAI_API_KEY", OTHER),
                 lambda: llm_settings.set_key(store, principal, "bad name", ""),  # permission comes first
                 lambda: llm_settings.delete_key(store, principal, "OPENAI_API_KEY"),
                 lambda: llm_settings.list_keys(store, principal)):
        with pytest.raises(PermissionDenied) as caught:
            call()
        assert "manage_llm_settings" in str(caught.value) and who in str(caught.value)
    assert stored_rows(store) == before


def test_temporary_password_and_anonymous_are_refused(store, admin):
    for principal in (replace(admin, must_change_password=True), Principal.anonymous()):
        with pytest.raises(PermissionDenied):
            llm_settings.set_key(store, principal, "OPENAI_API_KEY", SECRET)
    assert stored_rows(store) == []


def test_operator_may_manage_keys(store):
    llm_settings.set_key(store, Principal.operator(), "OPENAI_API_KEY", SECRET)
    assert llm_settings.list_keys(store, Principal.operator())[0]["updated_by"] == "local-operator"


# -- audit, and where the plaintext must never be -------------------------------------------------------
def test_changes_are_audited_by_name_only(store, admin):
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET, now=NOW)
    llm_settings.delete_key(store, admin, "OPENAI_API_KEY", now=NOW)
    rows = audit.query(store, admin, action="llm.*")
    assert [(r["action"], r["resource_type"], r["resource_id"], r["actor_username"], r["success"]) for r in rows] \
        == [("llm.key_delete", "llm_key", "OPENAI_API_KEY", "admin", True),
            ("llm.key_set", "llm_key", "OPENAI_API_KEY", "admin", True)]
    text = audit.export(rows, "json") + audit.export(rows, "csv")
    assert SECRET not in text and "abcd" not in text  # not even the masked form


def test_plaintext_is_nowhere_on_disk_in_audit_or_logs(store, admin, caplog):
    caplog.set_level(logging.DEBUG)
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    llm_settings.set_key(store, admin, "OPENAI_API_BASE", "https://gateway.example.com/v1")
    llm_settings.list_keys(store, admin)
    llm_settings.run_environment(store)
    llm_settings.delete_key(store, admin, "OPENAI_API_BASE")
    platform = store.config.platform_dir
    files = [p for p in platform.rglob("*") if p.is_file()]
    assert store.path in files and key_file(store) in files
    for path in files:  # the store, its WAL and backups, the lock files, the key files
        data = path.read_bytes()
        assert SECRET.encode() not in data and SECRET[8:24].encode() not in data, path
    rows = audit.query(store, admin)
    for fmt in ("csv", "json"):
        assert SECRET not in audit.export(rows, fmt)
    assert SECRET not in caplog.text
    ciphertext = stored_rows(store)[0]["ciphertext"]
    assert SECRET not in ciphertext and Fernet(key_file(store).read_bytes()).decrypt(ciphertext.encode()).decode() \
        == SECRET


def test_key_file_is_owner_only_and_made_only_when_needed(store, admin):
    assert llm_settings.list_keys(store, admin) == [] and llm_settings.run_environment(store) == {}
    assert not key_file(store).exists()  # reading nothing creates nothing
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    assert stat.S_IMODE(key_file(store).stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file(store).parent.stat().st_mode) == 0o700
    Fernet(key_file(store).read_bytes())  # a real Fernet key
    assert (store.config.secrets_dir / "cookie_key") != key_file(store)


# -- a lost or replaced platform key -------------------------------------------------------------------------
def _lose_key(store, how):
    if how == "lost":
        key_file(store).unlink()
    else:  # replaced by another valid key (say, another machine's)
        key_file(store).write_text(Fernet.generate_key().decode())


@pytest.mark.parametrize("how", ["lost", "replaced"])
def test_lost_key_file_names_the_keys_to_enter_again(store, admin, how):
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    llm_settings.set_key(store, admin, "DEEPSEEK_API_KEY", OTHER)
    _lose_key(store, how)
    rows = llm_settings.list_keys(store, admin)
    assert [(r["name"], r["readable"], r["masked"]) for r in rows] == [
        ("DEEPSEEK_API_KEY", False, None), ("OPENAI_API_KEY", False, None)]
    with pytest.raises(SecretUnreadableError) as caught:
        llm_settings.run_environment(store)
    assert isinstance(caught.value, WorkbenchError)
    message = str(caught.value)
    assert "DEEPSEEK_API_KEY, OPENAI_API_KEY" in message and "again" in message
    assert "OPENAI_API_KEY" in caught.value.message("zh_CN")
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no cryptography traceback
    # entering one again repairs that one only
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    assert [r["readable"] for r in llm_settings.list_keys(store, admin)] == [False, True]
    with pytest.raises(SecretUnreadableError, match="DEEPSEEK_API_KEY"):
        llm_settings.run_environment(store)
    llm_settings.set_key(store, admin, "DEEPSEEK_API_KEY", OTHER)
    assert llm_settings.run_environment(store) == {"OPENAI_API_KEY": SECRET, "DEEPSEEK_API_KEY": OTHER}


def test_damaged_key_file_is_a_clear_error(store, admin):
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    key_file(store).write_text("not a key")
    assert llm_settings.list_keys(store, admin)[0]["readable"] is False
    with pytest.raises(SecretUnreadableError, match="OPENAI_API_KEY"):
        llm_settings.run_environment(store)
    with pytest.raises(ValidationError) as caught:  # nothing can be encrypted with it either
        llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    assert caught.value.key == "llm.error.key_file" and str(key_file(store)) in str(caught.value)
    key_file(store).unlink()  # what the message says to do
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    assert llm_settings.run_environment(store) == {"OPENAI_API_KEY": SECRET}


# -- the default model and API base (ordinary admin settings) ---------------------------------------------
def test_run_defaults_follow_settings(store, admin):
    assert llm_settings.run_defaults(store) == {"default_model": "gpt-4o-mini", "default_lm_api_base": None}
    settings.update(store, admin, "llm_default_model", "openai/qwen-plus")
    settings.update(store, admin, "llm_api_base", "http://127.0.0.1:8000/v1")
    assert llm_settings.run_defaults(store) == {"default_model": "openai/qwen-plus",
                                                "default_lm_api_base": "http://127.0.0.1:8000/v1"}
    settings.update(store, admin, "llm_api_base", "")
    assert llm_settings.run_defaults(store)["default_lm_api_base"] is None


def test_defaults_from_the_environment(home):
    config = Config.from_env({"DOCETL_HOME_DIR": str(home), "DOCETL_WB_LLM_DEFAULT_MODEL": "deepseek/deepseek-chat",
                              "DOCETL_WB_LLM_API_BASE": "https://api.deepseek.com"})
    assert llm_settings.run_defaults(open_store(config)) == {"default_model": "deepseek/deepseek-chat",
                                                             "default_lm_api_base": "https://api.deepseek.com"}


@pytest.mark.parametrize("key, value, error", [
    ("llm_api_base", "ftp://host/v1", "error.api_base"),
    ("llm_api_base", "localhost:8000", "error.api_base"),
    ("llm_api_base", "http://", "error.api_base"),
    ("llm_api_base", "http://host:99999/v1", "error.api_base"),
    ("llm_default_model", "", "error.model_name"),
    ("llm_default_model", "gpt 4o", "error.model_name"),
])
def test_bad_defaults_are_refused(store, admin, key, value, error):
    with pytest.raises(ValidationError) as caught:
        settings.update(store, admin, key, value)
    assert caught.value.key == error
    assert key not in settings.overrides(store)


def test_api_base_with_credentials_is_refused_without_echo(store, admin):
    with pytest.raises(ValidationError) as caught:
        settings.update(store, admin, "llm_api_base", f"https://user:{SECRET}@gateway.example.com/v1")
    assert caught.value.key == "error.api_base_credentials" and SECRET not in str(caught.value)
    assert SECRET not in audit.export(audit.query(store, admin), "json")


def test_settings_are_admin_only(store, team):
    with pytest.raises(PermissionDenied):
        settings.update(store, team["editor"], "llm_api_base", "http://127.0.0.1:1/v1")
