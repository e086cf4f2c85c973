"""The LLM section of the System page: keys go in through a password field and come back masked only."""
from __future__ import annotations

import pytest

from core import audit, llm_settings, settings
from core.errors import PermissionDenied
from tests.app.conftest import ZH, login, new_app, texts
from tests.conftest import PASSWORD

SECRET = "sk-proj-Qw3rTy7uIo9pAs1dFg5hJk2lZx8cVb4nabcd"


def _admin_on_system():
    at = login(new_app(), "admin", PASSWORD)
    return at.switch_page("pages/system.py").run()


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def everything_shown(at) -> str:
    """Every element's content (its protobuf, data frames included), widget states and session state."""
    parts = [str(getattr(node, "proto", "")) for node in _walk(at._tree)]
    parts += [df.value.to_csv() for df in at.dataframe]
    parts += [str(state) for state in at._tree.get_widget_states().widgets]
    parts += [str(w.value) for w in at.text_input]  # typed into a form, not yet submitted
    parts.append(repr(at.session_state.to_dict()))
    return "\n".join(parts)


def _input(at, label: str):
    """The LLM form's inputs get fresh keys after each submit: find them by label."""
    return next(w for w in at.text_input if w.label == ZH[label])


def _save_key(at, name: str, value: str):
    _input(at, "llm.name").input(name)
    _input(at, "llm.value").input(value)
    return at.button(key="FormSubmitter:llm_key-" + ZH["llm.save_key"]).click().run()


def _key_table(at):
    return next(df.value for df in at.dataframe if ZH["llm.stored_value"] in df.value.columns)


def test_admin_sets_a_key_and_sees_it_masked_only(store, admin):
    at = _admin_on_system()
    assert ZH["llm.no_keys"] in texts(at)
    assert _input(at, "llm.value").proto.type == _input(at, "llm.value").proto.PASSWORD
    _input(at, "llm.value").input(SECRET)
    assert SECRET in everything_shown(at)  # the probe does see typed values
    _save_key(at, "OPENAI_API_KEY", SECRET)
    assert not at.exception
    assert "sk-…abcd" in everything_shown(at)
    assert ZH["llm.saved"].format(name="OPENAI_API_KEY") in texts(at)
    table = _key_table(at)
    assert list(table[ZH["llm.name"]]) == ["OPENAI_API_KEY"] and list(table[ZH["llm.stored_value"]]) == ["sk-…abcd"]
    assert _input(at, "llm.value").value == "" and _input(at, "llm.name").value == ""  # the form was cleared
    assert SECRET not in everything_shown(at) and SECRET[8:24] not in everything_shown(at)
    assert llm_settings.run_environment(store) == {"OPENAI_API_KEY": SECRET}
    at.run()  # and on the next render
    assert SECRET not in everything_shown(at)
    assert SECRET not in audit.export(audit.query(store, admin), "json")


def test_bad_name_says_why_and_keeps_nothing(store, admin):
    at = _admin_on_system()
    _save_key(at, "openai key", SECRET)
    assert ZH["llm.error.name"].split("{")[0] in texts(at)
    assert SECRET not in everything_shown(at)
    assert llm_settings.list_keys(store, admin) == []


def test_delete_needs_confirmation(store, admin):
    llm_settings.set_key(store, admin, "DEEPSEEK_API_KEY", SECRET)
    at = _admin_on_system()
    at.selectbox(key="llm_del_name").select("DEEPSEEK_API_KEY").run()
    at.button(key="llm_delete").click().run()
    assert ZH["llm.confirm_delete"].format(name="DEEPSEEK_API_KEY") in texts(at)
    assert len(llm_settings.list_keys(store, admin)) == 1  # nothing happened yet
    at.button(key="llm_delete_yes").click().run()
    assert not at.exception
    assert llm_settings.list_keys(store, admin) == []
    assert ZH["llm.deleted"].format(name="DEEPSEEK_API_KEY") in texts(at)


def test_unreadable_key_is_shown_as_such(store, admin):
    llm_settings.set_key(store, admin, "OPENAI_API_KEY", SECRET)
    (store.config.secrets_dir / llm_settings.KEY_FILE).unlink()
    at = _admin_on_system()
    assert not at.exception
    assert list(_key_table(at)[ZH["llm.stored_value"]]) == [ZH["llm.unreadable"]]


def test_default_model_and_api_base(store, admin):
    at = _admin_on_system()
    assert at.text_input(key="llm_model").value == "gpt-4o-mini" and at.text_input(key="llm_base").value == ""
    at.text_input(key="llm_model").input("openai/qwen-plus")
    at.text_input(key="llm_base").input(" http://127.0.0.1:8000/v1 ")
    at.button(key="FormSubmitter:llm_defaults-" + ZH["common.save"]).click().run()
    assert not at.exception
    assert llm_settings.run_defaults(store) == {"default_model": "openai/qwen-plus",
                                                "default_lm_api_base": "http://127.0.0.1:8000/v1"}
    at.text_input(key="llm_base").input("not a url")
    at.button(key="FormSubmitter:llm_defaults-" + ZH["common.save"]).click().run()
    assert ZH["error.api_base"].format(value="not a url") in texts(at)
    assert settings.overrides(store)["llm_api_base"] == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("who", ["nsadmin", "editor", "viewer"])
def test_others_cannot_reach_it_and_core_refuses(store, team, who):
    at = login(new_app(), who, PASSWORD)
    with pytest.raises(ValueError):  # not in their navigation at all
        at.switch_page("pages/system.py")
    with pytest.raises(PermissionDenied):
        llm_settings.set_key(store, team[who], "OPENAI_API_KEY", SECRET)
    with pytest.raises(PermissionDenied):
        llm_settings.list_keys(store, team[who])
