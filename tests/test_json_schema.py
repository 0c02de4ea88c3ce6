"""JSON lines, schema version 1 (docs/json-schema.md): every line of a mixed real run is valid.

``tests/scripts/json_schema_mix.py`` installs a real funnel with a JSON file sink
(thread and process hosts) and logs plain records, exceptions, stacks, a record
inside an asyncio task, extras named like the schema's fields and bad inputs,
from the installer, a forked child and a spawned child.  Every line it leaves
is checked against docs/json-schema.json.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import SCRIPTS, run_python
from logfunnel import JsonFormatter

SCHEMA_PATH = Path(__file__).parent.parent / "docs" / "json-schema.json"
ORIGINS = ("main", "fork", "spawn")
CASES = (
    "plain", "exc", "stack", "collide", "nan", "surrogate", "huge", "oddkeys", "repr",
    "oddfields", "task", "after",
)  # fmt: skip
TAG = re.compile(r"\[JS-(\w+)-(\w+)\]")


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _strict(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("host", ["thread", "process"])
def test_every_line_of_a_mixed_run_is_valid_against_the_schema(tmp_path: Path, host: str) -> None:
    """Installer, fork and spawn children, tasks, exceptions, collisions, bad inputs: all valid."""
    out = tmp_path / "run.jsonl"
    proc = run_python(str(SCRIPTS / "json_schema_mix.py"), str(out), host, cwd=tmp_path)
    assert proc.stdout.strip() == "done", proc.stderr[-3000:]
    validator = jsonschema.Draft202012Validator(_schema())
    data = out.read_bytes().decode("utf-8")  # strict: every byte is valid UTF-8
    lines = data.splitlines()
    by_tag: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        obj = _strict(line)
        errors = sorted(validator.iter_errors(obj), key=str)
        assert not errors, f"{line[:500]}\n{errors[0]}"
        match = TAG.search(obj["message"])
        if match:
            by_tag.setdefault((match.group(1), match.group(2)), []).append(obj)
    for origin in ORIGINS:
        for case in CASES:
            assert len(by_tag.get((origin, case), [])) == 1, (origin, case)
        ((collide,),) = [by_tag[origin, "collide"]]
        assert collide["v"] == 1
        assert collide["logger"] == "js.mix"
        assert collide["level"] == "INFO"
        assert collide["extra"] == {
            name: f"extra-{name}"
            for name in (
                "v", "time", "level", "logger", "host", "task", "exc", "stack", "extra",
                "context", "line", "function", "process_name", "thread_name",
            )
        }  # fmt: skip
        assert "ZeroDivisionError: division by zero" in by_tag[origin, "exc"][0]["exc"]
        assert "Stack (most recent call last)" in by_tag[origin, "stack"][0]["stack"]
        assert by_tag[origin, "task"][0]["task"] == "js-task"
        assert "task" not in by_tag[origin, "plain"][0]
        nan = by_tag[origin, "nan"][0]["extra"]
        assert nan == {"x_nan": "nan", "x_inf": ["inf", "-inf"]}
        odd = by_tag[origin, "oddkeys"][0]["extra"]
        assert odd["(1, 2)"] == "tuple key"
        assert odd["<unrepresentable ReprRaises: RuntimeError>"] == "repr-raising key"
        surrogate = by_tag[origin, "surrogate"][0]
        assert surrogate["message"].endswith("\\udcff")
        assert surrogate["extra"]["x_raw"] == "caf\\udcc3"
        huge = by_tag[origin, "huge"][0]
        assert "characters cut]" in huge["message"]
        assert huge["extra"]["x_int"] == "<int with 5,001 digits>"


def test_time_has_microseconds_and_offset_and_extras_never_replace_fields() -> None:
    """In-process: the time is ISO 8601 with microseconds and +00:00; extras go under extra."""
    record = logging.LogRecord("t", logging.INFO, "f.py", 7, "m", None, None)
    record.created = 1_700_000_000.123456
    record.__dict__.update(v=99, time="mine", host="h", extra={"x": 1})
    obj = _strict(JsonFormatter().format(record))
    jsonschema.validate(obj, _schema())
    assert obj["v"] == 1
    assert obj["time"] == "2023-11-14T22:13:20.123456+00:00"
    assert obj["host"] != "h"
    assert obj["extra"] == {"v": 99, "time": "mine", "host": "h", "extra": {"x": 1}}
