"""Pipelines (seed §6.1): records, their YAML, validation, templates and run-time binding.

Files (seed §7), both written atomically (temporary file beside the target, then rename):
- `<namespace dir>/pipelines/configs/<name>.yaml`: the docetl YAML, exactly as the user saved it;
- `<namespace dir>/pipelines/store/<id>.json`: the record (id, name, namespace, description, state,
  created_at, updated_at, last_run_status, last_run_at, input_dataset_id), a mirror of the DB row for
  tools that read DocWrangler's layout. The DB row is the source of truth.

Every change writes its files inside the store transaction (which holds the cross-process lock), before
the row changes; when the transaction fails, the file changes are undone (a new file removed, an old
one put back, a rename reversed), so nothing half-written remains. Deleting moves the files aside and
removes them only after the commit. A pipeline's runs are not touched: they keep `pipeline_name`.

Names are file stems: letters (any script, Chinese included), digits, `_`, `-` and `.`, not starting
with `.` or `-`; runs of whitespace become `_` (「月度 报表」 is saved as 「月度_报表」); Unicode NFC;
at most 100 characters and 240 bytes in UTF-8 (80 Chinese characters), so `<name>.yaml` fits every
file system. Names are unique per namespace.

Placeholders: a pipeline does not name real files. Its single input dataset and its output are
placeholders that every run binds to real paths (`bind`):

    datasets:
      input: {type: file, path: INPUT}
    pipeline:
      output: {type: file, path: OUTPUT}

`datasets` may also be left out: the run's dataset is then called `input`. A pipeline may declare
several datasets only when one is called `input` (that one is bound; the others keep their paths).

Validation (`validate`, `check`) is static and fast: it never imports docetl (6–14 s) and never runs
user code (code operations are only compiled). `docetl_check` runs docetl's own checks (building a
`DSLRunner` validates the config with pydantic and each operation's `syntax_check`) in a sandboxed
child process.
"""
from __future__ import annotations

import ast
import copy
import json
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from core import audit, clock, sandbox
from core.errors import NotFound, ValidationError
from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, t
from core.permissions import Action, require
from core.principal import Principal
from core.store import Store, Tx

_LOG = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
INPUT_PLACEHOLDER = "INPUT"
OUTPUT_PLACEHOLDER = "OUTPUT"
DEFAULT_INPUT_NAME = "input"
NAME_MAX_CHARS = 100
NAME_MAX_BYTES = 240
YAML_MAX_BYTES = 1024 * 1024
OUTPUT_EXTENSIONS = (".json", ".csv", ".parquet")
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled", "skipped")
PUBLIC_COLUMNS = ("id", "namespace", "name", "description", "state", "config_path", "input_dataset_id",
                  "created_by", "created_at", "updated_at", "last_run_status", "last_run_at")
RECORD_FIELDS = ("id", "name", "namespace", "description", "state", "created_at", "updated_at",
                 "last_run_status", "last_run_at", "input_dataset_id")

_NAME_RE = re.compile(r"^\w[\w.\-]*$")

# -- docetl 0.3's operation types ----------------------------------------------------------------------
# `docetl.operations.mapping` plus its `docetl.operation` entry points (read from the installed package).
OPERATION_TYPES = ("add_uuid", "cluster", "code_filter", "code_map", "code_reduce", "equijoin", "extract",
                   "filter", "gather", "link_resolve", "map", "parallel_map", "rank", "reduce", "resolve",
                   "sample", "scan", "split", "topk", "unnest", "unnest_columns", "web_fetch", "web_search")
LLM_TYPES = frozenset({"cluster", "equijoin", "extract", "filter", "link_resolve", "map", "parallel_map",
                       "rank", "reduce", "resolve", "topk"})
CODE_TYPES = frozenset({"code_map", "code_filter", "code_reduce"})
# Fields that must be non-empty text, per type (from each operation's pydantic schema / syntax_check).
_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "filter": ("prompt",), "reduce": ("prompt",), "resolve": ("comparison_prompt",),
    "equijoin": ("comparison_prompt",), "extract": ("prompt",), "cluster": ("summary_prompt",),
    "rank": ("prompt",), "topk": ("query",), "link_resolve": ("comparison_prompt",),
    "split": ("split_key",), "gather": ("content_key", "doc_id_key", "order_key"), "unnest": ("unnest_key",),
    "unnest_columns": ("unnest_key",), "web_fetch": ("output_field",), "web_search": ("query_template",),
    "scan": ("dataset_name",),
}
_LIST_FIELDS: dict[str, tuple[str, ...]] = {"extract": ("document_keys",), "cluster": ("embedding_keys",),
                                            "topk": ("keys",)}
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "rank": {"direction": ("asc", "desc")},
    "topk": {"method": ("embedding", "fts", "llm_compare")},
    "split": {"method": ("token_count", "delimiter")},
    "sample": {"method": ("uniform", "outliers", "custom", "first", "top_embedding", "top_fts")},
}
# Operations whose output.schema is required (map and parallel_map only without drop_keys).
_SCHEMA_REQUIRED = frozenset({"filter", "reduce", "resolve"})
# Jinja variables a prompt must use when it is a template (docetl's field validators).
_PROMPT_VARIABLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("reduce", "prompt"): ("inputs",), ("reduce", "fold_prompt"): ("inputs", "output"),
    ("reduce", "merge_prompt"): ("outputs",), ("resolve", "comparison_prompt"): ("input1", "input2"),
    ("resolve", "resolution_prompt"): ("inputs",),
}
PROMPT_FIELDS = ("prompt", "comparison_prompt", "resolution_prompt", "summary_prompt", "batch_prompt",
                 "fold_prompt", "merge_prompt", "query", "query_template")
_SCALAR_TYPES = frozenset({"str", "text", "string", "varchar", "int", "integer", "float", "decimal", "number",
                           "bool", "boolean"})
# Keys whose literal values are credentials: keys belong in Settings (encrypted) or the environment.
_SECRET_KEYS = frozenset({"api_key", "apikey", "api_secret", "secret", "secret_key", "password", "token",
                          "access_token", "auth_token", "aws_secret_access_key", "azure_ad_token",
                          "llm_api_keys"})

TEMPLATES: dict[str, tuple[str, str]] = {
    "offline_demo": ("pipeline.template.offline_demo.title", "pipeline.template.offline_demo.description"),
    "llm_map": ("pipeline.template.llm_map.title", "pipeline.template.llm_map.description"),
}


# -- problems ------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """One thing wrong with a pipeline: a catalog key, its parameters, and where it is.

    `where` reads like `operation "summarize" → output.schema.topic`, `operations[2] → type`,
    `step "main" → input` or `line 3, column 5`; `line` is the YAML line (1-based) when known.
    """

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    line: int | None = None

    def message(self, lang: str | None = None) -> str:
        return t(self.key, lang, where=self.where, **self.params)

    def __str__(self) -> str:
        return self.message("en")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "params": self.params, "where": self.where, "line": self.line,
                "message": self.message("en")}

    def error(self) -> ValidationError:
        return ValidationError(self.key, where=self.where, **self.params)


def _op_where(index: int, op: Any, *rest: str) -> str:
    name = op.get("name") if isinstance(op, dict) else None
    base = f'operation "{name}"' if isinstance(name, str) and name.strip() else f"operations[{index}]"
    return f"{base} → {'.'.join(rest)}" if rest else base


def _step_where(index: int, step: Any, *rest: str) -> str:
    name = step.get("name") if isinstance(step, dict) else None
    base = f'step "{name}"' if isinstance(name, str) and name.strip() else f"pipeline.steps[{index}]"
    return f"{base} → {'.'.join(rest)}" if rest else base


class _Checker:
    """Collects problems, finding each one's YAML line through the composed node tree."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def add(self, key: str, path: tuple[Any, ...], where: str, /, *, line_offset: int = 0, **params: Any) -> None:
        line = _line_of(self.root, path)
        self.problems.append(Problem(key, params, where, None if line is None else line + line_offset))


def _line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest part of `path` found: a mapping key's own line, a list item's line."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                        None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


# -- parsing -------------------------------------------------------------------------------------------
def _compose(yaml_text: str) -> tuple[Any, yaml.Node | None, Problem | None]:
    """(data, root node, None), or (None, None, the problem) when the text is not YAML."""
    size = len(yaml_text.encode("utf-8", errors="replace"))
    if size > YAML_MAX_BYTES:
        return None, None, Problem("pipeline.problem.too_big", {"size_kb": size // 1024,
                                                                 "max_kb": YAML_MAX_BYTES // 1024}, "YAML")
    if not yaml_text.strip():
        return None, None, Problem("pipeline.problem.empty", {}, "YAML")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(yaml_text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        detail = " ".join(str(p) for p in (exc.context, exc.problem) if p) or type(exc).__name__
        return None, None, Problem("pipeline.problem.yaml_syntax", {"line": line, "column": column, "detail": detail},
                                   f"line {line}, column {column}", line)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
        return None, None, Problem("pipeline.problem.yaml_syntax", {"line": 1, "column": 1, "detail": detail},
                                   "line 1, column 1", 1)
    finally:
        loader.dispose()
    return data, node, None


def parse_yaml(yaml_text: str) -> dict[str, Any]:
    """The YAML as a dict, or ValidationError (syntax, with line and column; not a mapping)."""
    data, _, problem = _compose(yaml_text)
    if problem:
        raise problem.error()
    if not isinstance(data, dict):
        raise Problem("pipeline.problem.not_mapping", {}, "YAML", 1).error()
    return data


def _duplicate_keys(checker: _Checker, node: yaml.Node, path: tuple[Any, ...], seen: set[int]) -> None:
    if id(node) in seen:  # aliases share nodes: visit each once (no "billion laughs" walk)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                if key in keys:
                    checker.problems.append(Problem("pipeline.problem.duplicate_key", {"key": key},
                                                    _path_text(path) or "YAML", key_node.start_mark.line + 1))
                keys.add(key)
            _duplicate_keys(checker, value_node, (*path, key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(checker, item, (*path, i), seen)


def _path_text(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- validation ------------------------------------------------------------------------------------------
def validate(yaml_text: str) -> list[Problem]:
    """Every problem found in a pipeline's YAML, in document order; never raises, never imports docetl.

    Checks: the YAML parses (line/column), no duplicate keys, the top level is a mapping; `operations`
    is a non-empty list of mappings with unique names and known types; each operation has the fields
    its type requires (prompts, keys, choices; Jinja templates parse and use the variables docetl
    needs); `output.schema` types are docetl types; code operations compile and define `transform`;
    `pipeline.steps` refer to defined operations and to a dataset or a previous step; `pipeline.output`
    exists; no literal credentials. Dataset and output paths may be placeholders.
    """
    if not isinstance(yaml_text, str):
        return [Problem("pipeline.problem.empty", {}, "YAML")]
    data, root, problem = _compose(yaml_text)
    if problem:
        return [problem]
    checker = _Checker(root)
    try:
        _validate_data(checker, root, data)
    except RecursionError:  # libyaml caps nesting at 1000 levels; this is the pure-Python loader's net
        return [Problem("pipeline.problem.yaml_syntax", {"line": 1, "column": 1, "detail": "nested too deeply"},
                        "line 1, column 1", 1)]
    checker.problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return checker.problems


def _validate_data(checker: _Checker, root: yaml.Node | None, data: Any) -> None:
    if root is not None:
        _duplicate_keys(checker, root, (), set())
    if not isinstance(data, dict):
        checker.add("pipeline.problem.not_mapping", (), "YAML")
        return
    _check_secrets(checker, data, (), set())
    if "default_model" in data and not _is_text(data["default_model"]):
        checker.add("pipeline.problem.field_not_text", ("default_model",), "default_model", field="default_model")
    dataset_names = _check_datasets(checker, data)
    op_types = _check_operations(checker, data.get("operations"), "operations" in data)
    _check_pipeline(checker, data, dataset_names, op_types)


def check(yaml_text: str) -> dict[str, Any]:
    """The parsed config when `validate` finds nothing; else ValidationError for the first problem
    (its message says where)."""
    problems = validate(yaml_text)
    if problems:
        raise problems[0].error()
    return parse_yaml(yaml_text)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_secrets(checker: _Checker, value: Any, path: tuple[Any, ...], seen: set[int]) -> None:
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            return
        seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if (str(key).lower() in _SECRET_KEYS and item not in (None, "", {}, [])
                    and not (isinstance(item, str) and item.startswith("os.environ/"))):
                checker.add("pipeline.problem.secret", (*path, key), _path_text((*path, key)),
                            field=_path_text((*path, key)))
            else:
                _check_secrets(checker, item, (*path, key), seen)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_secrets(checker, item, (*path, i), seen)


def _check_datasets(checker: _Checker, data: dict[str, Any]) -> set[str]:
    """Dataset names steps may read. Without `datasets` the run's dataset is `input` (see `bind`)."""
    datasets = data.get("datasets")
    if datasets is None or datasets == {}:
        return {DEFAULT_INPUT_NAME}
    if not isinstance(datasets, dict):
        checker.add("pipeline.problem.field_not_mapping", ("datasets",), "datasets", field="datasets")
        return {DEFAULT_INPUT_NAME}
    for name, entry in datasets.items():
        where = f'dataset "{name}"'
        if not isinstance(entry, dict):
            checker.add("pipeline.problem.field_not_mapping", ("datasets", name), where, field=str(name))
            continue
        if entry.get("type", "file") not in ("file", "memory"):
            checker.add("pipeline.problem.field_choice", ("datasets", name, "type"), f"{where} → type",
                        field="type", value=str(entry.get("type")), choices="file, memory")
        if entry.get("type", "file") == "file" and not _is_text(entry.get("path")):
            checker.add("pipeline.problem.field_missing", ("datasets", name), f"{where} → path", field="path")
    if len(datasets) > 1:  # `bind` must know which dataset a run fills in
        if DEFAULT_INPUT_NAME not in datasets:
            checker.add("pipeline.problem.datasets_ambiguous", ("datasets",), "datasets",
                        names=", ".join(map(str, datasets)))
        else:
            for name, entry in datasets.items():
                if (name != DEFAULT_INPUT_NAME and isinstance(entry, dict)
                        and entry.get("path") in (INPUT_PLACEHOLDER, OUTPUT_PLACEHOLDER)):
                    checker.add("pipeline.problem.dataset_placeholder", ("datasets", name, "path"),
                                f'dataset "{name}" → path', name=str(name))
    return {str(n) for n in datasets}


def _check_operations(checker: _Checker, ops: Any, present: bool) -> dict[str, str]:
    """Name -> type of the well-formed operations."""
    if not present:
        checker.add("pipeline.problem.operations_missing", (), "operations")
        return {}
    if not isinstance(ops, list) or not ops:
        checker.add("pipeline.problem.operations_not_list", ("operations",), "operations")
        return {}
    types: dict[str, str] = {}
    for i, op in enumerate(ops):
        path = ("operations", i)
        if not isinstance(op, dict):
            checker.add("pipeline.problem.operation_not_mapping", path, f"operations[{i}]")
            continue
        name = op.get("name")
        if not _is_text(name):
            checker.add("pipeline.problem.name_missing", path, f"operations[{i}] → name")
        elif name in types:
            checker.add("pipeline.problem.name_duplicate", (*path, "name"), _op_where(i, op, "name"), name=name)
        op_type = op.get("type")
        if not _is_text(op_type):
            checker.add("pipeline.problem.type_missing", path, _op_where(i, op, "type"),
                        choices=", ".join(OPERATION_TYPES))
            continue
        if op_type not in OPERATION_TYPES:
            checker.add("pipeline.problem.type_unknown", (*path, "type"), _op_where(i, op, "type"),
                        type=str(op_type), choices=", ".join(OPERATION_TYPES))
            continue
        if _is_text(name) and name not in types:
            types[name] = op_type
        _check_operation(checker, i, op, op_type)
    return types


def _check_operation(checker: _Checker, i: int, op: dict[str, Any], op_type: str) -> None:
    path = ("operations", i)

    def where(*rest: str) -> str:
        return _op_where(i, op, *rest)

    def require_text(name: str) -> None:
        if name not in op or op[name] is None:
            checker.add("pipeline.problem.field_missing", path, where(name), field=name)
        elif not _is_text(op[name]):
            checker.add("pipeline.problem.field_not_text", (*path, name), where(name), field=name)

    if "model" in op and not _is_text(op["model"]):
        checker.add("pipeline.problem.field_not_text", (*path, "model"), where("model"), field="model")
    drop_keys = bool(op.get("drop_keys"))
    for name in _TEXT_FIELDS.get(op_type, ()):
        require_text(name)
    if op_type == "map" and not drop_keys:
        require_text("prompt")
    for name in _LIST_FIELDS.get(op_type, ()):
        value = op.get(name)
        if name not in op:
            checker.add("pipeline.problem.field_missing", path, where(name), field=name)
        elif not (isinstance(value, list) and value and all(_is_text(v) for v in value)):
            checker.add("pipeline.problem.field_not_list", (*path, name), where(name), field=name)
    for name, choices in _CHOICES.get(op_type, {}).items():
        if name not in op:
            checker.add("pipeline.problem.field_missing", path, where(name), field=name)
        elif op[name] not in choices:
            checker.add("pipeline.problem.field_choice", (*path, name), where(name), field=name,
                        value=str(op[name]), choices=", ".join(choices))
    _check_output(checker, i, op, op_type, drop_keys)
    for name in PROMPT_FIELDS:
        if _is_text(op.get(name)):
            _check_template(checker, i, op, op_type, name)
    if op_type in CODE_TYPES:
        _check_code(checker, i, op)
    checks: dict[str, Callable[[], None]] = {
        "reduce": lambda: _check_reduce(checker, i, op), "parallel_map": lambda: _check_parallel(checker, i, op),
        "cluster": lambda: _check_cluster(checker, i, op), "topk": lambda: _check_topk(checker, i, op),
        "split": lambda: _check_split(checker, i, op), "sample": lambda: _check_sample(checker, i, op),
        "web_fetch": lambda: _check_web_fetch(checker, i, op),
    }
    if op_type in checks:
        checks[op_type]()
    gleaning = op.get("gleaning")
    if gleaning is not None:
        if not isinstance(gleaning, dict):
            checker.add("pipeline.problem.field_not_mapping", (*path, "gleaning"), where("gleaning"), field="gleaning")
        else:
            rounds = gleaning.get("num_rounds")
            if not (isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0):
                checker.add("pipeline.problem.field_not_positive", (*path, "gleaning"),
                            where("gleaning", "num_rounds"), field="gleaning.num_rounds")
            if not _is_text(gleaning.get("validation_prompt")):
                checker.add("pipeline.problem.field_missing", (*path, "gleaning"),
                            where("gleaning", "validation_prompt"), field="gleaning.validation_prompt")


def _check_output(checker: _Checker, i: int, op: dict[str, Any], op_type: str, drop_keys: bool) -> None:
    path = ("operations", i)
    output = op.get("output")
    required = op_type in _SCHEMA_REQUIRED or (op_type == "map" and not drop_keys)
    if output is None:
        if required:
            checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "output", "schema"),
                        field="output.schema")
        return
    if not isinstance(output, dict):
        checker.add("pipeline.problem.field_not_mapping", (*path, "output"), _op_where(i, op, "output"),
                    field="output")
        return
    schema = output.get("schema")
    if schema is None:
        if required:
            checker.add("pipeline.problem.field_missing", (*path, "output"), _op_where(i, op, "output", "schema"),
                        field="output.schema")
        return
    _check_schema(checker, i, op, schema, (*path, "output", "schema"), ("output", "schema"))
    if op_type == "filter" and isinstance(schema, dict):
        fields = {k: v for k, v in schema.items() if k != "_short_explanation"}
        if len(fields) != 1 or next(iter(fields.values())) not in ("bool", "boolean"):
            checker.add("pipeline.problem.filter_schema", (*path, "output", "schema"),
                        _op_where(i, op, "output", "schema"))


def _check_schema(checker: _Checker, i: int, op: dict[str, Any], schema: Any, path: tuple[Any, ...],
                  names: tuple[str, ...]) -> None:
    if not isinstance(schema, dict):
        checker.add("pipeline.problem.field_not_mapping", path, _op_where(i, op, *names), field=".".join(names))
        return
    if not schema:
        checker.add("pipeline.problem.schema_empty", path, _op_where(i, op, *names), field=".".join(names))
    for key, value in schema.items():
        if not schema_type_ok(value):
            checker.add("pipeline.problem.schema_type", (*path, key), _op_where(i, op, *names, str(key)),
                        field=str(key), type=str(value))


def schema_type_ok(value: Any) -> bool:
    """True when docetl 0.3 accepts `value` as an output type (the grammar of its `convert_val`):
    string/str/text/varchar, int/integer, float/number/decimal, bool/boolean, list[T], enum[a, b, …]
    and {field: T, …} (whose fields docetl splits at every comma, so objects nest only inside lists)."""
    if not isinstance(value, str):
        return False
    text = value.strip().lower()
    if text in _SCALAR_TYPES:
        return True
    if text.startswith("list[") and text.endswith("]"):
        return schema_type_ok(text[5:-1])
    if text.startswith("enum[") and text.endswith("]"):
        return all(member.strip() for member in text[5:-1].split(","))
    if text.startswith("{") and text.endswith("}"):
        for item in text[1:-1].split(","):
            parts = item.strip().split(":")
            if len(parts) != 2 or not parts[0].strip() or not schema_type_ok(parts[1]):
                return False
        return True
    return False


def _has_jinja(text: str) -> bool:
    """Stricter than docetl's test (which needs a closed `{{ … }}`), so an unclosed `{{` is reported."""
    return "{{" in text or "{%" in text or "{#" in text


def _check_template(checker: _Checker, i: int, op: dict[str, Any], op_type: str, name: str) -> None:
    text = op[name]
    if not _has_jinja(text):
        return
    import jinja2  # only when a prompt is a template (~40 ms)
    from jinja2 import nodes

    try:
        parsed = jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        checker.add("pipeline.problem.prompt_template", ("operations", i, name), _op_where(i, op, name),
                    field=name, line=exc.lineno or 1, detail=str(exc.message or exc)[:200])
        return
    needed = _PROMPT_VARIABLES.get((op_type, name))
    if needed:
        used = {n.name for n in parsed.find_all(nodes.Name)}
        if not set(needed) <= used:
            checker.add("pipeline.problem.prompt_variable", ("operations", i, name), _op_where(i, op, name),
                        field=name, variables=", ".join(needed))


def _check_code(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    """Compile only (never run) and look for a top-level `transform` taking one argument."""
    path = ("operations", i)
    code = op.get("code")
    if code is None:
        checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "code"), field="code")
        return
    if not _is_text(code):
        checker.add("pipeline.problem.field_not_text", (*path, "code"), _op_where(i, op, "code"), field="code")
        return
    block = _line_of(checker.root, (*path, "code"))
    code_node_is_block = block is not None and _scalar_style(checker.root, (*path, "code")) in ("|", ">")
    try:
        tree = compile(code, f"<operation {op.get('name')}>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, f"<operation {op.get('name')}>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 1
        checker.add("pipeline.problem.code_syntax", (*path, "code"), _op_where(i, op, "code"),
                    line_offset=line if code_node_is_block else 0, line=line,
                    detail=str(getattr(exc, "msg", exc))[:200])
        return
    transform = None
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "transform":
            transform = stmt
        elif isinstance(stmt, ast.Assign) and any(isinstance(t_, ast.Name) and t_.id == "transform"
                                                  for t_ in stmt.targets):
            transform = stmt.value if isinstance(stmt.value, ast.Lambda) else stmt
    if transform is None:
        checker.add("pipeline.problem.code_no_transform", (*path, "code"), _op_where(i, op, "code"))
        return
    if isinstance(transform, ast.AsyncFunctionDef):
        checker.add("pipeline.problem.code_transform_args", (*path, "code"), _op_where(i, op, "code"))
        return
    args = getattr(transform, "args", None)
    if isinstance(args, ast.arguments):
        positional = len(args.posonlyargs) + len(args.args)
        if positional < 1 and args.vararg is None:
            checker.add("pipeline.problem.code_transform_args", (*path, "code"), _op_where(i, op, "code"))


def _scalar_style(root: yaml.Node | None, path: tuple[Any, ...]) -> str | None:
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node.style if isinstance(node, yaml.ScalarNode) else None


def _check_reduce(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    path = ("operations", i)
    key = op.get("reduce_key")
    if key is None:
        checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "reduce_key"), field="reduce_key")
    elif not (_is_text(key) or (isinstance(key, list) and key and all(_is_text(k) for k in key))):
        checker.add("pipeline.problem.field_not_list", (*path, "reduce_key"), _op_where(i, op, "reduce_key"),
                    field="reduce_key")
    for needs, field_name in (("merge_prompt", "fold_prompt"), ("fold_prompt", "fold_batch_size"),
                              ("merge_prompt", "merge_batch_size")):
        if op.get(needs) and not op.get(field_name):
            checker.add("pipeline.problem.field_missing", path, _op_where(i, op, field_name), field=field_name)


def _check_parallel(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    path = ("operations", i)
    prompts = op.get("prompts")
    if prompts is None:
        if not op.get("drop_keys"):
            checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "prompts"), field="prompts")
        return
    if not isinstance(prompts, list) or not prompts:
        checker.add("pipeline.problem.field_not_list", (*path, "prompts"), _op_where(i, op, "prompts"),
                    field="prompts")
        return
    covered: set[str] = set()
    for j, entry in enumerate(prompts):
        here = (*path, "prompts", j)
        if not isinstance(entry, dict):
            checker.add("pipeline.problem.field_not_mapping", here, _op_where(i, op, f"prompts[{j}]"),
                        field=f"prompts[{j}]")
            continue
        if not _is_text(entry.get("prompt")):
            checker.add("pipeline.problem.field_missing", here, _op_where(i, op, f"prompts[{j}]", "prompt"),
                        field=f"prompts[{j}].prompt")
        keys = entry.get("output_keys")
        if not (isinstance(keys, list) and keys and all(_is_text(k) for k in keys)):
            checker.add("pipeline.problem.field_not_list", here, _op_where(i, op, f"prompts[{j}]", "output_keys"),
                        field=f"prompts[{j}].output_keys")
        else:
            covered.update(keys)
    schema = (op.get("output") or {}).get("schema") if isinstance(op.get("output"), dict) else None
    if isinstance(schema, dict) and covered:
        missing = sorted(str(k) for k in schema if k not in covered)
        if missing:
            checker.add("pipeline.problem.parallel_uncovered", (*path, "output", "schema"),
                        _op_where(i, op, "output", "schema"), fields=", ".join(missing))


def _check_cluster(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    path = ("operations", i)
    if "summary_schema" not in op:
        checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "summary_schema"),
                    field="summary_schema")
    else:
        _check_schema(checker, i, op, op["summary_schema"], (*path, "summary_schema"), ("summary_schema",))


def _check_topk(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    k = op.get("k")
    if "k" not in op:
        checker.add("pipeline.problem.field_missing", ("operations", i), _op_where(i, op, "k"), field="k")
    elif not (isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0):
        checker.add("pipeline.problem.field_not_positive", ("operations", i, "k"), _op_where(i, op, "k"), field="k")


def _check_split(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    path = ("operations", i)
    kwargs = op.get("method_kwargs")
    if not isinstance(kwargs, dict):
        checker.add("pipeline.problem.field_not_mapping", path, _op_where(i, op, "method_kwargs"),
                    field="method_kwargs")
        return
    if op.get("method") == "token_count":
        tokens = kwargs.get("num_tokens")
        if not (isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0):
            checker.add("pipeline.problem.field_not_positive", (*path, "method_kwargs"),
                        _op_where(i, op, "method_kwargs", "num_tokens"), field="method_kwargs.num_tokens")
    elif op.get("method") == "delimiter" and "delimiter" not in kwargs:
        checker.add("pipeline.problem.field_missing", (*path, "method_kwargs"),
                    _op_where(i, op, "method_kwargs", "delimiter"), field="method_kwargs.delimiter")


def _check_sample(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    path = ("operations", i)
    method, samples = op.get("method"), op.get("samples")
    if method in ("uniform", "first", "custom", "top_embedding", "top_fts") and samples is None:
        checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "samples"), field="samples")
    elif method == "custom" and not isinstance(samples, list):
        checker.add("pipeline.problem.field_not_list", (*path, "samples"), _op_where(i, op, "samples"),
                    field="samples")
    elif (samples is not None and method != "custom"
          and not (isinstance(samples, (int, float)) and not isinstance(samples, bool) and samples > 0)):
        checker.add("pipeline.problem.field_not_positive", (*path, "samples"), _op_where(i, op, "samples"),
                    field="samples")
    kwargs = op.get("method_kwargs") or {}
    if not isinstance(kwargs, dict):
        checker.add("pipeline.problem.field_not_mapping", (*path, "method_kwargs"), _op_where(i, op, "method_kwargs"),
                    field="method_kwargs")
        return
    needed = {"outliers": ("embedding_keys",), "top_embedding": ("keys", "query"), "top_fts": ("keys", "query")}
    for name in needed.get(method, ()):
        if name not in kwargs:
            checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "method_kwargs", name),
                        field=f"method_kwargs.{name}")
    if method == "outliers" and "std" not in kwargs and "samples" not in kwargs:
        checker.add("pipeline.problem.field_missing", path, _op_where(i, op, "method_kwargs", "std"),
                    field="method_kwargs.std")


def _check_web_fetch(checker: _Checker, i: int, op: dict[str, Any]) -> None:
    if not _is_text(op.get("url_field")) and not _is_text(op.get("url")):
        checker.add("pipeline.problem.field_missing", ("operations", i), _op_where(i, op, "url_field"),
                    field="url_field")


def _check_pipeline(checker: _Checker, data: dict[str, Any], dataset_names: set[str],
                    op_types: dict[str, str]) -> None:
    pipeline = data.get("pipeline")
    if pipeline is None:
        checker.add("pipeline.problem.pipeline_missing", (), "pipeline")
        return
    if not isinstance(pipeline, dict):
        checker.add("pipeline.problem.field_not_mapping", ("pipeline",), "pipeline", field="pipeline")
        return
    steps = pipeline.get("steps")
    if not isinstance(steps, list) or not steps:
        checker.add("pipeline.problem.steps_missing", ("pipeline", "steps") if "steps" in pipeline else ("pipeline",),
                    "pipeline.steps")
    else:
        defined = set(op_types)
        known_ops_ok = "operations" in data and isinstance(data.get("operations"), list)
        earlier: list[str] = []
        for j, step in enumerate(steps):
            _check_step(checker, j, step, dataset_names, earlier, op_types, defined, known_ops_ok, data)
    output = pipeline.get("output")
    if output is None:
        checker.add("pipeline.problem.output_missing", ("pipeline",), "pipeline.output")
    elif not isinstance(output, dict):
        checker.add("pipeline.problem.field_not_mapping", ("pipeline", "output"), "pipeline.output",
                    field="pipeline.output")
    else:
        if output.get("type", "file") != "file":
            checker.add("pipeline.problem.field_choice", ("pipeline", "output", "type"), "pipeline.output.type",
                        field="type", value=str(output.get("type")), choices="file")
        path = output.get("path")
        if path is not None and path != OUTPUT_PLACEHOLDER and (
                not isinstance(path, str) or not path.lower().endswith(OUTPUT_EXTENSIONS)):
            checker.add("pipeline.problem.output_extension", ("pipeline", "output", "path"), "pipeline.output.path",
                        path=str(path), extensions=", ".join(OUTPUT_EXTENSIONS))


def _check_step(checker: _Checker, j: int, step: Any, dataset_names: set[str], earlier: list[str],
                op_types: dict[str, str], defined: set[str], known_ops_ok: bool, data: dict[str, Any]) -> None:
    path = ("pipeline", "steps", j)
    if not isinstance(step, dict):
        checker.add("pipeline.problem.step_not_mapping", path, f"pipeline.steps[{j}]")
        return
    name = step.get("name")
    if not _is_text(name):
        checker.add("pipeline.problem.name_missing", path, _step_where(j, step, "name"))
    elif name in earlier:
        checker.add("pipeline.problem.step_name_duplicate", (*path, "name"), _step_where(j, step, "name"), name=name)
    sources = sorted(dataset_names | set(earlier))
    ops = step.get("operations")
    if not isinstance(ops, list) or not ops:
        checker.add("pipeline.problem.step_operations_missing", (*path, "operations") if "operations" in step else path,
                    _step_where(j, step, "operations"))
        ops = []
    step_input = step.get("input")
    if step_input is None:
        if not (ops and isinstance(ops[0], dict)):
            checker.add("pipeline.problem.step_input_missing", path, _step_where(j, step, "input"),
                        choices=", ".join(sources))
    elif not isinstance(step_input, str) or step_input not in sources:
        checker.add("pipeline.problem.step_unknown_input", (*path, "input"), _step_where(j, step, "input"),
                    name=str(step_input), choices=", ".join(sources))
    for k, ref in enumerate(ops):
        here = (*path, "operations", k)
        where = _step_where(j, step, f"operations[{k}]")
        if isinstance(ref, dict):
            # equijoin form: the step's first entry, {op_name: {left: ..., right: ...}}, and no `input`
            join_name, join_cfg = next(iter(ref.items())) if len(ref) == 1 else (None, None)
            if (k != 0 or step_input is not None or join_name not in defined or op_types.get(join_name) != "equijoin"
                    or not isinstance(join_cfg, dict)):
                checker.add("pipeline.problem.step_equijoin", here, where, name=str(join_name or ""))
                continue
            for side in ("left", "right"):
                if join_cfg.get(side) not in sources:
                    checker.add("pipeline.problem.step_unknown_input", (*here, join_name, side), f"{where}.{side}",
                                name=str(join_cfg.get(side)), choices=", ".join(sources))
        elif not isinstance(ref, str) or (known_ops_ok and ref not in defined and not _defined_loosely(data, ref)):
            checker.add("pipeline.problem.step_unknown_operation", here, where, name=str(ref))
        elif op_types.get(ref) == "equijoin":
            checker.add("pipeline.problem.step_equijoin", here, where, name=ref)
    if _is_text(name):
        earlier.append(name)


def _defined_loosely(data: dict[str, Any], ref: str) -> bool:
    """An operation named `ref` exists, even if it has problems of its own (reported there)."""
    return any(isinstance(op, dict) and op.get("name") == ref for op in data.get("operations") or [])


# -- docetl's own check (in a child process) ------------------------------------------------------------
DOCETL_CHECK_MEMORY_MB = 3072  # the docetl import alone maps ~850 MB; threads reserve more
DOCETL_CHECK_CPU_SECONDS = 120
DOCETL_CHECK_TIMEOUT_SECONDS = 240


def docetl_check(yaml_text: str) -> list[Problem]:
    """docetl 0.3's own verdict on the pipeline: building a `DSLRunner` validates the config (pydantic
    models for the pipeline, steps and output, the operation graph) and each operation's
    `syntax_check` (its pydantic schema; code operations' `transform`). Runs in a sandboxed child
    (the docetl import takes 6–14 s and maps ~1 GB); errors come back as Problems naming the operation
    and field. The placeholders are bound to temporary files first. Run `validate` first: it is fast
    and explains more; this catches what only docetl knows."""
    return docetl_check_many([yaml_text])[0]


def docetl_check_many(yaml_texts: list[str]) -> list[list[Problem]]:
    """`docetl_check` for several pipelines with one docetl import."""
    results: list[list[Problem] | None] = []
    configs: list[dict[str, Any]] = []
    for text in yaml_texts:
        try:
            configs.append(parse_yaml(text))
            results.append(None)
        except ValidationError as exc:
            results.append([Problem(exc.key, {k: v for k, v in exc.params.items() if k != "where"},
                                    str(exc.params.get("where", "YAML")))])
    if configs:
        try:
            found = iter(sandbox.run_isolated(_docetl_check_child, configs, memory_mb=DOCETL_CHECK_MEMORY_MB,
                                              cpu_seconds=DOCETL_CHECK_CPU_SECONDS,
                                              timeout_seconds=DOCETL_CHECK_TIMEOUT_SECONDS))
        except ValidationError as exc:  # the child stopped (time, memory, crash): say so for each pipeline
            reason = "; ".join(f"{k}={v}" for k, v in exc.params.items() if k != "child_traceback") or exc.key
            stopped = [Problem("pipeline.problem.docetl_stopped", {"reason": f"{exc.key}: {reason}"}, "docetl")]
            return [r if r is not None else stopped for r in results]
        results = [r if r is not None else [_docetl_problem(item) for item in next(found)] for r in results]
    return [r or [] for r in results]


def _docetl_problem(item: dict[str, Any]) -> Problem:
    if item.get("key"):
        return Problem(item["key"], item.get("params") or {}, item.get("where") or "pipeline")
    op, fld = item.get("operation"), item.get("field")
    where = f'operation "{op}"' if op else "pipeline"
    if fld:
        where += f" → {fld}"
    return Problem("pipeline.problem.docetl", {"detail": item["detail"]}, where)


def offline_environment(home: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for a process that imports docetl headless and offline: its own home (LLM cache),
    litellm's bundled cost map, and no interactive questions on stdin."""
    return {"DOCETL_HOME_DIR": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "USE_FRONTEND": "true"}


def _docetl_check_child(configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """In the sandbox child: build each pipeline's DSLRunner and syntax-check every operation."""
    tmp = tempfile.mkdtemp(prefix="wb-docetl-check-")
    try:
        os.environ.update(offline_environment(tmp))
        import io

        import litellm.litellm_core_utils.default_encoding  # noqa: F401  (tiktoken: the bundled encodings)
        import litellm
        from rich.console import Console

        litellm.suppress_debug_info = True
        from docetl.runner import DSLRunner

        inputs = Path(tmp) / "input.json"
        inputs.write_text("[]", encoding="utf-8")
        results = []
        for config in configs:
            found: list[dict[str, Any]] = []
            try:
                bound = bind(config, input_path=inputs, output_path=Path(tmp) / "out" / "output.json",
                             intermediate_dir=Path(tmp) / "out" / "intermediates")
            except ValidationError as exc:
                results.append([{"key": exc.key, "params": exc.params, "where": "datasets"}])
                continue
            console = Console(file=io.StringIO(), force_terminal=False, color_system=None, width=120)
            try:
                runner = DSLRunner(bound, max_threads=1, console=console, from_df_accessors=True)
                runner.get_output_path(require=True)
            except Exception as exc:  # docetl raises ValueError, AssertionError, pydantic errors...
                found.extend(_docetl_errors(exc, None))
                results.append(found)
                continue
            checked: set[str] = set()
            for container in runner.op_container_map.values():
                op_name = container.config.get("name")
                if container.config.get("type") in ("scan", "step_boundary") or op_name in checked:
                    continue
                checked.add(op_name)
                try:
                    container.syntax_check()
                except Exception as exc:
                    found.extend(_docetl_errors(exc, op_name))
            results.append(found)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _docetl_errors(exc: BaseException, op_name: str | None) -> list[dict[str, Any]]:
    """docetl's exception as [{operation, field, detail}]: pydantic's own errors when it wraps one."""
    match = re.match(r"Syntax check failed for operation '([^']*)'", str(exc))
    op_name = op_name or (match.group(1) if match else None)
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        errors = getattr(cause, "errors", None)
        if callable(errors) and type(cause).__name__ == "ValidationError":
            try:
                return [{"operation": op_name, "field": ".".join(str(p) for p in e.get("loc") or ()) or None,
                         "detail": str(e.get("msg"))[:300]} for e in errors()]
            except Exception:
                break
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip() or type(exc).__name__
    if match:
        text = text[match.end():].lstrip(": ")
    return [{"operation": op_name, "field": None, "detail": text.splitlines()[0][:300] if text else type(exc).__name__}]


# -- summary ---------------------------------------------------------------------------------------------
def summary(yaml_text: str) -> list[dict[str, Any]]:
    """A readable outline of the operations, for the Execute page: per operation its `name`, `type`,
    `llm` (whether it calls a model), `model` (the operation's own model, "default" for the pipeline's
    default model, None for operations without LLM calls), `prompt` (a one-line excerpt) and `output`
    ([{name, type}] from output.schema). Tolerant: a broken YAML gives what can be read (or [])."""
    data, _, problem = _compose(yaml_text) if isinstance(yaml_text, str) else (None, None, None)
    if problem or not isinstance(data, dict) or not isinstance(data.get("operations"), list):
        return []
    outline = []
    for op in data["operations"]:
        if not isinstance(op, dict):
            continue
        op_type = str(op.get("type") or "")
        llm = op_type in LLM_TYPES
        prompt = next((op[f] for f in PROMPT_FIELDS if _is_text(op.get(f))), None)
        if prompt is None and op_type == "parallel_map" and isinstance(op.get("prompts"), list):
            prompt = next((p.get("prompt") for p in op["prompts"] if isinstance(p, dict) and _is_text(p.get("prompt"))),
                          None)
        output = op.get("output") if isinstance(op.get("output"), dict) else {}
        schema = output.get("schema") if isinstance(output.get("schema"), dict) else {}
        outline.append({"name": str(op.get("name") or ""), "type": op_type, "llm": llm,
                        "model": (str(op["model"]) if _is_text(op.get("model")) else "default") if llm else None,
                        "prompt": excerpt(prompt) if prompt else "",
                        "output": [{"name": str(k), "type": str(v)} for k, v in schema.items()]})
    return outline


def excerpt(text: str, limit: int = 80) -> str:
    """The first non-blank line of a prompt, whitespace collapsed, cut at `limit` characters."""
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# -- binding a pipeline to a run's files ------------------------------------------------------------------
def bind(config: dict[str, Any], *, input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
         intermediate_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A copy of `config` whose input dataset reads `input_path` and whose output goes to `output_path`
    (intermediates to `intermediate_dir`). The input dataset is the only one declared, or the one named
    `input`; without `datasets` one named `input` is added. Another dataset still holding a placeholder
    path, or several datasets none of which is `input`, is a clear ValidationError."""
    bound = copy.deepcopy(config)
    out = str(output_path)
    if not out.lower().endswith(OUTPUT_EXTENSIONS):
        raise ValidationError("pipeline.error.output_extension", path=out, extensions=", ".join(OUTPUT_EXTENSIONS))
    datasets = bound.get("datasets")
    if not datasets:
        bound["datasets"] = {DEFAULT_INPUT_NAME: {"type": "file", "path": str(input_path)}}
    else:
        if not isinstance(datasets, dict):
            raise ValidationError("pipeline.error.bind_ambiguous", names="-")
        if len(datasets) == 1:
            chosen = next(iter(datasets))
        elif DEFAULT_INPUT_NAME in datasets:
            chosen = DEFAULT_INPUT_NAME
        else:
            raise ValidationError("pipeline.error.bind_ambiguous", names=", ".join(map(str, datasets)))
        entry = dict(datasets[chosen]) if isinstance(datasets[chosen], dict) else {}
        entry.update(type="file", path=str(input_path))
        datasets[chosen] = entry
        placeholders = (INPUT_PLACEHOLDER, OUTPUT_PLACEHOLDER)
        for other, spec in datasets.items():
            if other != chosen and isinstance(spec, dict) and spec.get("path") in placeholders:
                raise ValidationError("pipeline.error.bind_placeholder", name=str(other))
    pipeline = bound.get("pipeline")
    if not isinstance(pipeline, dict):
        pipeline = bound["pipeline"] = {}
    output = dict(pipeline.get("output") or {}) if isinstance(pipeline.get("output"), dict) else {}
    output.update(type="file", path=out)
    if intermediate_dir is not None:
        output["intermediate_dir"] = str(intermediate_dir)
    else:
        output.pop("intermediate_dir", None)
    pipeline["output"] = output
    return bound


# -- templates -------------------------------------------------------------------------------------------
def templates() -> list[dict[str, Any]]:
    """The shipped templates: `name`, `title` and `description` ({language: text}, from the catalogs,
    with their `title_key`/`description_key`), and the `yaml` text."""
    found = []
    for name, (title_key, description_key) in TEMPLATES.items():
        found.append({"name": name, "title_key": title_key, "description_key": description_key,
                      "title": {lang: t(title_key, lang) for lang in LANGUAGES},
                      "description": {lang: t(description_key, lang) for lang in LANGUAGES},
                      "yaml": (TEMPLATES_DIR / f"{name}.yaml").read_text(encoding="utf-8")})
    return found


def create_from_template(store: Store, principal: Principal, namespace: str, template: str,
                         name: str | None = None, *, lang: str | None = None,
                         now: datetime | None = None) -> dict[str, Any]:
    """A new pipeline from a template. Without `name` it is the template's name, with `_2`, `_3`… when
    taken. The description is the template's, in `lang` (default: the configured default language)."""
    require(principal, Action.EDIT_PIPELINE, namespace)
    chosen = next((tpl for tpl in templates() if tpl["name"] == template), None)
    if chosen is None:
        raise NotFound("pipeline.error.template_not_found", name=template, choices=", ".join(TEMPLATES))
    lang = lang if lang in LANGUAGES else store.config["default_language"] or DEFAULT_LANGUAGE
    if name is None:
        with store.read() as tx:
            taken = {r["name"] for r in tx.execute("SELECT name FROM pipelines WHERE namespace = ?", [namespace])}
        folder = pipelines_dir(store, namespace) / "configs"
        name, n = template, 1
        while name in taken or (folder / f"{name}.yaml").exists():
            n += 1
            name = f"{template}_{n}"
    return _create(store, principal, namespace, name, chosen["yaml"], chosen["description"][lang], None, now,
                   {"template": template})


def blank_yaml() -> str:
    """A minimal valid pipeline to start from (`data/templates/blank.yaml`): one step passing rows through."""
    return (TEMPLATES_DIR / "blank.yaml").read_text(encoding="utf-8")


# -- files -----------------------------------------------------------------------------------------------
def pipelines_dir(store: Store, namespace: str) -> Path:
    return store.config.namespace_dir(namespace) / "pipelines"


def config_file(store: Store, namespace: str, name: str) -> Path:
    return pipelines_dir(store, namespace) / "configs" / f"{name}.yaml"


def record_file(store: Store, namespace: str, pipeline_id: str) -> Path:
    return pipelines_dir(store, namespace) / "store" / f"{pipeline_id}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file beside the target (a short name, so long pipeline names fit), then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _FileChanges:
    """File changes made inside a store transaction: undone if it fails, finished after it commits."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []

    def write(self, path: Path, data: bytes) -> None:
        old = path.read_bytes() if path.exists() else None
        _write_atomic(path, data)
        self._undo.append(lambda: path.unlink(missing_ok=True) if old is None else _write_atomic(path, old))

    def move(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
        self._undo.append(lambda: os.rename(target, source))

    def remove(self, path: Path) -> None:
        """Moved aside now, deleted once the transaction commits."""
        if not path.exists():
            return
        aside = path.with_name(f".deleted-{uuid.uuid4().hex[:12]}{path.suffix}")
        os.rename(path, aside)
        self._undo.append(lambda: os.rename(aside, path))
        self._after.append(lambda: aside.unlink(missing_ok=True))

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            try:
                undo()
            except OSError:
                _LOG.exception("could not undo a pipeline file change")

    def commit(self) -> None:
        for step in self._after:
            try:
                step()
            except OSError:
                _LOG.warning("could not remove a deleted pipeline file", exc_info=True)


@contextmanager
def _changing(store: Store) -> Iterator[tuple[Tx, _FileChanges]]:
    files = _FileChanges()
    try:
        with store.transaction() as tx:
            yield tx, files
    except BaseException:
        files.rollback()
        raise
    files.commit()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return str(value)


def _record_bytes(row: dict[str, Any]) -> bytes:
    record = {k: _iso(row.get(k)) if k.endswith("_at") else row.get(k) for k in RECORD_FIELDS}
    return json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8")


# -- names and rows ---------------------------------------------------------------------------------------
def normalize_name(name: str) -> str:
    """The name as stored (NFC, whitespace runs → `_`), or a clear ValidationError (see the module doc)."""
    clean = re.sub(r"\s+", "_", unicodedata.normalize("NFC", str(name or "")).strip())
    if len(clean) > NAME_MAX_CHARS or len(clean.encode("utf-8")) > NAME_MAX_BYTES:
        raise ValidationError("pipeline.error.name_too_long", name=clean[:40] + "…", max=NAME_MAX_CHARS,
                              max_zh=NAME_MAX_BYTES // 3)
    if not clean or not _NAME_RE.match(clean):
        raise ValidationError("pipeline.error.name", name=str(name or ""))
    return clean


def _clean_description(description: str | None) -> str:
    return str(description or "").strip()[:2000]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in PUBLIC_COLUMNS}


def _row(tx: Tx, pipeline_id: str) -> dict[str, Any]:
    row = tx.one("SELECT * FROM pipelines WHERE id = ?", [pipeline_id])
    if not row:
        raise NotFound("pipeline.error.not_found", id=pipeline_id)
    return row


def _name_free(tx: Tx, store: Store, namespace: str, name: str, except_id: str | None = None) -> None:
    if tx.scalar("SELECT count(*) FROM pipelines WHERE namespace = ? AND name = ? AND id <> ?",
                 [namespace, name, except_id or ""]):
        raise ValidationError("pipeline.error.name_taken", name=name, namespace=namespace)
    path = config_file(store, namespace, name)
    if path.exists():  # e.g. a DocWrangler config: never overwritten
        raise ValidationError("pipeline.error.file_exists", name=name, path=str(path))


def _check_namespace(tx: Tx, namespace: str) -> None:
    if not tx.one("SELECT 1 FROM namespaces WHERE name = ?", [namespace]):
        raise NotFound("namespace.error.not_found", name=namespace)


def _check_dataset(tx: Tx, namespace: str, dataset_id: str) -> None:
    if not tx.one("SELECT 1 FROM datasets WHERE id = ? AND namespace = ?", [dataset_id, namespace]):
        raise NotFound("pipeline.error.dataset_not_found", id=dataset_id, namespace=namespace)


# -- reading ---------------------------------------------------------------------------------------------
def get(store: Store, principal: Principal, pipeline_id: str) -> dict[str, Any]:
    with store.read() as tx:
        row = _row(tx, pipeline_id)
    require(principal, Action.VIEW, row["namespace"])
    return _public(row)


def find(store: Store, principal: Principal, namespace: str, name_or_id: str) -> dict[str, Any]:
    """A namespace's pipeline by name (as typed, or normalized) or by id."""
    require(principal, Action.VIEW, namespace)
    wanted = str(name_or_id or "").strip()
    candidates = [wanted, re.sub(r"\s+", "_", unicodedata.normalize("NFC", wanted))]
    with store.read() as tx:
        row = tx.one("SELECT * FROM pipelines WHERE namespace = ? AND (id = ? OR name = ? OR name = ?)"
                     " ORDER BY (id = ?) DESC LIMIT 1", [namespace, wanted, *candidates, wanted])
    if not row:
        raise NotFound("pipeline.error.not_found_name", name=wanted, namespace=namespace)
    return _public(row)


def list_pipelines(store: Store, principal: Principal, namespace: str) -> list[dict[str, Any]]:
    """A namespace's pipelines, by name."""
    require(principal, Action.VIEW, namespace)
    rows = store.execute("SELECT * FROM pipelines WHERE namespace = ? ORDER BY name", [namespace])
    return [_public(r) for r in rows]


def read_yaml(store: Store, principal: Principal, pipeline_id: str) -> str:
    row = get(store, principal, pipeline_id)
    try:
        return Path(row["config_path"]).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("pipeline.error.config_missing", name=row["name"], path=row["config_path"]) from None


# -- changes ---------------------------------------------------------------------------------------------
def create(store: Store, principal: Principal, namespace: str, name: str, yaml_text: str, *,
           description: str = "", input_dataset_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A new pipeline (editors and up): the YAML must validate; the name must be free."""
    return _create(store, principal, namespace, name, yaml_text, description, input_dataset_id, now, {})


def _create(store: Store, principal: Principal, namespace: str, name: str, yaml_text: str, description: str,
            input_dataset_id: str | None, now: datetime | None, detail: dict[str, Any]) -> dict[str, Any]:
    require(principal, Action.EDIT_PIPELINE, namespace)
    name = normalize_name(name)
    check(yaml_text)
    return _insert(store, principal, namespace, name, yaml_text, _clean_description(description),
                   input_dataset_id or None, clock.resolve(now), "pipeline.create", detail)


def _insert(store: Store, principal: Principal, namespace: str, name: str, yaml_text: str, description: str,
            input_dataset_id: str | None, now: datetime, action: str, detail: dict[str, Any]) -> dict[str, Any]:
    pipeline_id = uuid.uuid4().hex
    path = config_file(store, namespace, name)
    with _changing(store) as (tx, files):
        _check_namespace(tx, namespace)
        _name_free(tx, store, namespace, name)
        if input_dataset_id:
            _check_dataset(tx, namespace, input_dataset_id)
        row = {"id": pipeline_id, "namespace": namespace, "name": name, "description": description,
               "state": "active", "config_path": str(path), "input_dataset_id": input_dataset_id,
               "created_by": principal.username, "created_at": now, "updated_at": now,
               "last_run_status": None, "last_run_at": None}
        files.write(path, yaml_text.encode("utf-8"))
        files.write(record_file(store, namespace, pipeline_id), _record_bytes(row))
        tx.execute_write(f"INSERT INTO pipelines ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         list(row.values()))
        audit.record(tx, principal, action, resource_type="pipeline", resource_id=pipeline_id, namespace=namespace,
                     detail={"name": name, **detail}, now=now)
        return _public(_row(tx, pipeline_id))


def update(store: Store, principal: Principal, pipeline_id: str, *, yaml_text: str | None = None,
           description: str | None = None, input_dataset_id: str | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """Change the YAML (validated first), the description or the input dataset ("" clears it);
    audited with what changed (never the YAML itself, which may name endpoints)."""
    if yaml_text is not None:
        check(yaml_text)
    now = clock.resolve(now)
    with _changing(store) as (tx, files):
        row = _row(tx, pipeline_id)
        require(principal, Action.EDIT_PIPELINE, row["namespace"])
        changes: dict[str, Any] = {}
        detail: dict[str, Any] = {"name": row["name"]}
        if yaml_text is not None:
            path = Path(row["config_path"])
            old = path.read_bytes() if path.exists() else None
            new = yaml_text.encode("utf-8")
            if old != new:
                files.write(path, new)
                detail["yaml_bytes"] = {"before": None if old is None else len(old), "after": len(new)}
        if description is not None and _clean_description(description) != row["description"]:
            changes["description"] = _clean_description(description)
            detail["description"] = {"before": row["description"], "after": changes["description"]}
        if input_dataset_id is not None and (input_dataset_id or None) != row["input_dataset_id"]:
            if input_dataset_id:
                _check_dataset(tx, row["namespace"], input_dataset_id)
            changes["input_dataset_id"] = input_dataset_id or None
            detail["input_dataset_id"] = {"before": row["input_dataset_id"], "after": changes["input_dataset_id"]}
        if len(detail) > 1:
            sets = "".join(f"{k} = ?, " for k in changes)
            tx.execute_write(f"UPDATE pipelines SET {sets}updated_at = ? WHERE id = ?",
                             [*changes.values(), now, pipeline_id])
            updated = _row(tx, pipeline_id)
            files.write(record_file(store, row["namespace"], pipeline_id), _record_bytes(updated))
            audit.record(tx, principal, "pipeline.update", resource_type="pipeline", resource_id=pipeline_id,
                         namespace=row["namespace"], detail=detail, now=now)
        return _public(_row(tx, pipeline_id))


def rename(store: Store, principal: Principal, pipeline_id: str, new_name: str,
           now: datetime | None = None) -> dict[str, Any]:
    """A new name (editors and up): the YAML file moves with it. Runs keep the name they ran under."""
    name = normalize_name(new_name)
    now = clock.resolve(now)
    with _changing(store) as (tx, files):
        row = _row(tx, pipeline_id)
        require(principal, Action.EDIT_PIPELINE, row["namespace"])
        if name == row["name"]:
            return _public(row)
        _name_free(tx, store, row["namespace"], name, pipeline_id)
        old_path, new_path = Path(row["config_path"]), config_file(store, row["namespace"], name)
        if not old_path.exists():
            raise NotFound("pipeline.error.config_missing", name=row["name"], path=str(old_path))
        files.move(old_path, new_path)
        tx.execute_write("UPDATE pipelines SET name = ?, config_path = ?, updated_at = ? WHERE id = ?",
                         [name, str(new_path), now, pipeline_id])
        updated = _row(tx, pipeline_id)
        files.write(record_file(store, row["namespace"], pipeline_id), _record_bytes(updated))
        audit.record(tx, principal, "pipeline.rename", resource_type="pipeline", resource_id=pipeline_id,
                     namespace=row["namespace"], detail={"before": row["name"], "after": name}, now=now)
        return _public(updated)


def duplicate(store: Store, principal: Principal, pipeline_id: str, new_name: str,
              now: datetime | None = None) -> dict[str, Any]:
    """A copy under a new name in the same namespace (YAML, description, input dataset; no run history)."""
    source = get(store, principal, pipeline_id)
    require(principal, Action.EDIT_PIPELINE, source["namespace"])
    name = normalize_name(new_name)
    yaml_text = read_yaml(store, principal, pipeline_id)
    return _insert(store, principal, source["namespace"], name, yaml_text, source["description"],
                   source["input_dataset_id"], clock.resolve(now), "pipeline.duplicate",
                   {"from_id": pipeline_id, "from_name": source["name"]})


def delete(store: Store, principal: Principal, pipeline_id: str, now: datetime | None = None) -> None:
    """Remove the record and its files (namespace admins and up). Runs stay, with their pipeline_name;
    their outputs and intermediates under `pipelines/outputs` and `pipelines/<name>/` stay too."""
    with _changing(store) as (tx, files):
        row = _row(tx, pipeline_id)
        require(principal, Action.DELETE_RESOURCE, row["namespace"])
        files.remove(Path(row["config_path"]))
        files.remove(record_file(store, row["namespace"], pipeline_id))
        tx.execute_write("DELETE FROM pipelines WHERE id = ?", [pipeline_id])
        audit.record(tx, principal, "pipeline.delete", resource_type="pipeline", resource_id=pipeline_id,
                     namespace=row["namespace"], detail={"name": row["name"]}, now=now)


def record_run(tx: Tx, pipeline_id: str, status: str, at: datetime) -> bool:
    """Set a pipeline's last_run_status/last_run_at inside the caller's transaction (the run module's).

    No permission check, on purpose: this is bookkeeping that follows a run, not a user action. Whoever
    started the run was checked then (Action.RUN when it was enqueued or the deployment was saved), and
    the scheduler service that finishes it acts for no user. Records never move back in time (an older
    run finishing late does not overwrite a newer one). Returns False when nothing changed (the pipeline
    was deleted meanwhile, or a newer run is recorded). The JSON record mirror is rewritten too; a
    failure to write it is logged, never raised, so it cannot fail the run's transaction.
    """
    if status not in RUN_STATUSES:
        raise ValidationError("pipeline.error.run_status", status=str(status), choices=", ".join(RUN_STATUSES))
    at = clock.resolve(at)
    rows = tx.execute("UPDATE pipelines SET last_run_status = ?, last_run_at = ? WHERE id = ?"
                      " AND (last_run_at IS NULL OR last_run_at <= ?) RETURNING *", [status, at, pipeline_id, at])
    if not rows:
        return False
    row = rows[0]
    try:
        _write_atomic(Path(row["config_path"]).parent.parent / "store" / f"{pipeline_id}.json", _record_bytes(row))
    except OSError:
        _LOG.warning("could not rewrite the record of pipeline %s", pipeline_id, exc_info=True)
    return True
