"""A local OpenAI-compatible LLM server for the test suite and the benchmarks.

Why it exists: docetl (through litellm) talks to a real HTTP endpoint, and the workbench must be tested
for what only shows over real HTTP with real concurrency (rate limits, retries, timeouts, cancellation,
row accounting) without reaching the internet or paying for tokens. The server runs in its own process
so that its threads never compete with the code under test for the GIL, and so that a hung request in the
server can never hang the test process.

Start it from Python (the usual way)::

    from tests.fake_llm import FakeLLM

    with FakeLLM(latency=0.05) as llm:      # pipeline: default_model "openai/fake",
        llm.base_url                        #           default_lm_api_base llm.base_url
        llm.configure(schedule=["429", "ok"])
        llm.stats()["max_in_flight"]
        llm.reset()

or by hand: ``python tests/fake_llm.py --port 8765 --latency 0.05 --rate-429 0.1`` (also
``python -m tests.fake_llm ...`` from the project root). The first stdout line is
``FAKE_LLM_READY {"port": ..., "base_url": ...}``; nothing else is ever written to stdout.

Endpoints (``/v1`` may be omitted from the API paths):

- ``POST /v1/chat/completions``: a forced tool call (docetl's ``send_output``; ``should_refine_answer`` is
  always ``{"should_refine": false, "improvements": ""}``), JSON content for ``response_format``, or text.
  Every value is derived from the last user message, so each row gets its own deterministic answer.
- ``POST /v1/embeddings``: deterministic unit vectors derived from each input text.
- ``GET /v1/models``: the configured model ids.
- ``GET /control/stats``, ``POST /control/reset``: request counters.
- ``GET /control/config``, ``POST /control/config``: fault injection and latency, changeable at run time.
- ``GET /control/requests``: the last ``keep_requests`` request bodies, to see what a client really sent.
- ``GET /health``.

Fault injection applies to every ``/v1`` POST: an exact ``schedule`` of outcomes is consumed first, one per
request, then the ``rate_*`` fractions are drawn from a seeded generator. A ``timeout`` outcome holds the
request without answering until the client disconnects or ``hang`` seconds pass, then drops the connection.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

CREATED = 1700000000
READY_PREFIX = "FAKE_LLM_READY "
OUTCOMES = ("ok", "429", "500", "timeout")
PICKS = ("hash", "first")
SHOULD_REFINE_TOOL = "should_refine_answer"
SNIPPET_CHARS = 60


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ServerConfig:
    """What the server does; replaced as a whole on each change so a request sees one consistent config.

    latency/jitter: seconds slept before every /v1 POST outcome (jitter adds uniform 0..jitter).
    rate_429/rate_500/rate_timeout: fractions of /v1 POSTs that fail that way once `schedule` is empty.
    schedule: exact outcomes ("ok", "429", "500", "timeout") consumed one per /v1 POST, before the rates.
    retry_after: the Retry-After header (seconds) of a 429.
    hang: seconds a "timeout" request is held (or less, if the client gives up first).
    seed: seeds the generator behind the rates and the jitter, so a run is reproducible.
    pick: how enums and booleans are chosen: "hash" (from the prompt) or "first" (first member, true).
    models: ids listed by GET /v1/models (any model is accepted anyway).
    api_key: when set, requests without "Authorization: Bearer <api_key>" get a 401.
    keep_requests: how many recent request bodies GET /control/requests keeps.
    """

    latency: float = 0.0
    jitter: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    schedule: tuple[str, ...] = ()
    retry_after: float = 1.0
    hang: float = 3600.0
    seed: int = 0
    pick: str = "hash"
    models: tuple[str, ...] = ("fake",)
    api_key: str | None = None
    keep_requests: int = 50

    def __post_init__(self) -> None:
        """Coerce JSON-ish input (lists, ints for floats) and refuse nonsense early, at start or on change."""
        object.__setattr__(self, "schedule", tuple(str(s) for s in self.schedule))
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))
        for name in ("latency", "jitter", "rate_429", "rate_500", "rate_timeout", "retry_after", "hang"):
            value = float(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        if self.rate_429 + self.rate_500 + self.rate_timeout > 1:
            raise ValueError("rate_429 + rate_500 + rate_timeout must be <= 1")
        bad = [s for s in self.schedule if s not in OUTCOMES]
        if bad:
            raise ValueError(f"schedule entries must be among {OUTCOMES}, got {bad}")
        if self.pick not in PICKS:
            raise ValueError(f"pick must be one of {PICKS}, got {self.pick!r}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "keep_requests", int(self.keep_requests))

    def updated(self, changes: dict[str, Any]) -> ServerConfig:
        """A copy with `changes` applied; unknown keys are an error so a typo does not silently do nothing."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return ServerConfig(**{**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------------
# Deterministic answers (pure functions: tests may call them to predict what the server says)


def digest(text: str) -> str:
    """Hex sha256: the seed of every fake value, so equal prompts get equal answers across runs."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of typed parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: Iterable[dict[str, Any]]) -> str:
    """The last user message: in docetl it is the rendered prompt, i.e. what identifies the row."""
    texts = [message_text(m) for m in messages if m.get("role") == "user"]
    return texts[-1] if texts else ""


def snippet(text: str) -> str:
    """The start of the prompt, whitespace collapsed, so a human (or a test) can tell rows apart."""
    return " ".join(text.split())[:SNIPPET_CHARS]


def fake_string(text: str, path: str = "") -> str:
    """A string field's value: 8 hex chars of digest(path|text), a space, then the prompt's snippet."""
    return f"{digest(path + '|' + text)[:8]} {snippet(text)}".rstrip()


def _number_seed(text: str, path: str) -> int:
    return int(digest("#" + path + "|" + text)[:8], 16)


def _fake_integer(schema: dict[str, Any], text: str, path: str) -> int:
    low = int(schema.get("minimum", 0))
    high = int(schema.get("maximum", low + 99))
    return low + _number_seed(text, path) % (high - low + 1)


def _fake_number(schema: dict[str, Any], text: str, path: str) -> float:
    low = float(schema.get("minimum", 0.0))
    high = float(schema.get("maximum", low + 100.0))
    return round(low + (_number_seed(text, path) % 10001) / 10000 * (high - low), 2)


def _pick_member(members: list[Any], text: str, path: str, pick: str) -> Any:
    return members[0] if pick == "first" else members[_number_seed(text, path) % len(members)]


def _schema_type(schema: dict[str, Any]) -> str:
    """The JSON-schema type, resolving the forms docetl/pydantic emit (type lists, anyOf, bare enums)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind:
        return str(kind)
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def fake_value(schema: dict[str, Any], text: str, path: str = "", pick: str = "hash") -> Any:
    """A value valid for a JSON schema, derived from `text` (the prompt) and `path` (where it sits)."""
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return fake_value(options[0], text, path, pick)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return _pick_member(list(schema["enum"]), text, path, pick)
    kind = _schema_type(schema)
    if kind == "object":
        props = schema.get("properties", {})
        return {k: fake_value(s, text, f"{path}.{k}" if path else k, pick) for k, s in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), min(2, int(schema.get("maxItems", 2))))
        return [fake_value(schema.get("items", {}), text, f"{path}[{i}]", pick) for i in range(count)]
    if kind == "integer":
        return _fake_integer(schema, text, path)
    if kind == "number":
        return _fake_number(schema, text, path)
    if kind == "boolean":
        return True if pick == "first" else _number_seed(text, path) % 2 == 0
    if kind == "null":
        return None
    return fake_string(text, path)


def tool_arguments(tool: dict[str, Any], text: str, pick: str = "hash") -> dict[str, Any]:
    """The arguments of a call to `tool`; gleaning's validator always says the answer is fine."""
    function = tool.get("function", tool)
    if function.get("name") == SHOULD_REFINE_TOOL:
        return {"should_refine": False, "improvements": ""}
    return fake_value(function.get("parameters") or {"type": "object"}, text, "", pick)


def choose_tool(tools: list[dict[str, Any]] | None, tool_choice: Any) -> dict[str, Any] | None:
    """The tool to call: the one named by tool_choice, else the first ("auto"/"required"), never for "none"."""
    functions = [t for t in tools or [] if isinstance(t, dict) and t.get("type", "function") == "function"]
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        named = [t for t in functions if (t.get("function") or {}).get("name") == wanted]
        if named:
            return named[0]
    return functions[0]


def approx_tokens(text: str) -> int:
    """Deterministic token count (about 4 characters a token, as tokenizers average on English)."""
    return max(1, len(text) // 4)


def usage_for(messages: list[dict[str, Any]], outputs: list[str]) -> dict[str, int]:
    """An OpenAI `usage` block: docetl's token and cost accounting reads it."""
    prompt = sum(approx_tokens(message_text(m)) + 4 for m in messages)
    completion = sum(approx_tokens(o) for o in outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _choice_message(body: dict[str, Any], text: str, index: int, pick: str) -> tuple[dict[str, Any], str, str]:
    """One choice's message, its finish reason, and its kind (tool name, "response_format" or "text")."""
    tool = choose_tool(body.get("tools"), body.get("tool_choice"))
    if tool is not None:
        name = tool["function"].get("name", "")
        arguments = json.dumps(tool_arguments(tool, text, pick))
        call = {"id": f"call_{index + 1}", "type": "function", "function": {"name": name, "arguments": arguments}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls", name
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        content = json.dumps(fake_value(schema, text, "", pick))
        return {"role": "assistant", "content": content}, "stop", "response_format"
    if fmt.get("type") == "json_object":
        content = json.dumps({"answer": fake_string(text)})
        return {"role": "assistant", "content": content}, "stop", "response_format"
    return {"role": "assistant", "content": fake_string(text)}, "stop", "text"


def chat_completion(body: dict[str, Any], completion_id: str, pick: str = "hash") -> tuple[dict[str, Any], str]:
    """The full /v1/chat/completions reply and its kind; choice i > 0 (for `n`) answers prompt + "#i"."""
    messages = body.get("messages") or []
    text = last_user_text(messages)
    choices, outputs, kind = [], [], "text"
    for i in range(max(1, int(body.get("n") or 1))):
        message, finish, kind = _choice_message(body, text if i == 0 else f"{text}#{i}", i, pick)
        choices.append({"index": i, "finish_reason": finish, "message": message, "logprobs": None})
        calls = message.get("tool_calls") or []
        outputs.append(message.get("content") or "".join(c["function"]["arguments"] for c in calls))
    reply = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": body.get("model", ""),
        "choices": choices,
        "usage": usage_for(messages, outputs),
    }
    return reply, kind


def fake_embedding(text: str, dimensions: int = 16) -> list[float]:
    """A unit vector from the text's digest: equal texts are identical, different ones differ."""
    raw = b"".join(hashlib.sha256(f"{i}|{text}".encode()).digest() for i in range(dimensions // 32 + 1))
    vector = [(b - 127.5) / 127.5 for b in raw[:dimensions]]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vector]


def embeddings_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The /v1/embeddings reply (docetl's resolve and cluster operations embed)."""
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
    dims = int(body.get("dimensions") or 16)
    data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t, dims)} for i, t in enumerate(texts)]
    tokens = sum(approx_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": body.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-shaped error, so litellm maps it to its RateLimitError/InternalServerError/etc."""
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_error", 500: "server_error"}
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": code}}


# --------------------------------------------------------------------------------------------------
# Server state


class Stats:
    """Request counters. One lock guards everything, so in_flight and max_in_flight are exact."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._zero()

    def _zero(self) -> None:
        self._total = 0
        self._max_in_flight = self._in_flight
        self._by_status: Counter[str] = Counter()
        self._by_model: Counter[str] = Counter()
        self._by_path: Counter[str] = Counter()
        self._by_kind: Counter[str] = Counter()

    def begin(self, path: str, model: str) -> None:
        """Count a request on arrival, before any latency, so in_flight covers the whole wait."""
        with self._lock:
            self._total += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._by_path[path] += 1
            self._by_model[model] += 1

    def end(self, status: str, kind: str | None) -> None:
        """Count a request's outcome as its reply is about to be written (or its connection dropped)."""
        with self._lock:
            self._in_flight -= 1
            self._by_status[status] += 1
            if kind:
                self._by_kind[kind] += 1

    def reset(self) -> None:
        """Zero the counters; requests still in flight stay counted in in_flight (else it goes negative)."""
        with self._lock:
            self._zero()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self._total,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "by_status": dict(self._by_status),
                "by_model": dict(self._by_model),
                "by_path": dict(self._by_path),
                "by_kind": dict(self._by_kind),
            }


class ServerState:
    """Config, counters and the fault schedule shared by all handler threads."""

    def __init__(self, config: ServerConfig, verbose: bool = False) -> None:
        self._lock = threading.Lock()
        self.verbose = verbose
        self.stats = Stats()
        self._ids = 0
        self._apply(config)

    def _apply(self, config: ServerConfig) -> None:
        self.config = config
        self._schedule = deque(config.schedule)
        self._rng = random.Random(config.seed)
        self._recent: deque[dict[str, Any]] = deque(getattr(self, "_recent", ()), maxlen=config.keep_requests)

    def configure(self, changes: dict[str, Any]) -> ServerConfig:
        """Apply a partial change. A new `schedule` replaces what is left of the old one; every change
        restarts the random generator from `seed`, so each test phase draws the same faults every run."""
        with self._lock:
            config = self.config.updated(changes)
            schedule_left = tuple(self._schedule)
            self._apply(config)
            if "schedule" not in changes:
                self._schedule = deque(schedule_left)
            return config

    def next_outcome(self) -> tuple[str, ServerConfig, float]:
        """This request's outcome, the config it runs under, and its latency (one locked draw)."""
        with self._lock:
            config = self.config
            delay = config.latency + (self._rng.uniform(0, config.jitter) if config.jitter else 0.0)
            if self._schedule:
                return self._schedule.popleft(), config, delay
            draw = self._rng.random()
            for outcome, rate in (("429", config.rate_429), ("500", config.rate_500),
                                  ("timeout", config.rate_timeout)):
                if draw < rate:
                    return outcome, config, delay
                draw -= rate
            return "ok", config, delay

    def schedule_left(self) -> int:
        """How many scheduled outcomes are still to come (GET /control/config shows the schedule as set)."""
        with self._lock:
            return len(self._schedule)

    def stats_payload(self) -> dict[str, Any]:
        """GET /control/stats: the counters plus how much of the schedule is left."""
        return {**self.stats.snapshot(), "schedule_left": self.schedule_left()}

    def new_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"chatcmpl-{self._ids}"

    def remember(self, path: str, body: Any) -> None:
        with self._lock:
            self._recent.append({"path": path, "body": body})

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)


# --------------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    """Daemon threads and a deep listen backlog: 64+ clients may connect in the same instant."""

    daemon_threads = True
    request_queue_size = 256
    state: ServerState


def _client_gone(sock: socket.socket) -> bool:
    """True when the peer closed the connection (readable with no data), i.e. the client gave up."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    """Routes requests; HTTP/1.1 keep-alive, as the OpenAI client pools connections."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real API servers set it: a reply is written as two segments (headers, then body),
    # and on a kept-alive connection Nagle's algorithm holds the body until the client's delayed ACK of
    # the headers, ~40 ms later. The client would then see every request ~40 ms slower than the
    # configured latency, while the counters (in_flight) already called it done.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def state(self) -> ServerState:
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.state.verbose:
            super().log_message(format, *args)

    # ---- plumbing

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw.strip() else {}

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[3:] if path.startswith("/v1/") else path

    # ---- verbs

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        route = self._route()
        config = self.state.config
        if route == "/models":
            data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in config.models]
            self._send_json(200, {"object": "list", "data": data})
        elif route == "/control/stats":
            self._send_json(200, self.state.stats_payload())
        elif route == "/control/config":
            self._send_json(200, config.to_json())
        elif route == "/control/requests":
            self._send_json(200, self.state.recent())
        elif route == "/health":
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, error_body(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        route = self._route()
        try:
            body = self._read_json()
        except (ValueError, UnicodeDecodeError) as exc:
            self._send_json(400, error_body(400, f"invalid JSON body: {exc}"))
            return
        if route in ("/chat/completions", "/embeddings"):
            self._serve_api(route, body)
        elif route == "/control/config":
            self._serve_configure(body)
        elif route == "/control/reset":
            self.state.stats.reset()
            self._send_json(200, self.state.stats_payload())
        else:
            self._send_json(404, error_body(404, f"no route POST {self.path}"))

    def _serve_configure(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._send_json(400, error_body(400, "config must be a JSON object"))
            return
        try:
            config = self.state.configure(body)
        except (TypeError, ValueError) as exc:
            self._send_json(400, error_body(400, str(exc)))
            return
        self._send_json(200, config.to_json())

    # ---- the fake API

    def _serve_api(self, route: str, body: Any) -> None:
        """Count the request, apply the injected outcome, and answer; in_flight spans all of it.

        The request leaves in_flight just before its reply is written, not after: a client that has its
        answer may send its next request at once (on another CPU), and counting the old one done only
        after the write returned would briefly show both in flight, more than the client ever had."""
        body = body if isinstance(body, dict) else {}
        self.state.stats.begin("/v1" + route, str(body.get("model", "")))
        self.state.remember("/v1" + route, body)
        status, kind, reply = "500", None, None
        try:
            status, kind, reply = self._api_outcome(route, body)
        finally:
            self.state.stats.end(status, kind)
        if reply is not None:
            self._send_json(*reply)

    def _api_outcome(self, route: str, body: dict[str, Any]) -> tuple[str, str | None, tuple[Any, ...] | None]:
        """Wait out the latency and decide: the status to count, the reply's kind, and the reply to write
        (`_send_json` arguments; None when the connection is held and dropped instead)."""
        api_key = self.state.config.api_key
        if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
            return "401", None, (401, error_body(401, "Incorrect API key provided (fake server)"))
        outcome, config, delay = self.state.next_outcome()
        if delay:
            time.sleep(delay)
        if outcome == "timeout":
            self._hold(config.hang)
            return "timeout", None, None
        if outcome == "429":
            retry = f"{config.retry_after:g}"
            return "429", None, (429, error_body(429, "Rate limit reached (injected by fake server)"),
                                 {"Retry-After": retry, "retry-after-ms": str(int(config.retry_after * 1000))})
        if outcome == "500":
            return "500", None, (500, error_body(500, "Internal error (injected by fake server)"))
        if body.get("stream"):
            return "400", None, (400, error_body(400, "the fake server does not stream"))
        if route == "/embeddings":
            return "200", "embeddings", (200, embeddings_reply(body))
        reply, kind = chat_completion(body, self.state.new_id(), config.pick)
        return "200", kind, (200, reply)

    def _hold(self, seconds: float) -> None:
        """Never answer: wait until the client gives up (or `seconds` pass), then drop the connection."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
            if readable and _client_gone(self.connection):
                break
            if readable:  # a pipelined request is waiting: do not spin on it
                time.sleep(min(left, 0.1))
        self.close_connection = True


def serve(host: str, port: int, config: ServerConfig, verbose: bool = False) -> _Server:
    """Bind (port 0 picks a free one) and return the server, not yet serving."""
    server = _Server((host, port), Handler)
    server.state = ServerState(config, verbose)
    return server


# --------------------------------------------------------------------------------------------------
# Command line (the child process)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Local OpenAI-compatible fake LLM server (tests, benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--port-file", help="also write the chosen port here once ready")
    p.add_argument("--config-json", default="{}", help="a ServerConfig as JSON; the flags below override it")
    p.add_argument("--latency", type=float)
    p.add_argument("--jitter", type=float)
    p.add_argument("--rate-429", type=float)
    p.add_argument("--rate-500", type=float)
    p.add_argument("--rate-timeout", type=float)
    p.add_argument("--schedule", help="comma-separated outcomes: ok,429,500,timeout")
    p.add_argument("--retry-after", type=float)
    p.add_argument("--hang", type=float, help="seconds a 'timeout' request is held")
    p.add_argument("--seed", type=int)
    p.add_argument("--pick", choices=PICKS)
    p.add_argument("--models", help="comma-separated ids for GET /v1/models")
    p.add_argument("--api-key")
    p.add_argument("--keep-requests", type=int)
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when stdin reaches EOF (the parent died or closed it)")
    p.add_argument("--verbose", action="store_true", help="log requests on stderr")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """--config-json first, then every flag that was given."""
    values: dict[str, Any] = json.loads(args.config_json)
    for f in fields(ServerConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given.split(",") if f.name in ("schedule", "models") and given else given
    return ServerConfig(**values)


def _exit_when_stdin_closes() -> None:
    """Orphan guard: a parent killed without cleanup closes our stdin pipe, and we follow it."""
    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    server = serve(args.host, args.port, config_from_args(args), args.verbose)
    port = server.server_address[1]
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    if args.exit_with_parent:
        _exit_when_stdin_closes()
    ready = {"port": port, "base_url": f"http://{args.host}:{port}/v1"}
    sys.stdout.write(READY_PREFIX + json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------------------------------
# The wrapper (the parent process)


class FakeLLM:
    """Starts the server as a child process and talks to its control endpoints with plain urllib.

    Keyword arguments are ServerConfig fields (latency, rate_429, schedule, ...), validated here so a
    typo fails in the test rather than in the child.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 20.0,
                 verbose: bool = False, **config: Any) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self._config = ServerConfig(**config)
        self._proc: subprocess.Popen[bytes] | None = None
        # The control calls must never go through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ---- lifecycle

    def start(self) -> FakeLLM:
        """Start the child and wait for its ready line (it carries the port the OS chose)."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "--host", self.host, "--port", str(self.port),
               "--config-json", json.dumps(self._config.to_json()), "--exit-with-parent"]
        if self.verbose:
            cmd.append("--verbose")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.port = self._read_ready()["port"]
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self._proc.stdout], [], [], left)
            if not readable:
                break
            line = self._proc.stdout.readline().decode("utf-8", "replace")
            if not line:
                raise RuntimeError(f"fake LLM server exited early with code {self._proc.wait()}")
            if line.startswith(READY_PREFIX):
                return json.loads(line[len(READY_PREFIX):])
        raise TimeoutError(f"fake LLM server not ready after {self.startup_timeout} s")

    def stop(self) -> None:
        """Stop the child: closing its stdin is enough, terminate/kill are the fallbacks."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:PORT (control endpoints live under it)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL for clients: docetl's `default_lm_api_base`, litellm's `api_base`."""
        return self.url + "/v1"

    # ---- control

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from None

    def stats(self) -> dict[str, Any]:
        """requests_total, in_flight, max_in_flight, by_status, by_model, by_path, by_kind, schedule_left."""
        return self._call("GET", "/control/stats")

    def reset(self) -> dict[str, Any]:
        """Zero the counters (not the config); returns the fresh stats."""
        return self._call("POST", "/control/reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change ServerConfig fields at run time; returns the whole new config."""
        return self._call("POST", "/control/config", changes)

    def config(self) -> dict[str, Any]:
        return self._call("GET", "/control/config")

    def requests(self) -> list[dict[str, Any]]:
        """The last keep_requests API request bodies, oldest first: what the client really sent."""
        return self._call("GET", "/control/requests")


if __name__ == "__main__":
    main()
