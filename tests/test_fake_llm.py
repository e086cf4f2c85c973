"""The fake OpenAI-compatible server: answers, fault injection, exact counters, and a real docetl run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fake_llm import FakeLLM, ServerConfig, digest, fake_string

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "topic": {"type": "string", "enum": ["animals", "finance", "other"]},
        "n_words": {"type": "integer"},
        "score": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object", "properties": {"lang": {"type": "string"}}, "required": ["lang"]},
    },
    "required": ["summary", "topic", "n_words", "score", "flag", "tags", "meta"],
    "additionalProperties": False,
}
SEND_OUTPUT = [{"type": "function", "function": {"name": "send_output", "parameters": SCHEMA}}]
FORCED = {"type": "function", "function": {"name": "send_output"}}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    """One server for the module; each test resets what it relies on (that is what /control is for)."""
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(llm: FakeLLM) -> None:
    llm.configure(**ServerConfig().to_json())
    llm.reset()


def post(llm: FakeLLM, path: str, body: dict[str, Any], timeout: float = 10) -> tuple[int, dict[str, Any], Any]:
    """POST JSON; returns (status, headers, parsed body) for success and HTTP errors alike."""
    request = urllib.request.Request(llm.base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def chat(llm: FakeLLM, text: str, **extra: Any) -> tuple[int, dict[str, Any], Any]:
    body = {"model": "fake", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": text}], **extra}
    return post(llm, "/chat/completions", body)


def test_tool_call_arguments_follow_the_schema(llm: FakeLLM) -> None:
    status, _, reply = chat(llm, "The cat sat on the mat.", tools=SEND_OUTPUT, tool_choice=FORCED)
    assert status == 200
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "send_output"
    args = json.loads(call["function"]["arguments"])
    assert set(args) == set(SCHEMA["properties"])
    assert args["summary"] == fake_string("The cat sat on the mat.", "summary")
    assert args["topic"] in ("animals", "finance", "other")
    assert isinstance(args["n_words"], int) and not isinstance(args["n_words"], bool)
    assert isinstance(args["score"], float) and isinstance(args["flag"], bool)
    assert len(args["tags"]) == 2 and all(isinstance(t, str) for t in args["tags"])
    assert isinstance(args["meta"]["lang"], str)
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert reply["model"] == "fake"


def test_answers_are_deterministic_and_differ_per_prompt(llm: FakeLLM) -> None:
    def args(text: str) -> dict[str, Any]:
        reply = chat(llm, text, tools=SEND_OUTPUT, tool_choice=FORCED)[2]
        return json.loads(reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])

    first, again, other = args("row one"), args("row one"), args("row two")
    assert first == again
    assert first["summary"] != other["summary"] and other["summary"].endswith("row two")
    assert digest("row one") != digest("row two")


def test_enum_pick_first(llm: FakeLLM) -> None:
    llm.configure(pick="first")
    for text in ("a", "b", "c", "d"):
        reply = chat(llm, text, tools=SEND_OUTPUT, tool_choice=FORCED)[2]
        args = json.loads(reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        assert args["topic"] == "animals" and args["flag"] is True


def test_gleaning_validator_never_asks_to_refine(llm: FakeLLM) -> None:
    tool = {"type": "function", "function": {"name": "should_refine_answer", "parameters": {
        "type": "object", "properties": {"should_refine": {"type": "boolean"}, "improvements": {"type": "string"}}}}}
    reply = chat(llm, "check this", tools=[tool], tool_choice="required")[2]
    call = reply["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "should_refine_answer"
    assert json.loads(call["arguments"]) == {"should_refine": False, "improvements": ""}


def test_structured_output_and_plain_text(llm: FakeLLM) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "structured_output", "schema": SCHEMA, "strict": True}}
    reply = chat(llm, "structured", response_format=fmt)[2]
    content = json.loads(reply["choices"][0]["message"]["content"])
    assert content["topic"] in SCHEMA["properties"]["topic"]["enum"] and isinstance(content["n_words"], int)
    reply = chat(llm, "just talk")[2]
    assert reply["choices"][0]["message"]["content"] == fake_string("just talk")
    assert llm.stats()["by_kind"] == {"response_format": 1, "text": 1}


def test_models_and_embeddings(llm: FakeLLM) -> None:
    with NO_PROXY.open(llm.base_url + "/models", timeout=10) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["fake"]
    _, _, reply = post(llm, "/embeddings", {"model": "emb", "input": ["x", "y", "x"]})
    vectors = [d["embedding"] for d in reply["data"]]
    assert vectors[0] == vectors[2] != vectors[1] and len(vectors[0]) == 16


def test_schedule_injects_429_and_500_in_order(llm: FakeLLM) -> None:
    llm.configure(schedule=["429", "500", "ok"], retry_after=2)
    status, headers, body = chat(llm, "x")
    assert status == 429 and headers["Retry-After"] == "2" and body["error"]["type"] == "rate_limit_error"
    assert chat(llm, "x")[0] == 500
    assert chat(llm, "x")[0] == 200
    assert chat(llm, "x")[0] == 200
    stats = llm.stats()
    assert stats["by_status"] == {"429": 1, "500": 1, "200": 2} and stats["schedule_left"] == 0


def test_rates_inject_errors(llm: FakeLLM) -> None:
    llm.configure(rate_429=1.0)
    assert {chat(llm, str(i))[0] for i in range(3)} == {429}
    llm.configure(rate_429=0.0, rate_500=0.5, seed=7)
    statuses = [chat(llm, str(i))[0] for i in range(40)]
    assert statuses.count(500) + statuses.count(200) == 40 and 5 < statuses.count(500) < 35


def test_timeout_holds_until_the_client_gives_up(llm: FakeLLM) -> None:
    llm.configure(schedule=["timeout"])
    with pytest.raises(OSError):  # socket.timeout / URLError: the server never answers
        post(llm, "/chat/completions", {"model": "fake", "messages": []}, timeout=0.5)
    deadline = time.monotonic() + 5
    while llm.stats()["in_flight"] and time.monotonic() < deadline:  # the server notices the hang-up
        time.sleep(0.05)
    assert llm.stats()["by_status"] == {"timeout": 1}
    assert chat(llm, "after")[0] == 200


@pytest.mark.parametrize("clients", [10, 64])
def test_latency_and_concurrency_are_counted_exactly(llm: FakeLLM, clients: int) -> None:
    llm.configure(latency=0.5)
    barrier = threading.Barrier(clients)
    statuses: list[int] = []

    def one(i: int) -> None:
        barrier.wait()
        statuses.append(chat(llm, f"row {i}", tools=SEND_OUTPUT, tool_choice=FORCED)[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = llm.stats()
    assert statuses == [200] * clients
    assert stats["max_in_flight"] == clients and stats["in_flight"] == 0 and stats["requests_total"] == clients
    assert stats["by_model"] == {"fake": clients}


def test_reset_zeroes_the_counters(llm: FakeLLM) -> None:
    chat(llm, "x")
    assert llm.stats()["requests_total"] == 1
    stats = llm.reset()
    assert stats["requests_total"] == 0 and stats["max_in_flight"] == 0 and stats["by_status"] == {}


def test_config_is_validated(llm: FakeLLM) -> None:
    with pytest.raises(RuntimeError, match="unknown config keys"):
        llm.configure(latncy=1)
    with pytest.raises(RuntimeError, match="schedule entries"):
        llm.configure(schedule=["418"])
    with pytest.raises(ValueError):
        FakeLLM(rate_429=0.8, rate_500=0.8)


def test_api_key_is_enforced_when_set(llm: FakeLLM) -> None:
    llm.configure(api_key="sk-test")
    assert chat(llm, "x")[0] == 401
    assert llm.stats()["by_status"] == {"401": 1}


# --------------------------------------------------------------------------------------------------
# A real docetl run against the server: one subprocess, so docetl's import (6-14 s) and its process-global
# state (litellm settings, the LLM cache path, os.environ rewrites) stay out of the test process.

DOCETL_RUN = r"""
import json, sys
import litellm.litellm_core_utils.default_encoding  # noqa: F401 - bundled tokenizer, before docetl
import litellm
litellm.suppress_debug_info = True
from docetl.runner import DSLRunner
DSLRunner(json.loads(sys.argv[1]), max_threads=8).load_run_save()
"""


def _docetl_env(home: Path) -> dict[str, str]:
    """Offline, headless, isolated: see /work/shared/docetl-notes.md, "Offline and headless pitfalls"."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("OPENAI_", "LITELLM_"))}
    env.update(DOCETL_HOME_DIR=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", USE_FRONTEND="true",
               OPENAI_API_KEY="sk-test", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _pipeline(tmp_path: Path, base_url: str) -> dict[str, Any]:
    rows = [{"id": i, "text": f"document number {i} about {'cats' if i % 2 else 'stocks'}"} for i in range(20)]
    data = tmp_path / "input.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "out"
    return {
        "default_model": "openai/fake",
        "default_lm_api_base": base_url,
        "bypass_cache": True,
        "datasets": {"docs": {"type": "file", "path": str(data)}},
        "operations": [{
            "name": "summarize", "type": "map",
            "prompt": "Summarize: {{ input.text }}",
            "output": {"schema": {"summary": "string", "topic": "enum[animals, finance, other]", "n_words": "int"}},
        }],
        "pipeline": {
            "steps": [{"name": "main", "input": "docs", "operations": ["summarize"]}],
            "output": {"type": "file", "path": str(out / "output.json"), "intermediate_dir": str(out / "inter")},
        },
    }


@pytest.mark.timeout(300)
def test_docetl_map_runs_against_the_fake_server(llm: FakeLLM, tmp_path: Path) -> None:
    llm.configure(latency=0.05)
    config = _pipeline(tmp_path, llm.base_url)
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run([sys.executable, "-c", DOCETL_RUN, json.dumps(config)], cwd=tmp_path,
                         env=_docetl_env(home), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    rows = json.loads(Path(config["pipeline"]["output"]["path"]).read_text())
    assert sorted(r["id"] for r in rows) == list(range(20))
    for row in rows:
        assert row["summary"].endswith(row["text"][:20]) or row["text"][:20] in row["summary"]
        assert row["topic"] in ("animals", "finance", "other")
        assert isinstance(row["n_words"], int) and not isinstance(row["n_words"], bool)
    assert len({r["summary"] for r in rows}) == 20

    stats = llm.stats()
    assert stats["requests_total"] == 20 and stats["by_status"] == {"200": 20}
    assert stats["by_path"] == {"/v1/chat/completions": 20} and stats["by_kind"] == {"send_output": 20}
    assert stats["by_model"] == {"fake": 20}  # litellm strips the "openai/" prefix
