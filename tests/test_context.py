"""Context that travels (issue 11, item 7): ``logfunnel.context()`` and ``logfunnel.carry()``.

The end-to-end tests run ``tests/scripts/context_mix.py`` in a fresh interpreter:
a real funnel, and records logged inside and outside blocks from the installer,
a thread, fork, spawn and forkserver children, a ``subprocess`` child, and tasks
of a spawn ``ProcessPoolExecutor`` and of joblib's loky backend made before the
block.  The in-process tests use real loggers and handlers, no funnel needed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import multiprocessing
import os
import pickle
import re
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import logfunnel
from conftest import SCRIPTS, run_python
from logfunnel import JsonFormatter, LineFormatter
from logfunnel._core import context as _context

SCHEMA = json.loads((Path(__file__).parent.parent / "docs/json-schema.json").read_text("utf-8"))
TAG = re.compile(r"\[CX-([\w-]+)\]")
BLOCK = {"job": "nightly", "shard": 3}
# Where each tag was logged -> the context its record must carry (None: none).
EXPECTED: dict[str, dict[str, Any] | None] = {
    "main-outside": None,
    "main-inside": BLOCK,
    "main-nested": {"job": "nightly", "shard": 4, "attempt": 2},
    "main-extra": BLOCK,
    "main-thread": None,  # threads start with an empty context (contextvars)
    "fork": BLOCK,
    "spawn": BLOCK,
    "forkserver": BLOCK,
    "subprocess": BLOCK,
    "forkserver-second": {"job": "second", "shard": 5},
    "fork-outside": None,
    "main-after": None,
    "pool-warm": None,
    "joblib-warm": None,
    "pool-plain-0": None,  # a pool made outside the block: its workers have no context
    **{f"pool-spawn-{i}": BLOCK for i in range(4)},
    **{f"joblib-{i}": BLOCK for i in range(4)},
    # carry() evaluated in joblib's result thread, outside the block (pre_dispatch="1")
    **{f"joblib-lazy-{i}": BLOCK for i in range(4)},
}


def _run(tmp_path: Path, host: str, kind: str) -> list[str]:
    out = tmp_path / f"{host}.{kind}"
    proc = run_python(str(SCRIPTS / "context_mix.py"), str(out), host, kind, cwd=tmp_path)
    assert proc.stdout.strip().endswith("done"), proc.stderr[-3000:]
    return out.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("host", ["thread", "process"])
def test_context_reaches_every_process_started_in_the_block_json(
    tmp_path: Path, host: str
) -> None:
    """fork, spawn, forkserver, subprocess and carried pool tasks: each record has its context."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    seen: dict[str, dict[str, Any]] = {}
    for line in _run(tmp_path, host, "json"):
        obj = json.loads(line)
        errors = list(validator.iter_errors(obj))
        assert not errors, f"{line}\n{errors[0]}"
        match = TAG.search(obj["message"])
        if match:
            assert match.group(1) not in seen, line
            seen[match.group(1)] = obj
    assert set(seen) == set(EXPECTED)
    for tag, want in EXPECTED.items():
        assert seen[tag].get("context") == want, (tag, seen[tag])
    # The context's fields are not repeated under extra; an extra of the same name stays.
    assert "extra" not in seen["main-inside"]
    assert seen["main-extra"]["extra"] == {"shard": "mine"}


def test_text_format_names_context_fields_and_shows_a_dash_without_them(tmp_path: Path) -> None:
    """``%(job)s`` renders the field in every process; a record without it shows ``-``."""
    lines = _run(tmp_path, "thread", "text")
    by_tag = {m.group(1): line for line in lines if (m := TAG.search(line))}
    assert set(by_tag) == set(EXPECTED)
    for tag, want in EXPECTED.items():
        job, shard = by_tag[tag].split("|")[:2]
        if tag == "main-extra":
            assert (job, shard) == ("nightly", "mine"), by_tag[tag]  # the extra wins
        elif want is None:
            assert (job, shard) == ("-", "-"), by_tag[tag]
        else:
            assert (job, shard) == (want["job"], str(want["shard"])), by_tag[tag]


@pytest.fixture
def captured() -> Any:
    """Give a logger real handlers of the program's own, writing text and JSON to buffers."""
    logger = logging.getLogger("cx.local")
    text, data = io.StringIO(), io.StringIO()
    line = logging.StreamHandler(text)
    line.setFormatter(LineFormatter("%(job)s %(shard)s %(message)s"))
    as_json = logging.StreamHandler(data)
    as_json.setFormatter(JsonFormatter())
    logger.addHandler(line)
    logger.addHandler(as_json)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, text, data
    logger.removeHandler(line)
    logger.removeHandler(as_json)
    logger.propagate = True


def test_blocks_nest_restore_and_leave_records_otherwise_unchanged(captured: Any) -> None:
    """Nested blocks merge (inner wins) and restore; nothing else about a record changes."""
    logger, text, data = captured
    made: list[logging.LogRecord] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            made.append(record)
            return True

    logger.addFilter(Keep())
    logger.info("outside")
    with logfunnel.context(job="nightly", shard=3) as block:
        logger.info("inside")
        with logfunnel.context(shard=4):
            logger.info("nested")
        with block:  # the same object entered again, nested in itself
            logger.info("again")
        logger.info("back")
    logger.info("after")
    assert text.getvalue().splitlines() == [
        "- - outside",
        "nightly 3 inside",
        "nightly 4 nested",
        "nightly 3 again",
        "nightly 3 back",
        "- - after",
    ]
    contexts = [json.loads(line).get("context") for line in data.getvalue().splitlines()]
    assert contexts == [None, BLOCK, {"job": "nightly", "shard": 4}, BLOCK, BLOCK, None]
    plain = logging.makeLogRecord({}).__dict__.keys() | {"message", "asctime"}
    assert set(made[0].__dict__) <= plain
    assert set(made[1].__dict__) - plain == {"job", "shard", _context.CONTEXT_ATTR}
    assert os.environ.get(_context.ENV_CONTEXT) is None  # gone once every block is left


def test_an_attribute_the_record_has_is_never_overwritten(captured: Any) -> None:
    """``extra=`` of a context field's name keeps its value; the context keeps its own."""
    logger, text, data = captured
    with logfunnel.context(job="nightly", shard=3):
        logger.info("m", extra={"shard": "mine"})
    assert text.getvalue() == "nightly mine m\n"
    obj = json.loads(data.getvalue())
    assert obj["context"] == BLOCK
    assert obj["extra"] == {"shard": "mine"}


def test_decorator_threads_and_tasks_each_have_their_own(captured: Any) -> None:
    """``@context`` wraps each call (coroutines too); threads and tasks do not share fields."""
    logger, text, _ = captured

    @logfunnel.context(job="decorated")
    def work(n: int) -> int:
        logger.info("call %d", n)
        return n

    @logfunnel.context(job="async")
    async def in_task(shard: int) -> None:
        with logfunnel.context(shard=shard):
            await asyncio.sleep(0)  # let the other task run inside its own block
            logger.info("task %d", shard)

    async def both() -> None:
        await asyncio.gather(in_task(1), in_task(2))

    assert work(1) == 1
    asyncio.run(both())
    barrier = threading.Barrier(2, timeout=30)

    def in_thread(shard: int) -> None:
        with logfunnel.context(job="thread", shard=shard):
            barrier.wait()  # both threads are inside their blocks at once
            logger.info("thread %d", shard)

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in (7, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(text.getvalue().splitlines()) == [
        "async 1 task 1",
        "async 2 task 2",
        "decorated - call 1",
        "thread 7 thread 7",
        "thread 8 thread 8",
    ]


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"job": object()}, TypeError, r"job=<object .*values must be str, int, float, bool"),
        ({"job": ["a"]}, TypeError, r"got a list: pass str\(value\)"),
        ({"shard": float("nan")}, ValueError, r"finite"),
        ({"n": 2**70}, ValueError, r"outside 64 bits"),
        ({"name": "x"}, ValueError, r"'name' is a LogRecord attribute"),
        ({"getMessage": 1}, ValueError, r"LogRecord attribute"),
        ({"logfunnel_context": 1}, ValueError, r"logfunnel's own"),
        ({"job": "x" * 1001}, ValueError, r"keep it under 1,000"),
    ],
)
def test_values_that_cannot_travel_are_refused_with_a_message(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Only plain scalars travel; a name a LogRecord has is refused at ``context()``."""
    with pytest.raises(error, match=message):
        logfunnel.context(**fields)


def test_environment_form_round_trips_every_kind_of_value() -> None:
    """``LOGFUNNEL_CONTEXT`` (no json at join): every value comes back as it went."""
    fields = {"s": "a=b\x1fc\\d:é", "i": -3, "f": 0.1, "t": True, "n": None, "e": ""}
    assert _context.decode(_context.encode(fields)) == fields  # type: ignore[arg-type]
    assert _context.decode("garbage") is None
    assert _context.decode("name=s:x") is None  # a reserved name from outside is dropped


def _carried_task(n: int) -> tuple[int, dict[str, Any]]:
    return n, _context.current()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_carry_is_picklable_and_enters_its_fields_in_the_worker(method: str) -> None:
    """``carry(fn)`` captures the fields as data; a pool made outside the block gets them."""
    carried_none = logfunnel.carry(_carried_task)
    with logfunnel.context(job="nightly", shard=3):
        carried = logfunnel.carry(_carried_task)
    clone = pickle.loads(pickle.dumps(carried))
    assert clone.fields == BLOCK
    assert clone(1) == (1, BLOCK)
    assert _context.current() == {}
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context(method)
    ) as pool:
        assert pool.submit(_carried_task, 0).result(60) == (0, {})
        assert pool.submit(carried, 1).result(60) == (1, BLOCK)
        assert pool.submit(carried_none, 2).result(60) == (2, {})
        assert pool.submit(_carried_task, 3).result(60) == (3, {})  # left again after the call


def test_carry_in_a_thread_outside_any_block_takes_the_process_block() -> None:
    """A carry() made in a thread in no block (joblib's result thread) takes the process's block."""
    made: list[logfunnel.carry] = []
    with logfunnel.context(job="nightly", shard=3):
        thread = threading.Thread(target=lambda: made.append(logfunnel.carry(_carried_task)))
        thread.start()
        thread.join(60)
        with logfunnel.context(shard=4):  # nested: the fields most recently entered
            inner = threading.Thread(target=lambda: made.append(logfunnel.carry(_carried_task)))
            inner.start()
            inner.join(60)
    outside = threading.Thread(target=lambda: made.append(logfunnel.carry(_carried_task)))
    outside.start()
    outside.join(60)
    assert [c.fields for c in made] == [BLOCK, {"job": "nightly", "shard": 4}, None]
    # The calling thread's own block, when it is in one, is what it carries.
    with logfunnel.context(job="mine"):
        assert logfunnel.carry(_carried_task).fields == {"job": "mine"}


def test_without_a_funnel_only_the_fields_are_added(capsys: pytest.CaptureFixture[str]) -> None:
    """No funnel: the stdlib's callHandlers runs after the fields are set (FunnelHandler too)."""
    logger = logging.getLogger("cx.orphan")
    logger.propagate = False
    handler = logfunnel.FunnelHandler()
    handler.setFormatter(LineFormatter("%(job)s %(message)s"))
    logger.addHandler(handler)
    try:
        with logfunnel.context(job="nightly"):
            logger.warning("nobody listens")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert "nobody listens" in capsys.readouterr().err  # its own fallback, as without context
    assert logging.Logger.callHandlers.__name__ == "_call_handlers_with_context"
