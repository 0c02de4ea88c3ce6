"""End-to-end: every kind of bad input gives one readable record, and logging goes on.

Each run starts ``tests/scripts/bad_input_child.py`` in a fresh interpreter:
it installs a real funnel (text or JSON file sink, thread or process host),
logs each bad input from its main process, a forked child and a spawned child,
then a sentinel, and shuts down.  The tests read the real log file it leaves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SCRIPT = Path(__file__).parent / "scripts" / "bad_input_child.py"
ORIGINS = ("main", "fork", "spawn")
SINKS = ("text", "json")
HOSTS = ("thread", "process")
RUN_TIMEOUT = 100.0
CUT = re.compile(r"\.\.\. \[logfunnel: [\d,]+ of [\d,]+ characters cut\]")
GIB_CUT = re.compile(r"\.\.\. \[logfunnel: [\d,]+ of 1,073,741,8\d\d characters cut\]")
RECORD_START = re.compile(
    r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(MainProcess|bad-input-fork|bad-input-spawn|logfunnel-writer) [\w.]+: "
)
CONTINUATION = "  | "
MAX_RECORD_CHARS = 4 * 1024 * 1024  # the default frame limit
MAX_PEAK_RSS_KIB = 3 * 1024 * 1024  # 3 GiB for a process that logged a 1 GiB message
NEW_EXCEPTIONS = sys.version_info >= (3, 11)
# The child script sets str()'s limit on int digits (4,300) where Python has one.
INT_DIGITS_LIMIT = hasattr(sys, "set_int_max_str_digits")
HUGE_INT = 10**5000


def _huge(value: Any, sign: str = "") -> bool:
    """Tell whether ``value`` is how an extra holding ``HUGE_INT`` (negated by ``sign``) arrives."""
    if INT_DIGITS_LIMIT:
        return bool(value == f"<{'negative ' if sign else ''}int with 5,001 digits>")
    return value in (int(sign + str(HUGE_INT)), sign + str(HUGE_INT))  # pragma: no cover


# What the text of each case's record must contain (besides its tag).
EXPECTED: dict[str, list[str]] = {
    "arg_lock": ["_thread.lock object at 0x"],
    "arg_recursive": ["[1, [...]] {'self': {...}}"],
    "arg_generator": ["<generator object "],
    "str_raises": ["<unformattable message: RuntimeError: RuntimeError('__str__ refuses')>"],
    "repr_raises": ["<unformattable message: RuntimeError", "<unrepresentable ReprRaises"],
    "invalid_utf8": ["café \\udcff\\udcfe\\udcc3 end"],
    "lone_surrogate": ["\\ud800 and \\udfff end"],
    "nul": ["before\x00after"],
    "exc_unpicklable": ["Traceback (most recent call last)", "UnpicklableError: u"],
    "exc_str_raises": ["StrRaisingError"],
    "exc_chain": [
        "KeyError: 'the root cause'",
        "The above exception was the direct cause of the following exception",
        "ValueError: the direct cause",
        "During handling of the above exception, another exception occurred",
        "RuntimeError: the outer error",
    ],
    "exc_group": (
        [
            "ExceptionGroup: a group (2 sub-exceptions)",
            "a note on the group",
            "ValueError: first inside the group",
            "a note on the first",
            "TypeError: second inside the group",
        ]
        if NEW_EXCEPTIONS
        else ["RuntimeError: no ExceptionGroup before 3.11"]
    ),
    "exc_notes": (
        ["ValueError: annotated", "first note", "spanning two lines", "second note"]
        if NEW_EXCEPTIONS
        else ["ValueError: annotated"]
    ),
    "stack_info": ["Stack (most recent call last)", "in run_cases"],
    "pct_too_few": ["<unformattable message: TypeError", "args=(1,)"],
    "pct_too_many": ["<unformattable message: TypeError", "args=(1, 2)"],
    "pct_wrong_type": ["<unformattable message: TypeError", "'not a number'"],
    "pct_bad_directive": ["<unformattable message: ValueError", "args=(1,)"],
    "arg_int_huge": (
        ["<unformattable message: ValueError", "args=(<int with 5,001 digits>,)"]
        if INT_DIGITS_LIMIT
        else []
    ),
}
CUT_CASES = ("str_huge", "msg_10mb", "msg_1gb")
# Extras the JSON sink shows (the text format has no field for them): key -> check.
EXTRA_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "extra_lock": ("x_lock", lambda v: "_thread.lock object" in v),
    "extra_socket": ("x_sock", lambda v: v.startswith("<socket.socket")),
    "extra_generator": ("x_gen", lambda v: v.startswith("<generator object")),
    "extra_recursive": ("x_list", lambda v: "[...]" in json.dumps(v)),
    "extra_repr_raises": ("x_bad", lambda v: v == "<unrepresentable ReprRaises: RuntimeError>"),
    "extra_repr_huge": ("x_huge", lambda v: CUT.search(v) is not None and len(v) < 20_000),
    "extra_invalid_utf8": ("x_raw", lambda v: v == "café \\udcff\\udcfe\\udcc3"),
    "extra_invalid_utf8_tuple": ("x_rawt", lambda v: v == ["café \\udcff\\udcfe\\udcc3"]),
    "extra_int_huge": ("x_int", _huge),
    "extra_int_huge_negative": ("x_neg", lambda v: _huge(v, "-")),
    "extra_int_huge_nested": ("x_ints", lambda v: v[0] == 1 and _huge(v[1]["k"])),
    "extra_key_tuple_top": ("(1, 2)", lambda v: v == "v"),
    "extra_key_tuple": ("x_tk", lambda v: v == {"(1, 2)": "v"}),
    "extra_key_tuple_nested": (
        "x_tkn",
        lambda v: v == {"a": {"((1, 2), (3,))": [{"(4, 5)": "w"}]}},
    ),
    "extra_key_bytes": ("x_bk", lambda v: v == {"b'k'": 1}),
    "extra_key_repr_raises": (
        "x_rk",
        lambda v: v == {"<unrepresentable ReprRaises: RuntimeError>": 1},
    ),
    "extra_key_repr_raises_top": ("<unrepresentable ReprRaises: RuntimeError>", lambda v: v == 1),
    "extra_key_nan": ("x_nk", lambda v: v == {"nan": 1}),
    "extra_key_int_huge": (
        "x_ik",
        lambda v: len(v) == 1 and _huge(next(iter(v))) and list(v.values()) == [1],
    ),
}


@dataclasses.dataclass
class Record:
    """One record as the sink wrote it: its first line, whole text, and JSON object if any."""

    first_line: str
    text: str
    obj: dict[str, Any] | None = None


@dataclasses.dataclass
class Run:
    """What one run of the child script left: report, records, standard error."""

    sink: str
    host: str
    big_origins: tuple[str, ...]
    report: dict[str, Any]
    lines: list[str]
    records: list[Record]
    stderr: str
    returncode: int

    def find(self, tag: str) -> list[Record]:
        """Return the records whose first line carries ``tag``."""
        return [r for r in self.records if tag in r.first_line]


def _parse_text(lines: list[str]) -> list[Record]:
    records: list[Record] = []
    for line in lines:
        if line.startswith(CONTINUATION) and records:
            records[-1].text += "\n" + line[len(CONTINUATION) :]
        else:
            records.append(Record(line, line))
    return records


def _parse_json(lines: list[str]) -> list[Record]:
    records = []
    for line in lines:
        obj = json.loads(line)
        text = "\n".join(str(obj.get(key, "")) for key in ("message", "exc", "stack"))
        records.append(Record(str(obj.get("message", "")).split("\n")[0], text, obj))
    return records


def _run(tmp: Path, sink: str, host: str) -> Run:
    # A thread host writes its own process's records straight to its handlers,
    # so a 1 GiB message from there would be a 1 GiB line: only children send one.
    big = ("fork", "spawn") if host == "thread" else ORIGINS
    out_log, report_path = tmp / "out.log", tmp / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out_log), sink, host, str(report_path), ",".join(big)],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
        env=env,
        cwd=tmp,
    )
    stderr = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 0, stderr[-5000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    data = out_log.read_bytes()
    text = data.decode("utf-8")  # strict: every byte in the sink is valid UTF-8
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    records = _parse_json(lines) if sink == "json" else _parse_text(lines)
    return Run(sink, host, big, report, lines, records, stderr, proc.returncode)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Run]]:
    """Run the child script once per (sink, host) and cache what it left."""
    cache: dict[tuple[str, str], Run] = {}

    def get(sink: str, host: str) -> Run:
        if (sink, host) not in cache:
            cache[sink, host] = _run(tmp_path_factory.mktemp(f"bad-{sink}-{host}"), sink, host)
        return cache[sink, host]

    yield get
    cache.clear()


def _logging_errors(stderr: str) -> list[str]:
    """Return the "--- Logging error ---" blocks logging's handleError printed."""
    return stderr.split("--- Logging error ---")[1:]


def _from_origin(block: str, origin: str) -> bool:
    """Tell whether a logging error block may come from ``origin``'s records.

    The block's message line names the tag when it can be printed; its call
    stack goes through ``child_main`` exactly when a child logged it.
    """
    if "[BI-" in block:
        return f"[BI-{origin}-" in block
    return ("in child_main" in block) == (origin != "main")


def _check_origin(run: Run, origin: str) -> list[str]:
    """Return every way ``origin``'s bad inputs failed to give one readable record each."""
    problems: list[str] = []
    for case in run.report["cases"]:
        if case == "msg_1gb" and origin not in run.big_origins:
            continue
        tag = f"[BI-{origin}-{case}]"
        found = run.find(tag)
        if len(found) != 1:
            problems.append(f"{tag}: {len(found)} records")
            continue
        record = found[0]
        missing = [s for s in EXPECTED.get(case, []) if s not in record.text]
        if missing:
            problems.append(f"{tag}: missing {missing!r} in {record.text[:500]!r}")
        if case in CUT_CASES and (
            CUT.search(record.text) is None or len(record.text) > MAX_RECORD_CHARS
        ):
            problems.append(f"{tag}: {len(record.text):,} characters, no cut marker")
        if case == "msg_1gb" and GIB_CUT.search(record.text) is None:
            problems.append(f"{tag}: the marker does not say a GiB was cut")
        if run.sink == "json" and case in EXTRA_CHECKS:
            key, check = EXTRA_CHECKS[case]
            assert record.obj is not None
            extras = record.obj.get("extra", {})  # schema v1: extras under "extra"
            if key not in extras or not check(extras[key]):
                problems.append(f"{tag}: extra {key}={str(extras.get(key))[:300]!r}")
        if case == "newlines":
            expected = f"{tag} line1\nline2\nline3\nline4\n"
            if run.sink == "json":
                expected = f"{tag} line1\nline2\r\nline3\rline4\n"
                assert record.obj is not None
                if record.obj["message"] != expected:
                    problems.append(f"{tag}: message {record.obj['message']!r}")
            elif record.text.split(": ", 1)[1] != expected:
                problems.append(f"{tag}: record text {record.text!r}")
    problems.extend(
        f"logging error for {origin}: {block[:800]}"
        for block in _logging_errors(run.stderr)
        if _from_origin(block, origin)
    )
    return problems


def _params() -> list[Any]:
    params = []
    for sink in SINKS:
        for host in HOSTS:
            for origin in ORIGINS:
                marks: list[Any] = []
                params.append(pytest.param(sink, host, origin, marks=marks))
    return params


@pytest.mark.parametrize(("sink", "host", "origin"), _params())
def test_each_bad_input_gives_exactly_one_readable_record(
    runs: Callable[[str, str], Run], sink: str, host: str, origin: str
) -> None:
    """Every bad input from one process gives exactly one record, with the documented text."""
    run = runs(sink, host)
    problems = _check_origin(run, origin)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("sink", SINKS)
def test_logging_goes_on_after_bad_input(
    runs: Callable[[str, str], Run], sink: str, host: str
) -> None:
    """Each process's sentinel after the bad inputs arrives once; every process exits cleanly."""
    run = runs(sink, host)
    for origin in ORIGINS:
        assert len(run.find(f"[BI-{origin}-after]")) == 1, origin
    assert run.report["exitcodes"] == {"fork": 0, "spawn": 0}
    assert run.report["raised_main"] == 0
    assert run.report["shutdown"] is True


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("sink", SINKS)
def test_no_logging_call_raised_and_no_traceback_from_logfunnel(
    runs: Callable[[str, str], Run], sink: str, host: str
) -> None:
    """No logging call raised, no handler reported a logging error, and no traceback was written."""
    run = runs(sink, host)
    assert "BI-RAISED" not in run.stderr
    assert not _logging_errors(run.stderr), run.stderr[:3000]
    assert "Traceback" not in run.stderr, run.stderr[:3000]
    assert "logfunnel" not in run.stderr, run.stderr[:3000]


@pytest.mark.parametrize("host", HOSTS)
def test_text_sink_keeps_each_record_on_its_own_lines(
    runs: Callable[[str, str], Run], host: str
) -> None:
    """In the text sink every line starts a record or is a "  | " continuation, never ambiguous."""
    run = runs("text", host)
    for line in run.lines:
        assert "\r" not in line
        assert line.startswith(CONTINUATION) or RECORD_START.match(line), line[:300]
    for origin in ORIGINS:
        (record,) = run.find(f"[BI-{origin}-exc_chain]")
        assert record.text.count("\n") >= 10
        (newlines,) = run.find(f"[BI-{origin}-newlines]")
        index = run.lines.index(newlines.first_line)
        assert run.lines[index : index + 5] == [
            newlines.first_line,
            "  | line2",
            "  | line3",
            "  | line4",
            "  | ",
        ]
        assert RECORD_START.match(run.lines[index + 5])


@pytest.mark.parametrize("host", HOSTS)
def test_json_sink_has_exactly_one_valid_object_per_line(
    runs: Callable[[str, str], Run], host: str
) -> None:
    """Every line of the JSON sink is one JSON object with a message: newlines are escaped."""
    run = runs("json", host)
    for line in run.lines:
        obj = json.loads(line)
        assert isinstance(obj, dict)
        assert isinstance(obj["message"], str)
    assert len(run.records) == len(run.lines)
    assert any("\n" in r.obj["message"] for r in run.records if r.obj is not None)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("sink", SINKS)
def test_one_gibibyte_message_is_cut_and_memory_stays_bounded(
    runs: Callable[[str, str], Run], sink: str, host: str
) -> None:
    """A 1 GiB message arrives cut with a marker, and its process's peak RSS stays under 3 GiB."""
    run = runs(sink, host)
    for origin in run.big_origins:
        (record,) = run.find(f"[BI-{origin}-msg_1gb]")
        assert GIB_CUT.search(record.text), record.text[-300:]
        assert len(record.text) < MAX_RECORD_CHARS
        (rss,) = run.find(f"[BI-{origin}-rss]")
        peak_kib = int(rss.first_line.rsplit(" ", 1)[1])
        assert 1024 * 1024 < peak_kib < MAX_PEAK_RSS_KIB, (origin, peak_kib)


def _strict_json(line: str) -> Any:
    """Parse ``line`` as RFC 8259 JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_json_sink_writes_strict_json_for_non_finite_extras() -> None:
    """A record from the wire with NaN and infinite extras gives a line of strict JSON."""
    from logfunnel._core import wire as _wire  # noqa: PLC0415 - only this test needs the codec
    from logfunnel.sinks.files import JsonFormatter  # noqa: PLC0415

    record = logging.LogRecord("bad.input", logging.INFO, __file__, 1, "non-finite", None, None)
    record.__dict__.update(x_nan=math.nan, x_inf=math.inf, x_list=[-math.inf])
    tables = _wire.Tables()
    *definitions, fields = _wire.FrameReader().feed(_wire.Encoder().record(record))
    for definition in definitions:  # the record's SITE and THREAD frames
        tables.define(definition)
    line = JsonFormatter().format(_wire.decode_record(fields, tables))
    assert "\n" not in line
    obj = _strict_json(line)
    assert obj["message"] == "non-finite"
