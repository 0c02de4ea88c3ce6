"""Unit and property tests of the wire codec: Encoder.record, FrameReader.feed, decode_record."""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import struct
import sys
import threading
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from logfunnel import _wire
from logfunnel._sinks import JsonFormatter, LineFormatter

CUT_MARKER = re.compile(
    r"^(.*)\.\.\. \[logfunnel: ([\d,]+) of ([\d,]+) characters cut\]$", re.DOTALL
)
FIELD_LIMIT = _wire.DEFAULT_FRAME_LIMIT // 16

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_record(
    msg: object = "hello %s",
    args: Any = ("world",),
    *,
    name: str = "test.wire",
    level: int = logging.INFO,
    exc_info: Any = None,
    func: str | None = "make_record",
    extra: dict[str, Any] | None = None,
    stack_info: str | None = None,
) -> logging.LogRecord:
    """Build a record the way Logger.makeRecord does."""
    record = logging.LogRecord(name, level, __file__, 42, msg, args, exc_info, func, stack_info)
    for key, value in (extra or {}).items():
        record.__dict__[key] = value
    return record


def table_text_limit(frame_limit: int = _wire.DEFAULT_FRAME_LIMIT) -> int:
    """Return how many characters of a site's or thread's text travel under ``frame_limit``."""
    return max(16, min(_wire.TABLE_TEXT_LIMIT, frame_limit // 32))


def split_frames(data: bytes, frame_limit: int = _wire.DEFAULT_FRAME_LIMIT) -> list[list[Any]]:
    """Split the bytes of one or more frames into their arrays, each payload within the limit."""
    offset = 0
    while offset < len(data):
        (size,) = _wire.HEADER.unpack_from(data, offset)
        assert size <= frame_limit, f"a frame of {size} bytes exceeds the limit {frame_limit}"
        offset += _wire.HEADER_SIZE + size
    assert offset == len(data), "the bytes end in the middle of a frame"
    reader = _wire.FrameReader(frame_limit)
    frames = reader.feed(data)
    assert reader.pending == 0
    return frames


def decode_frames(frames: list[list[Any]], tables: _wire.Tables) -> list[logging.LogRecord]:
    """Handle frames as the writer does: definitions into ``tables``, RECORDs decoded."""
    records = []
    for fields in frames:
        if fields[0] in (_wire.SITE, _wire.THREAD):
            tables.define(fields)
        else:
            assert fields[0] == _wire.RECORD, fields
            records.append(_wire.decode_record(fields, tables))
    return records


def kinds_of(data: bytes) -> list[int]:
    """Return the kind of every frame in ``data``."""
    return [fields[0] for fields in split_frames(data)]


def roundtrip(record: logging.LogRecord, frame_limit: int = _wire.DEFAULT_FRAME_LIMIT) -> Any:
    """Encode, frame, read back and decode one record; return the rebuilt record.

    A new encoder's first record comes as a SITE, a THREAD and a RECORD frame,
    each within the frame limit.
    """
    frames = split_frames(_wire.Encoder(frame_limit).record(record), frame_limit)
    assert [fields[0] for fields in frames] == [_wire.SITE, _wire.THREAD, _wire.RECORD]
    (decoded,) = decode_frames(frames, _wire.Tables())
    return decoded


def backslashed(text: str) -> str:
    """Return ``text`` as the codec re-encodes strings that are not valid Unicode."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_degraded(original: str, received: str, limit: int) -> None:
    """Assert ``received`` is ``original`` or a documented degradation of it."""
    if len(original) <= limit and received == backslashed(original):
        return
    expected = backslashed(_wire.cut(original, limit))
    if received == expected:
        return
    # Cut a second time to fit the frame limit: a cut of the first form.
    match = CUT_MARKER.match(received)
    assert match is not None, f"{received[:200]!r} is neither {expected[:200]!r} nor cut"
    assert expected.startswith(match.group(1))


def format_both(record: logging.LogRecord) -> tuple[str, str]:
    """Format a decoded record with both stock sinks' formatters; neither may raise."""
    line = LineFormatter("%(asctime)s %(levelname)s %(name)s %(funcName)s: %(message)s").format(
        record
    )
    as_json = JsonFormatter().format(record)
    assert "\n" not in as_json
    json.loads(as_json)
    return line, as_json


# -- round trips ------------------------------------------------------------------------


def test_every_allow_listed_field_round_trips() -> None:
    """Every field in LOGRECORD_FIELDS, and every extra, arrives with the sender's value."""
    try:
        raise ValueError("boom")  # noqa: TRY301 - an exception with a real traceback
    except ValueError:
        exc_info = sys.exc_info()
    record = make_record(exc_info=exc_info, stack_info="Stack (most recent call last):\n  x")
    record.taskName = "task-7"  # 3.12+ sets it; older versions must carry it too
    record.__dict__["custom"] = {"a": [1, 2.5, None, True, b"\x00\xff"]}
    decoded = roundtrip(record)
    expected = dict(record.__dict__)
    expected["msg"] = record.getMessage()
    expected["exc_text"] = logging.Formatter().formatException(exc_info)
    assert len(set(_wire.LOGRECORD_FIELDS)) == len(_wire.LOGRECORD_FIELDS)
    assert set(_wire.LOGRECORD_FIELDS) <= set(record.__dict__)
    for name in _wire.LOGRECORD_FIELDS:
        assert getattr(decoded, name) == expected[name], name
    assert decoded.__dict__["custom"] == record.__dict__["custom"]
    assert decoded.args is None
    assert decoded.exc_info is None
    assert "ValueError: boom" in decoded.exc_text
    assert decoded.getMessage() == "hello world"


def test_extras_plain_values_travel_as_they_are() -> None:
    """Plain extras (and lists, tuples and dicts of them) keep their value; tuples become lists."""
    extra = {
        "s": "text",
        "i": -(2**63),
        "u": 2**64 - 1,
        "f": 1.5,
        "nan": math.inf,
        "b": True,
        "n": None,
        "raw": b"\x00\x01\xff",
        "nested": {"list": [1, [2, [3]]], "tuple": (1, "two")},
    }
    decoded = roundtrip(make_record(extra=extra))
    for key, value in extra.items():
        if key != "nested":
            assert getattr(decoded, key) == value
    assert decoded.nested == {"list": [1, [2, [3]]], "tuple": [1, "two"]}


def test_extras_that_are_not_plain_travel_as_repr() -> None:
    """Locks, sockets, generators, recursive and too deep or too long structures become repr()."""
    lock = threading.Lock()
    recursive: list[Any] = [1]
    recursive.append(recursive)
    deep: list[Any] = []
    node = deep
    for _ in range(20):
        node.append([])
        node = node[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        extra = {
            "lock": lock,
            "sock": sock,
            "gen": (i for i in range(3)),
            "recursive": recursive,
            "deep": deep,
            "long": list(range(1001)),
            "big": 2**70,
            "keys": {1: "int key", (2, 3): "tuple key"},
            "subclass": type("MyDict", (dict,), {})(a=1),
        }
        decoded = roundtrip(make_record(extra=extra))
        assert decoded.lock == repr(lock)
        assert decoded.sock == repr(sock)
    assert decoded.gen.startswith("<generator object")
    node = decoded.recursive  # unrolled to the depth limit, then its repr
    for _ in range(7):
        assert node[0] == 1
        node = node[1]
    assert node == [1, repr(recursive)]
    assert isinstance(decoded.deep, list)
    assert "[[[" in json.dumps(decoded.deep)
    assert decoded.long == repr(list(range(1001)))
    assert decoded.big == str(2**70)
    assert decoded.keys == {"1": "int key", "(2, 3)": "tuple key"}
    assert decoded.subclass == "{'a': 1}"


def test_extra_whose_repr_raises_becomes_a_marker() -> None:
    """An extra whose __repr__ raises travels as <unrepresentable T: ExcType>."""

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    decoded = roundtrip(make_record(extra={"bad": Bad()}))
    assert decoded.bad == (
        "<unrepresentable test_extra_whose_repr_raises_becomes_a_marker.<locals>.Bad: RuntimeError>"
    )


@pytest.fixture
def int_digits_limit() -> Any:
    """Set str()'s limit on int digits to its default (4,300) for one test."""
    if not hasattr(sys, "set_int_max_str_digits"):
        pytest.skip("this Python has no limit on int digits")
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    yield
    sys.set_int_max_str_digits(saved)


@pytest.mark.usefixtures("int_digits_limit")
def test_ints_too_long_for_str_travel_as_their_digit_count() -> None:
    """An int str() refuses (over 4,300 digits) arrives as <int with N digits>, the record whole.

    As a value, in a list or dict, as a key, in a text field and in a repr (issue 9, item 7).
    """
    huge = 10**5000
    record = make_record(
        "huge %s",
        (huge,),
        extra={"x": huge, "neg": -huge, "inner": [1, {"k": huge}], "keyed": {huge: 1}},
    )
    record.name = huge  # type: ignore[assignment]  # a filter's doing
    decoded = roundtrip(record)
    assert decoded.x == "<int with 5,001 digits>"
    assert decoded.neg == "<negative int with 5,001 digits>"
    assert decoded.inner == [1, {"k": "<int with 5,001 digits>"}]
    assert decoded.keyed == {"<int with 5,001 digits>": 1}
    assert decoded.name == "<int with 5,001 digits>"
    assert decoded.msg.startswith("<unformattable message: ValueError")
    assert decoded.msg.endswith("args=(<int with 5,001 digits>,)")
    assert _wire.safe_repr({(1, huge): [huge]}) == (
        "{(1, <int with 5,001 digits>): [<int with 5,001 digits>]}"
    )
    assert _wire.int_text(10**4299) == str(10**4299)  # within the limit: its digits


def test_digit_count_of_a_long_int_is_exact() -> None:
    """The digit count is exact around every power of ten and two; past 2**18 bits, "about"."""
    if hasattr(sys, "set_int_max_str_digits"):
        saved = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)  # str() may convert them all, to check
    try:
        values = [10**n + d for n in range(4290, 4400) for d in (-1, 0, 1)]
        values += [2**b + d for b in range(14_000, 15_000) for d in (-1, 0)]
        values += [10**70_000 - 1, 10**70_000, 2**235_112]  # near a close call of the float
        for value in values:
            assert _wire._long_int(value) == f"<int with {len(str(value)):,} digits>"
            assert _wire._long_int(-value) == f"<negative int with {len(str(value)):,} digits>"
    finally:
        if hasattr(sys, "set_int_max_str_digits"):
            sys.set_int_max_str_digits(saved)
    assert _wire._long_int(10**1_000_000) == "<int with about 1,000,000 digits>"


def test_safe_repr_never_raises() -> None:
    """A repr that raises, returns a lying str subclass, or a type whose name raises: a marker."""

    class NoName(type):
        def __getattribute__(cls, name: str) -> Any:
            if name == "__qualname__":
                raise RuntimeError("no name")
            return super().__getattribute__(name)

    class Nameless(metaclass=NoName):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Lying(str):
        __slots__ = ()

        def __len__(self) -> int:
            return 0

    class LyingRepr:
        def __repr__(self) -> str:
            return Lying("x" * 20_000)

    class Raises:
        def __repr__(self) -> str:
            raise ValueError("no repr")

    assert _wire.safe_repr(Nameless()) == "<unrepresentable object>"
    assert _wire.safe_repr(Raises()).startswith("<unrepresentable ")
    assert _wire.safe_repr(Raises()).endswith("Raises: ValueError>")
    assert CUT_MARKER.match(_wire.safe_repr(LyingRepr())) is not None
    assert _wire.plain({Nameless(): [Raises()]}) == {
        "<unrepresentable object>": [_wire.safe_repr(Raises())]
    }


def _strict_json(line: str) -> Any:
    """Parse ``line`` as RFC 8259 JSON (no NaN or Infinity), checking it is one line."""
    assert "\n" not in line

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.usefixtures("int_digits_limit")
def test_json_formatter_writes_extras_json_cannot_hold_as_the_codec_sends_them() -> None:
    """In the installer's own JSON sink, odd keys and long ints give one line of strict JSON.

    What the sink shows is what a record from another process shows: the codec's plain form.
    """
    bad_key = _ReprRaises()
    extra = {
        "x_int": 10**5000,
        "x_tk": {(1, 2): "v"},
        "x_tkn": {"a": {((1, 2), (3,)): [{(4, 5): "w"}]}},
        "x_bk": {b"k": 1},
        "x_rk": {bad_key: 1},
        "x_nk": {math.nan: 1},
        "x_ik": {10**5000: 1},
        "x_raw": ("caf\udcc3",),
    }
    record = make_record("m" * 50_000, None, extra=extra)
    record.__dict__[(1, 2)] = "top"  # type: ignore[index]
    record.__dict__[bad_key] = "top-bad"  # type: ignore[index]
    obj = _strict_json(JsonFormatter().format(record))
    assert obj["message"] == "m" * 50_000  # the record's own texts are not cut like extras
    assert obj["x_int"] == "<int with 5,001 digits>"
    assert obj["x_tk"] == {"(1, 2)": "v"}
    assert obj["x_tkn"] == {"a": {"((1, 2), (3,))": [{"(4, 5)": "w"}]}}
    assert obj["x_bk"] == {"b'k'": 1}
    assert obj["x_rk"] == {"<unrepresentable _ReprRaises: RuntimeError>": 1}
    assert obj["x_nk"] == {"nan": 1}
    assert obj["x_ik"] == {"<int with 5,001 digits>": 1}
    assert obj["x_raw"] == ["caf\\udcc3"]
    assert obj["(1, 2)"] == "top"
    assert obj["<unrepresentable _ReprRaises: RuntimeError>"] == "top-bad"
    decoded = roundtrip(record)  # the same record from another process: the same object
    assert _strict_json(JsonFormatter().format(decoded)) == obj


def test_huge_repr_of_an_extra_is_cut_with_a_marker() -> None:
    """An extra whose repr is 5 MB arrives cut to 10,000 characters, saying how much was cut."""

    class Huge:
        def __repr__(self) -> str:
            return "r" * 5_000_000

    decoded = roundtrip(make_record(extra={"huge": Huge()}))
    match = CUT_MARKER.match(decoded.huge)
    assert match is not None
    assert match.group(1) == "r" * 10_000
    assert match.group(2) == f"{5_000_000 - 10_000:,}"


def test_shared_references_in_extras_cost_bounded_memory() -> None:
    """A list that shares one big list a million times encodes within the budget, not its size."""
    inner = [0] * 1000
    fan = [[inner] * 1000] * 1000  # a billion items through shared references
    big_strings = ["x" * 1_000_000] * 1001  # a repr of a gigabyte
    tracemalloc.start()
    try:
        fanned = roundtrip(make_record(extra={"fan": fan}))
        strings = roundtrip(make_record(extra={"strings": big_strings}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
    assert _wire.EXTRA_CUT_MARKER in json.dumps(fanned.fan)
    assert strings.strings.startswith("['xxxxx")
    assert strings.strings.endswith("... [logfunnel: repr cut at 10,000 characters]")


def test_unformattable_message_says_what_went_wrong() -> None:
    """A %-mismatch or a __str__ that raises gives a message naming the error, msg and args."""

    class StrRaises:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    mismatch = roundtrip(make_record("tag-a %s %s", (1,)))
    assert mismatch.msg.startswith("<unformattable message: TypeError: ")
    assert "msg='tag-a %s %s' args=(1,)" in mismatch.msg
    wrong_type = roundtrip(make_record("tag-b %d", ("x",)))
    assert wrong_type.msg.startswith("<unformattable message: TypeError")
    raising = roundtrip(make_record("tag-c %s", (StrRaises(),)))
    assert raising.msg.startswith("<unformattable message: RuntimeError: RuntimeError('no str')>")
    assert "tag-c" in raising.msg


def test_unformattable_huge_message_stays_bounded() -> None:
    """The account of an unformattable 50 MB template repr()s at most 2,000 characters of it.

    ``%`` itself allocates a buffer the size of the template before it fails;
    a whole ``repr`` of 50 MB of NULs would take 200 MB more.
    """
    template = "tag %s %s " + "\x00" * 50_000_000
    tracemalloc.start()
    try:
        decoded = roundtrip(make_record(template, (1,)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(template) * 1.5
    assert decoded.msg.startswith("<unformattable message: TypeError")
    assert "characters cut]" in decoded.msg
    assert len(decoded.msg) < 10_000


def test_long_message_traceback_and_stack_are_cut_with_markers() -> None:
    """Text over the field limit ends with a marker saying how many characters were cut."""
    long_text = "m" * (FIELD_LIMIT + 12_345)
    try:
        raise ValueError("e" * (FIELD_LIMIT * 2))  # noqa: TRY301
    except ValueError:
        exc_info = sys.exc_info()
    decoded = roundtrip(make_record(long_text, None, exc_info=exc_info, stack_info=long_text))
    for text in (decoded.msg, decoded.stack_info):
        match = CUT_MARKER.match(text)
        assert match is not None
        assert match.group(1) == "m" * FIELD_LIMIT
        assert match.group(2) == "12,345"
        assert match.group(3) == f"{len(long_text):,}"
    assert CUT_MARKER.match(decoded.exc_text) is not None
    assert decoded.exc_text.startswith("Traceback (most recent call last):")


def test_invalid_unicode_is_backslash_escaped_everywhere() -> None:
    """Lone surrogates in the message, traceback, stack and extras arrive backslash-escaped."""
    bad = b"caf\xc3\xa9 \xff\xfe end".decode("utf-8", "surrogateescape")
    record = make_record(bad + " %s", ("\ud800",), stack_info=bad, extra={"e": bad, bad: 1})
    record.exc_text = bad
    decoded = roundtrip(record)
    assert decoded.msg == "café \\udcff\\udcfe end \\ud800"
    assert decoded.stack_info == "café \\udcff\\udcfe end"
    assert decoded.exc_text == "café \\udcff\\udcfe end"
    assert decoded.e == "café \\udcff\\udcfe end"
    assert decoded.__dict__["café \\udcff\\udcfe end"] == 1


def test_long_message_with_lone_surrogate_keeps_the_field_limit() -> None:
    """A lone surrogate does not make a long message be cut shorter than the field limit."""
    text = "a" * 50_000 + "\udcff"
    decoded = roundtrip(make_record(text, None))
    assert decoded.msg == "a" * 50_000 + "\\udcff"


def test_nul_and_newlines_travel_unchanged() -> None:
    """NUL bytes and every kind of newline arrive as sent (the sinks decide how to write them)."""
    text = "a\x00b\nc\r\nd\re\u2028f"
    assert roundtrip(make_record(text, None)).msg == text


def test_exception_chains_groups_notes_and_unpicklable_exceptions() -> None:
    """Chained, grouped, annotated and unpicklable exceptions travel as traceback text."""

    class UnpicklableError(Exception):
        def __init__(self) -> None:
            super().__init__("cannot pickle me")
            self.lock = threading.Lock()

    try:
        try:
            raise UnpicklableError  # noqa: TRY301
        except UnpicklableError as exc:
            if sys.version_info >= (3, 11):
                exc.add_note("a note on the cause")
            raise KeyError("outer") from exc
    except KeyError:
        exc_info = sys.exc_info()
    decoded = roundtrip(make_record("chained", None, exc_info=exc_info))
    assert "cannot pickle me" in decoded.exc_text
    assert "The above exception was the direct cause" in decoded.exc_text
    assert "KeyError: 'outer'" in decoded.exc_text
    if sys.version_info >= (3, 11):
        assert "a note on the cause" in decoded.exc_text
        group = ExceptionGroup("many", [ValueError("one"), TypeError("two")])  # noqa: F821
        grouped = roundtrip(make_record("grouped", None, exc_info=(ExceptionGroup, group, None)))  # noqa: F821
        assert "ExceptionGroup: many (2 sub-exceptions)" in grouped.exc_text
        assert "ValueError: one" in grouped.exc_text


def test_exception_whose_str_raises_is_still_rendered() -> None:
    """An exception whose __str__ raises still gives a traceback naming its type."""

    class BadStrError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        raise BadStrError  # noqa: TRY301
    except BadStrError:
        exc_info = sys.exc_info()
    decoded = roundtrip(make_record("bad str", None, exc_info=exc_info))
    assert "BadStrError" in decoded.exc_text


def test_odd_standard_fields_are_coerced_to_what_the_writer_accepts() -> None:
    """Records from makeLogRecord({}) or filters that set odd field values still decode."""
    empty = roundtrip(logging.makeLogRecord({}))
    assert empty.name == "root"
    assert empty.funcName is None
    no_func = roundtrip(make_record(func=None))
    assert no_func.funcName is None
    odd = make_record()
    odd.lineno = "12"  # type: ignore[assignment]
    odd.levelno = True
    odd.created = math.nan
    odd.msecs = math.inf
    odd.thread = 2**80
    odd.threadName = 7  # type: ignore[assignment]
    odd.pathname = None  # type: ignore[assignment]
    decoded = roundtrip(odd)
    assert (decoded.lineno, decoded.levelno, decoded.created, decoded.msecs) == (12, 1, 0.0, 0.0)
    assert decoded.thread is None
    assert decoded.threadName == "7"
    assert decoded.pathname == ""
    format_both(decoded)


def test_record_too_large_even_when_cut_becomes_a_minimal_record() -> None:
    """A record whose standard fields alone exceed the frame limit still arrives, as a marker."""
    record = make_record(name="n" * 100_000, func="f" * 100_000)
    record.levelname = "L" * 100_000
    cut = roundtrip(record, frame_limit=4096)  # each text field cut to 64 characters
    assert cut.msg == "hello world"
    assert CUT_MARKER.match(cut.name) is not None
    assert cut.name.startswith("n" * 64 + "... [logfunnel: ")
    # funcName travels in the SITE frame, cut to the table text limit (128 characters here).
    assert cut.funcName.startswith("f" * table_text_limit(4096) + "... [logfunnel: ")
    format_both(cut)
    for key in ("msg", "exc_text", "stack_info", "taskName", "extra_text"):
        record.__dict__[key] = "t" * 100_000  # the texts of the RECORD frame itself
    for key in ("pathname", "filename", "module", "threadName", "processName"):
        record.__dict__[key] = "z" * 100_000  # in SITE and THREAD frames
    record.args = None
    minimal = roundtrip(record, frame_limit=600)
    assert minimal.msg == _wire.TOO_LARGE_MESSAGE
    assert minimal.name.startswith("n" * 100)
    assert minimal.levelno == logging.INFO
    for key in ("pathname", "filename", "module", "threadName", "processName"):
        assert getattr(minimal, key).startswith("z" * table_text_limit(600) + "... [logfunnel: ")
    format_both(minimal)


@pytest.mark.parametrize("frame_limit", [1024, 4096, 65536, _wire.DEFAULT_FRAME_LIMIT])
def test_frame_limit_respected_for_huge_everything(frame_limit: int) -> None:
    """A record with a huge message, traceback, stack and extras fits the frame limit."""
    huge = "\U0001f600" * 2_000_000  # 4 UTF-8 bytes a character
    record = make_record(huge, None, stack_info=huge, extra={f"k{i}": huge for i in range(50)})
    record.exc_text = huge
    decoded = roundtrip(record, frame_limit)  # asserts the limit
    assert decoded.levelno == logging.INFO
    format_both(decoded)


def test_control_frames_with_invalid_unicode_still_encode() -> None:
    """A HELLO whose process name holds a lone surrogate encodes (escaped) instead of raising.

    Regression: the UnicodeEncodeError made the sender treat the writer as
    unreachable, so such a process never connected.
    """
    encoder = _wire.Encoder()
    hello = encoder.frame(_wire.hello_fields(7, "worker-\udcff" + "n" * 500))
    (fields,) = _wire.FrameReader().feed(hello)
    assert fields[:3] == [_wire.HELLO, _wire.PROTOCOL_VERSION, 7]
    assert fields[3].startswith("worker-\\udcff")
    assert len(fields[3]) < 300
    (flush,) = _wire.FrameReader().feed(encoder.frame([_wire.FLUSH, "\ud800"]))
    assert flush == [_wire.FLUSH, "\\ud800"]


# -- property tests of the codec --------------------------------------------------------

plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50)
)
plain_values = st.recursive(
    plain_leaves,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# No backslashes: "\\udcff" and a lone "\udcff" would be one key once escaped.
extra_keys = st.text(min_size=1, max_size=12).filter(
    lambda k: k not in _wire.STANDARD_ATTRS and not hasattr(logging.LogRecord, k) and "\\" not in k
)


class Opaque:
    """An object msgpack cannot encode, with a fixed repr."""

    def __repr__(self) -> str:
        """Return a fixed text."""
        return "<Opaque>"


# Ints str() refuses under its default limit of 4,300 digits.
huge_ints = st.integers(min_value=4300, max_value=4400).map(lambda n: 10**n + 7) | st.integers(
    min_value=4300, max_value=4400
).map(lambda n: -(10**n))
# Keys msgpack and JSON cannot hold as they are (issue 9, item 7).
odd_keys = (
    st.integers()
    | huge_ints
    | st.floats()
    | st.tuples(st.integers(), st.text(max_size=3))
    | st.tuples(st.tuples(st.integers()), st.none())
    | st.binary(max_size=4)
    | st.builds(_ReprRaises)
    | st.none()
    | st.booleans()
)
any_values = st.recursive(
    plain_leaves
    | st.integers()
    | huge_ints
    | st.floats()
    | st.text(max_size=20_000)
    | st.builds(Opaque)
    | st.builds(threading.Lock),
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | odd_keys, children, max_size=5)
    | st.sets(st.integers(), max_size=3),
    max_leaves=15,
)
texts = st.text() | st.text(alphabet=st.characters(codec=None), max_size=30) | st.just("")


@PROPERTY
@given(extra=st.dictionaries(extra_keys, plain_values, max_size=5))
def test_plain_extras_round_trip_exactly(extra: dict[str, Any]) -> None:
    """Any plain extra (valid Unicode, within the size limits) arrives with the same value."""
    assume(all(not _has_surrogate(v) and not _has_surrogate(k) for k, v in extra.items()))
    decoded = roundtrip(make_record(extra=extra))
    for key, value in extra.items():
        assert decoded.__dict__[key] == value


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


@PROPERTY
@given(
    msg=texts,
    name=texts,
    level=st.integers(min_value=0, max_value=2**31),
    func=st.none() | texts,
    stack=st.none() | texts,
    exc_text=st.none() | texts,
    extra=st.dictionaries(extra_keys, any_values, max_size=4),
    frame_limit=st.sampled_from([1024, 4096, _wire.DEFAULT_FRAME_LIMIT]),
)
@example(
    msg="\udcff" * 10,
    name="\ud800",
    level=0,
    func=None,
    stack=None,
    exc_text="x" * 300_000,
    extra={},
    frame_limit=_wire.DEFAULT_FRAME_LIMIT,
)
def test_any_record_round_trips_or_degrades_to_a_documented_form(
    msg: str,
    name: str,
    level: int,
    func: str | None,
    stack: str | None,
    exc_text: str | None,
    extra: dict[str, Any],
    frame_limit: int,
) -> None:
    """Every field arrives equal, backslash-escaped, cut with a marker, or as a too-large record."""
    record = make_record(msg, None, name=name, level=level, func=func, stack_info=stack)
    record.exc_text = exc_text
    for key, value in extra.items():
        record.__dict__[key] = value
    decoded = roundtrip(record, frame_limit)
    format_both(decoded)
    assert decoded.levelno == level
    if decoded.msg == _wire.TOO_LARGE_MESSAGE and msg != _wire.TOO_LARGE_MESSAGE:
        assert frame_limit < _wire.DEFAULT_FRAME_LIMIT
        return
    limit = max(256, frame_limit // 16)
    check_degraded(msg, decoded.msg, limit)
    check_degraded(name, decoded.name, 10**9)
    for original, received in ((stack, decoded.stack_info), (exc_text, decoded.exc_text)):
        if not original:  # "" is falsy: an exc_text of "" means no traceback
            assert received in (None, "") if original == "" else received is None
        else:
            check_degraded(original, received, limit)
    if func is None:
        assert decoded.funcName is None
    else:  # in the SITE frame, cut to the table text limit
        check_degraded(func, decoded.funcName, table_text_limit(frame_limit))
    cut_extras = "logfunnel_extra_cut" in decoded.__dict__
    for key, value in extra.items():
        if cut_extras:
            break
        received = decoded.__dict__[backslashed(key)]
        if type(value) in (str, bytes, bool, type(None), float) or (
            type(value) is int and -(2**63) <= value <= 2**64 - 1
        ):
            if isinstance(value, str):
                check_degraded(value, received, 10_000)
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(received)
            else:
                assert received == value
        elif isinstance(value, int):
            assert received == _wire.int_text(value)
        elif isinstance(value, (Opaque, type(threading.Lock()), set)):
            assert isinstance(received, str)


@PROPERTY
@given(
    texts_=st.lists(st.text(max_size=3000) | st.binary(max_size=3000), max_size=40),
    frame_limit=st.integers(min_value=600, max_value=70_000),
)
def test_frame_limit_is_respected_for_any_input(texts_: list[Any], frame_limit: int) -> None:
    """Whatever the message, stack and extras, the frame payload never exceeds the limit."""
    joined = "".join(t if isinstance(t, str) else t.decode("latin-1") for t in texts_)
    extra = {f"x{i}": t for i, t in enumerate(texts_)}
    record = make_record(joined * 10, None, stack_info=joined, extra=extra)
    decoded = roundtrip(record, frame_limit)  # asserts the limit
    format_both(decoded)


@PROPERTY
@given(extra=st.dictionaries(odd_keys | extra_keys, any_values, max_size=4))
def test_extras_under_any_keys_give_one_record_and_strict_json(extra: dict[Any, Any]) -> None:
    """Extras under keys of any type, holding anything: the record arrives, the JSON sink is strict.

    Both where the record is logged (the installer's own JSON sink) and after the wire.
    """
    record = make_record("odd keys", None)
    record.__dict__.update(extra)  # what Logger.makeRecord does with extra=
    decoded = roundtrip(record)
    format_both(decoded)
    assert decoded.msg == "odd keys"
    assert _strict_json(JsonFormatter().format(record))["message"] == "odd keys"
    assert _strict_json(JsonFormatter().format(decoded))["message"] == "odd keys"


repr_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
    | st.sets(st.integers(), max_size=4)
    | st.frozensets(st.text(max_size=3), max_size=4),
    max_leaves=25,
)


@PROPERTY
@given(value=repr_values)
def test_bounded_repr_equals_repr_when_within_the_limit(value: Any) -> None:
    """For built-in containers whose repr fits the limit, safe_repr is exactly repr."""
    assert _wire.safe_repr(value, 10**6) == repr(value)


@PROPERTY
@given(value=repr_values, limit=st.integers(min_value=1, max_value=200))
@example(value="abcdef", limit=2)
@example(value=b"abcdef", limit=2)
@example(value=["abcdef", 1, 2, 3], limit=5)
def test_bounded_repr_is_a_prefix_of_repr_with_a_marker(value: Any, limit: int) -> None:
    """A repr over the limit is its first characters followed by a marker saying it was cut."""
    text = _wire.safe_repr(value, limit)
    full = repr(value)
    if isinstance(value, (str, bytes)):  # the repr of the first `limit` characters (bytes)
        if len(value) <= limit:
            assert text == _wire.cut(full, limit)
        else:
            unit = "characters" if isinstance(value, str) else "bytes"
            tail = f"... [logfunnel: {len(value) - limit:,} of {len(value):,} {unit} cut]"
            assert text == repr(value[:limit]) + tail
        return
    if len(full) <= limit:
        assert text == full
        return
    marker = re.search(r"\.\.\. \[logfunnel: .*cut.*\]$", text)
    assert marker is not None, text
    head = text[: marker.start()]
    assert len(head) <= limit
    assert full.startswith(head)


@PROPERTY
@given(created=st.floats(min_value=-62_135_596_800.0 + 86_400, max_value=253_402_300_799.0 - 86_400))
def test_any_created_time_the_decoder_accepts_formats_in_every_sink(created: float) -> None:
    """Every `created` that decode_record accepts can be rendered by both stock formatters."""
    record = make_record()
    record.created = created
    decoded = roundtrip(record)
    assert decoded.created == created
    format_both(decoded)


# -- FrameReader ------------------------------------------------------------------------

frames_strategy = st.lists(
    st.lists(plain_values, max_size=6).map(lambda rest: [_wire.FLUSH, *rest]),
    min_size=1,
    max_size=6,
)


@PROPERTY
@given(arrays=frames_strategy)
def test_split_at_every_byte_boundary_yields_the_same_frames(arrays: list[list[Any]]) -> None:
    """Feeding a stream in two parts, split anywhere, or byte by byte, yields the same frames."""
    assume(not _has_surrogate(arrays))
    encoder = _wire.Encoder()
    stream = b"".join(encoder.frame(array) for array in arrays)
    expected = _wire.FrameReader().feed(stream)
    assert expected == arrays
    for split in range(len(stream) + 1):
        reader = _wire.FrameReader()
        got = reader.feed(stream[:split]) + reader.feed(stream[split:])
        assert got == expected
        assert reader.pending == 0
    reader = _wire.FrameReader()
    one_by_one: list[Any] = []
    for index in range(len(stream)):
        one_by_one += reader.feed(stream[index : index + 1])
    assert one_by_one == expected


def test_records_split_at_every_byte_boundary() -> None:
    """Three real records (with their definitions) split at every boundary decode the same."""
    encoder = _wire.Encoder()
    stream = b"".join(
        encoder.record(make_record(f"record {i} %s", ("ü\n",), extra={"i": i})) for i in range(3)
    )
    assert kinds_of(stream) == [_wire.SITE, _wire.THREAD, *[_wire.RECORD] * 3]
    for split in range(len(stream) + 1):
        reader = _wire.FrameReader()
        frames = reader.feed(stream[:split]) + reader.feed(stream[split:])
        assert [r.getMessage() for r in decode_frames(frames, _wire.Tables())] == [
            f"record {i} ü\n" for i in range(3)
        ]


@pytest.mark.parametrize("claimed", [4097, 2**20, 2**31, 2**32 - 1])
def test_oversized_length_prefix_is_refused_without_buffering(claimed: int) -> None:
    """A prefix over the limit raises FrameError once the header is read, buffering nothing."""
    reader = _wire.FrameReader(limit=4096)
    assert reader.feed(struct.pack(">I", claimed)[:3]) == []
    assert reader.pending == 3
    tracemalloc.start()
    try:
        with pytest.raises(_wire.FrameError, match="exceeds the limit"):
            reader.feed(struct.pack(">I", claimed)[3:] + b"\x00" * 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reader.pending <= 4 + 100
    assert peak < 64 * 1024


def test_oversized_frame_after_valid_ones_is_refused() -> None:
    """Frames before an oversized prefix are consumed; the oversized one raises, unbuffered."""
    encoder = _wire.Encoder()
    reader = _wire.FrameReader(limit=4096)
    good = encoder.frame([_wire.FLUSH, 1])
    with pytest.raises(_wire.FrameError):
        reader.feed(good + struct.pack(">I", 2**31) + b"x" * 1000)
    assert reader.pending <= 4 + 1000


@pytest.mark.parametrize(
    "bad_payload", [msgpack.packb({"a": 1}), b"\xc1", msgpack.packb([1]) + b"\x00"]
)
def test_bad_frame_after_a_good_one_in_the_same_chunk_raises_frame_error(
    bad_payload: bytes,
) -> None:
    """A malformed frame right after a valid one raises FrameError, not BufferError.

    Regression: the payload slice kept alive by the FrameError's traceback made
    the buffer compaction raise BufferError, which killed the writer thread.
    """
    good = _wire.Encoder().frame([_wire.FLUSH, 1])
    reader = _wire.FrameReader()
    with pytest.raises(_wire.FrameError):
        reader.feed(good + struct.pack(">I", len(bad_payload)) + bad_payload)


@PROPERTY
@given(
    arrays=frames_strategy,
    garbage=st.binary(min_size=1, max_size=200),
    split=st.integers(min_value=0, max_value=10_000),
)
def test_valid_frames_then_garbage_raise_frame_error_only(
    arrays: list[list[Any]], garbage: bytes, split: int
) -> None:
    """Valid frames followed by a garbage frame, fed in two parts, give frames then FrameError."""
    assume(not _has_surrogate(arrays))
    encoder = _wire.Encoder()
    stream = b"".join(encoder.frame(a) for a in arrays)
    stream += struct.pack(">I", len(garbage)) + garbage
    split %= len(stream) + 1
    reader = _wire.FrameReader()
    got: list[Any] = []
    try:
        got += reader.feed(stream[:split])
        got += reader.feed(stream[split:])
    except _wire.FrameError:
        assert got == arrays[: len(got)]
        return
    assert got[: len(arrays)] == arrays  # the garbage happened to be a valid frame


def test_frame_at_exactly_the_limit_is_accepted() -> None:
    """A payload of exactly the limit is a frame; one byte more is not."""
    text = "x" * (4096 - 5)  # fixarray, fixint, str16 header: 5 bytes
    payload = msgpack.packb([_wire.FLUSH, text])
    assert len(payload) == 4096
    assert _wire.FrameReader(4096).feed(struct.pack(">I", 4096) + payload) == [[_wire.FLUSH, text]]
    with pytest.raises(_wire.FrameError):
        _wire.FrameReader(4095).feed(struct.pack(">I", 4096))


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # empty payload
        b"\xc1",  # never-used msgpack byte
        msgpack.packb({"a": 1}),  # not an array
        msgpack.packb([]),  # empty array
        msgpack.packb(["1", 2]),  # kind not an int
        msgpack.packb([True, 2]),  # kind a bool
        msgpack.packb([1]) + b"\x00",  # trailing bytes
        msgpack.packb([1, msgpack.ExtType(5, b"abc")]),  # extension type
        b"\x92\x01\xdb\xff\xff\xff\xff",  # str claiming 4 GB
        b"\x91" * 10_000 + b"\x01",  # nested far too deep
        msgpack.packb([1, {b"k": 1}]),  # bytes map key
    ],
)
def test_garbage_payloads_raise_frame_error_only(payload: bytes) -> None:
    """Each kind of malformed payload raises FrameError, never anything else."""
    reader = _wire.FrameReader()
    try:
        frames = reader.feed(struct.pack(">I", len(payload)) + payload)
    except _wire.FrameError:
        return
    assert len(frames) == 1
    with pytest.raises(_wire.FrameError):
        _wire.decode_record(frames[0], _wire.Tables())


@PROPERTY
@given(data=st.binary(max_size=4096), limit=st.integers(min_value=0, max_value=5000))
def test_garbage_never_raises_anything_but_frame_error(data: bytes, limit: int) -> None:
    """Random bytes make FrameReader return frames or raise FrameError, never anything else."""
    reader = _wire.FrameReader(limit)
    try:
        frames = reader.feed(data)
    except _wire.FrameError:
        return
    assert reader.pending <= max(len(data), 0)
    tables = _wire.Tables()
    for fields in frames:
        assert type(fields) is list
        assert type(fields[0]) is int
        _handle_and_format(fields, tables)


def _handle_and_format(fields: list[Any], tables: _wire.Tables) -> None:
    """Handle a frame as the writer does; a record that decodes must render in both sinks.

    A SITE or THREAD frame either defines its id (below ``TABLE_SIZE``) or
    raises ``FrameError``; a RECORD either decodes or raises ``FrameError``.
    """
    try:
        if fields[0] in (_wire.SITE, _wire.THREAD):
            tables.define(fields)
            assert 0 <= fields[1] < _wire.TABLE_SIZE
            return
        if fields[0] != _wire.RECORD:
            return
        record = _wire.decode_record(fields, tables)
    except _wire.FrameError:
        return
    assert fields[8] in tables.sites
    assert fields[9] in tables.threads
    format_both(record)


field_values = st.one_of(
    plain_leaves,
    st.floats(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.lists(plain_leaves, max_size=3),
    st.dictionaries(st.text(max_size=5) | st.binary(max_size=3), plain_values, max_size=3),
)


def defined_tables() -> _wire.Tables:
    """Return the tables of a connection that defined site 0 and thread 0."""
    tables = _wire.Tables()
    tables.define([_wire.SITE, 0, "p", "f", "mod", 1, "fn"])
    tables.define([_wire.THREAD, 0, 1, "t", 2, "proc"])
    return tables


def record_fields(**values: Any) -> list[Any]:
    """Return a well-formed RECORD frame naming site 0 and thread 0, with ``values`` changed."""
    fields = dict(
        zip(
            _wire.RECORD_FIELDS,
            ("n", 20, "INFO", "m", 1.0, 0.0, 0.0, 0, 0, None, None, None, None),
            strict=True,
        )
    )
    fields.update(values)
    return [_wire.RECORD, *fields.values()]


def pack_and_read(fields: list[Any]) -> list[Any]:
    """Pack ``fields`` as any peer could (even invalid UTF-8) and read them back as the writer."""
    payload = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass").pack(fields)
    (read,) = _wire.FrameReader().feed(struct.pack(">I", len(payload)) + payload)
    return list(read)


ids = st.integers(min_value=-2, max_value=3) | field_values


@PROPERTY
@given(
    values=st.lists(field_values, min_size=10, max_size=13),
    site=ids,
    thread=ids,
    extra=st.none() | st.dictionaries(st.text(max_size=12), plain_values, max_size=4),
    ext=st.booleans(),
)
def test_valid_looking_records_with_wrong_types_raise_frame_error_or_format(
    values: list[Any], site: Any, thread: Any, extra: dict[str, Any] | None, ext: bool
) -> None:
    """A RECORD frame with arbitrary field values decodes only if every sink can format it."""
    fields = [_wire.RECORD, *values[:7], site, thread, *values[7:10], extra, *values[10:]]
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")
    payload = packer.pack(fields)
    if ext:
        payload = payload[:-1] + msgpack.packb(msgpack.Timestamp(1, 0))
    try:
        frames = _wire.FrameReader().feed(struct.pack(">I", len(payload)) + payload)
    except _wire.FrameError:
        return
    tables = defined_tables()
    tables.define([_wire.SITE, 1, "", "", "", 0, None])
    tables.define([_wire.THREAD, 2, None, None, None, None])
    for decoded in frames:
        _handle_and_format(decoded, tables)


# The types each field of a SITE or THREAD frame must have (ints within 64 bits).
_DEFINITION_TYPES: dict[str, tuple[type, ...]] = {
    "pathname": (str,),
    "filename": (str,),
    "module": (str,),
    "lineno": (int,),
    "funcName": (str, type(None)),
    "thread": (int, type(None)),
    "threadName": (str, type(None)),
    "process": (int, type(None)),
    "processName": (str, type(None)),
}
_int64s = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_definition_values = {
    "pathname": st.text(),
    "filename": st.text(),
    "module": st.text(),
    "lineno": _int64s,
    "funcName": st.none() | st.text(),
    "thread": st.none() | _int64s,
    "threadName": st.none() | st.text(),
    "process": st.none() | _int64s,
    "processName": st.none() | st.text(),
}


@st.composite
def definition_frames(draw: st.DrawFn) -> list[Any]:
    """Draw a SITE or THREAD frame: well-formed, or with one thing wrong (type, id, length)."""
    kind = draw(st.sampled_from([_wire.SITE, _wire.THREAD]))
    names = _wire.SITE_FIELDS if kind == _wire.SITE else _wire.THREAD_FIELDS
    values = [draw(_definition_values[name]) for name in names]
    ident: Any = draw(st.integers(min_value=-2, max_value=_wire.TABLE_SIZE + 1))
    flaw = draw(st.sampled_from(["none", "value", "id", "length"]))
    if flaw == "value":
        values[draw(st.integers(0, len(values) - 1))] = draw(field_values)
    elif flaw == "id":
        ident = draw(field_values)
    elif flaw == "length":
        if draw(st.booleans()):
            values.pop()
        else:
            values.append(draw(field_values))
    return [kind, ident, *values]


@PROPERTY
@given(fields=definition_frames())
def test_definition_frames_define_exactly_when_well_formed(fields: list[Any]) -> None:
    """A SITE or THREAD frame defines its entry iff its types, length and id are right.

    A refused one raises FrameError and leaves the tables as they were; a
    defined one is what a record naming it arrives with, and both sinks format it.
    """
    fields = pack_and_read(fields)
    kind, ident, values = fields[0], fields[1], fields[2:]
    names = _wire.SITE_FIELDS if kind == _wire.SITE else _wire.THREAD_FIELDS
    well_formed = (
        type(ident) is int
        and 0 <= ident < _wire.TABLE_SIZE
        and len(values) == len(names)
        and all(type(v) in _DEFINITION_TYPES[n] for n, v in zip(names, values, strict=False))
    )
    tables = defined_tables()
    before = (dict(tables.sites), dict(tables.threads))
    if not well_formed:
        with pytest.raises(_wire.FrameError):
            tables.define(fields)
        assert (tables.sites, tables.threads) == before
        return
    tables.define(fields)
    site, thread = (ident, 0) if kind == _wire.SITE else (0, ident)
    record = _wire.decode_record(record_fields(site=site, thread=thread), tables)
    for name, value in zip(names, values, strict=True):
        assert getattr(record, name) == value, name
    format_both(record)


def test_well_formed_frames_with_every_type_right_decode() -> None:
    """Hand-built SITE, THREAD and RECORD frames with exactly the declared types decode and format."""
    last = _wire.TABLE_SIZE - 1
    arrays = [
        [_wire.SITE, 0, "p", "f", "mod", 1, None],
        [_wire.THREAD, last, None, None, None, None],
        [
            _wire.RECORD, "n", 20, "INFO", "m", 1.0, 0.0, 0.0, 0, last,
            None, None, None, {"k": [b"v", {"x": None}]},
        ],
    ]  # fmt: skip
    stream = b"".join(struct.pack(">I", len(p)) + p for p in map(msgpack.packb, arrays))
    (record,) = decode_frames(_wire.FrameReader().feed(stream), _wire.Tables())
    assert record.__dict__["k"] == [b"v", {"x": None}]
    assert [getattr(record, name) for name in _wire.SITE_FIELDS] == ["p", "f", "mod", 1, None]
    assert [getattr(record, name) for name in _wire.THREAD_FIELDS] == [None] * 4
    format_both(record)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created", math.nan),
        ("created", 1e300),
        ("msecs", math.inf),
        ("relativeCreated", -math.inf),
        ("levelno", "20"),
        ("msg", None),
        ("extra", [1, 2]),  # not a dict
        ("site", "0"),  # ids are ints the encoder made
        ("site", 0.0),
        ("site", True),
        ("thread", None),
        ("thread", [0]),
    ],
)
def test_record_fields_out_of_type_or_range_raise_frame_error(name: str, value: Any) -> None:
    """A RECORD frame with a wrong type or a time no formatter renders is refused."""
    tables = defined_tables()
    _wire.decode_record(record_fields(), tables)  # the frame itself is fine
    with pytest.raises(_wire.FrameError):
        _wire.decode_record(record_fields(**{name: value}), tables)


def test_record_frames_of_the_wrong_length_raise_frame_error() -> None:
    """A RECORD with a field too many or too few, or a protocol 1 record, is refused."""
    tables = defined_tables()
    fields = record_fields()
    protocol_1 = [
        _wire.RECORD, "n", 20, "INFO", "m", "p", "f", "mod", 1, "fn", 1.0, 0.0, 0.0,
        None, None, None, None, None, None, None, None,
    ]  # fmt: skip
    for bad in (fields[:-1], [*fields, None], protocol_1):
        with pytest.raises(_wire.FrameError, match="fields, expected 13"):
            _wire.decode_record(bad, tables)


def test_extras_cannot_replace_standard_attributes_or_methods() -> None:
    """Extras named msg, levelno, getMessage or a site or thread field do not replace the record's own."""
    extra = {
        "msg": "forged", "levelno": 50, "getMessage": 1, "__class__": "x", "ok": 2,
        "pathname": "forged", "lineno": 99, "thread": 7, "processName": "forged",
    }  # fmt: skip
    record = _wire.decode_record(record_fields(msg="the message", extra=extra), defined_tables())
    assert record.getMessage() == "the message"
    assert record.levelno == 20
    assert (record.pathname, record.lineno, record.thread, record.processName) == (
        "p", 1, 1, "proc",
    )  # fmt: skip
    assert type(record) is logging.LogRecord
    assert record.__dict__["ok"] == 2
    format_both(record)


# -- sites and threads: defined once per connection -------------------------------------


def test_more_sites_and_threads_than_a_table_holds_all_decode_right() -> None:
    """Records from 2.5 x TABLE_SIZE call sites and threads, revisited, all decode right via one Tables."""
    encoder = _wire.Encoder()
    tables = _wire.Tables()
    count = _wire.TABLE_SIZE * 5 // 2
    order = [*range(count), *range(0, count, 7), *range(count - 1, -1, -13)]
    sent: list[list[Any]] = []
    for step, i in enumerate(order):
        pathname = f"/src/pkg/mod{i % 10}.py"
        record = logging.LogRecord("sites", logging.INFO, pathname, i, f"r{step}", None, None, "f")
        record.thread = 10_000 + (i * 3) % (count + 1)
        record.threadName = f"thread-{record.thread}"
        frames = split_frames(encoder.record(record))
        sent += frames
        (decoded,) = decode_frames(frames, tables)
        assert (decoded.msg, decoded.pathname, decoded.filename, decoded.lineno) == (
            f"r{step}", pathname, f"mod{i % 10}.py", i,
        )  # fmt: skip
        assert (decoded.thread, decoded.threadName) == (record.thread, record.threadName)
        assert decoded.process == record.process
        assert len(tables.sites) <= _wire.TABLE_SIZE
        assert len(tables.threads) <= _wire.TABLE_SIZE
    sites = [fields for fields in sent if fields[0] == _wire.SITE]
    threads = [fields for fields in sent if fields[0] == _wire.THREAD]
    # Ids were reused; revisits of sites still in the encoder's table were not redefined.
    assert count < len(sites) < len(order)
    assert count < len(threads) < len(order)
    assert {fields[1] for fields in sites + threads} == set(range(_wire.TABLE_SIZE))


def test_a_site_and_a_thread_are_defined_once_per_connection() -> None:
    """Thirty records from three call sites in two threads send three SITE and two THREAD frames."""
    made: list[logging.LogRecord] = []

    def log_from_sites() -> None:
        for i in range(15):
            record = make_record(f"r{i}", None)
            record.lineno = 100 + i % 3
            made.append(record)

    log_from_sites()
    other = threading.Thread(target=log_from_sites, name="second")
    other.start()
    other.join()
    encoder = _wire.Encoder()
    data = b"".join(encoder.record(record) for record in made)
    kinds = kinds_of(data)
    assert (kinds.count(_wire.SITE), kinds.count(_wire.THREAD)) == (3, 2)
    assert kinds.count(_wire.RECORD) == 30
    assert kinds[:3] == [_wire.SITE, _wire.THREAD, _wire.RECORD]  # a definition comes first
    decoded = decode_frames(split_frames(data), _wire.Tables())
    assert [(r.msg, r.lineno, r.threadName) for r in decoded] == [
        (r.msg, r.lineno, r.threadName) for r in made
    ]
    assert {r.threadName for r in decoded} == {threading.current_thread().name, "second"}


def test_after_reset_the_next_record_defines_its_site_and_thread_again() -> None:
    """After reset() (a new connection) the next record comes with its definitions, ids from 0."""
    encoder = _wire.Encoder()
    first, other = make_record("first", None), make_record("other", None)
    other.lineno = 43
    assert kinds_of(encoder.record(first)) == [_wire.SITE, _wire.THREAD, _wire.RECORD]
    assert kinds_of(encoder.record(other)) == [_wire.SITE, _wire.RECORD]
    assert kinds_of(encoder.record(first)) == [_wire.RECORD]
    encoder.reset()
    again = split_frames(encoder.record(other))
    assert [(fields[0], fields[1]) for fields in again[:2]] == [(_wire.SITE, 0), (_wire.THREAD, 0)]
    (decoded,) = decode_frames(again, _wire.Tables())  # the new connection's writer knows nothing
    assert (decoded.msg, decoded.lineno) == ("other", 43)


def test_definitions_belong_to_their_connection() -> None:
    """A record naming ids another connection defined is refused on this one."""
    data = _wire.Encoder().record(make_record())
    frames = split_frames(data)
    decode_frames(frames, _wire.Tables())
    with pytest.raises(_wire.FrameError, match="undefined"):
        _wire.decode_record(frames[-1], _wire.Tables())


def test_a_record_naming_an_undefined_id_raises_frame_error() -> None:
    """A RECORD whose site or thread id was never defined (or only in the other table) is refused."""
    tables = _wire.Tables()
    with pytest.raises(_wire.FrameError, match=r"undefined site \(0\) or thread \(0\)"):
        _wire.decode_record(record_fields(), tables)
    tables.define([_wire.SITE, 0, "p", "f", "mod", 1, "fn"])
    with pytest.raises(_wire.FrameError, match="undefined"):
        _wire.decode_record(record_fields(), tables)  # the thread is still undefined
    tables.define([_wire.THREAD, 5, 1, "t", 2, "proc"])
    with pytest.raises(_wire.FrameError, match="undefined"):
        _wire.decode_record(record_fields(site=5, thread=5), tables)  # 5 is a thread, not a site
    for site, thread in ((1, 5), (0, 0), (-1, 5), (_wire.TABLE_SIZE, 5), (2**64 - 1, 5)):
        with pytest.raises(_wire.FrameError, match="undefined"):
            _wire.decode_record(record_fields(site=site, thread=thread), tables)
    assert _wire.decode_record(record_fields(site=0, thread=5), tables).threadName == "t"


_GOOD_SITE: list[Any] = [_wire.SITE, 0, "p", "f", "mod", 1, "fn"]
_GOOD_THREAD: list[Any] = [_wire.THREAD, 0, 1, "t", 2, "proc"]


def _changed(fields: list[Any], index: int, value: Any) -> list[Any]:
    changed = list(fields)
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(_changed(_GOOD_SITE, 1, -1), id="site-id-minus-1"),
        pytest.param(_changed(_GOOD_SITE, 1, _wire.TABLE_SIZE), id="site-id-table-size"),
        pytest.param(_changed(_GOOD_SITE, 1, 2**64 - 1), id="site-id-huge"),
        pytest.param(_changed(_GOOD_SITE, 1, "0"), id="site-id-str"),
        pytest.param(_changed(_GOOD_SITE, 1, 0.0), id="site-id-float"),
        pytest.param(_changed(_GOOD_SITE, 1, None), id="site-id-none"),
        pytest.param(_changed(_GOOD_SITE, 2, None), id="pathname-none"),
        pytest.param(_changed(_GOOD_SITE, 2, b"p"), id="pathname-bytes"),
        pytest.param(_changed(_GOOD_SITE, 4, 3), id="module-int"),
        pytest.param(_changed(_GOOD_SITE, 5, "1"), id="lineno-str"),
        pytest.param(_changed(_GOOD_SITE, 5, 1.0), id="lineno-float"),
        pytest.param(_changed(_GOOD_SITE, 5, True), id="lineno-bool"),
        pytest.param(_changed(_GOOD_SITE, 5, None), id="lineno-none"),
        pytest.param(_changed(_GOOD_SITE, 6, ["fn"]), id="funcname-list"),
        pytest.param(_GOOD_SITE[:-1], id="site-too-short"),
        pytest.param([*_GOOD_SITE, None], id="site-too-long"),
        pytest.param([_wire.SITE], id="site-alone"),
        pytest.param([_wire.SITE, *_GOOD_THREAD[1:]], id="site-with-thread-fields"),
        pytest.param(_changed(_GOOD_THREAD, 1, -1), id="thread-id-minus-1"),
        pytest.param(_changed(_GOOD_THREAD, 1, _wire.TABLE_SIZE), id="thread-id-table-size"),
        pytest.param(_changed(_GOOD_THREAD, 1, [0]), id="thread-id-list"),
        pytest.param(_changed(_GOOD_THREAD, 2, "1"), id="thread-str"),
        pytest.param(_changed(_GOOD_THREAD, 3, 1), id="threadname-int"),
        pytest.param(_changed(_GOOD_THREAD, 4, 2.0), id="process-float"),
        pytest.param(_changed(_GOOD_THREAD, 5, {"p": 1}), id="processname-dict"),
        pytest.param(_GOOD_THREAD[:-1], id="thread-too-short"),
        pytest.param([*_GOOD_THREAD, None], id="thread-too-long"),
        pytest.param([_wire.THREAD, *_GOOD_SITE[1:]], id="thread-with-site-fields"),
        pytest.param(_changed(_GOOD_SITE, 0, _wire.RECORD), id="not-a-definition"),
    ],
)
def test_malformed_definition_frames_raise_frame_error(fields: list[Any]) -> None:
    """A SITE or THREAD frame with a wrong type, length or an id outside 0..TABLE_SIZE-1 is refused."""
    tables = _wire.Tables()
    with pytest.raises(_wire.FrameError):
        tables.define(fields)
    assert (tables.sites, tables.threads) == ({}, {})
    for good in (_GOOD_SITE, _GOOD_THREAD, _changed(_GOOD_SITE, 1, _wire.TABLE_SIZE - 1)):
        tables.define(good)  # the same table still takes well-formed ones


@pytest.mark.parametrize("frame_limit", [4096, _wire.DEFAULT_FRAME_LIMIT])
@pytest.mark.parametrize("char", ["p", "\U0001f600", "\udcff"])
def test_a_five_thousand_character_pathname_is_cut_and_decodes(frame_limit: int, char: str) -> None:
    """A 5,000-character pathname (so filename and module too) arrives cut with a marker."""
    pathname = char * 5000
    record = logging.LogRecord("long", logging.INFO, pathname, 7, "long path", None, None, "f")
    decoded = roundtrip(record, frame_limit)  # asserts each frame fits the limit
    limit = table_text_limit(frame_limit)
    # Escaped first (a lone surrogate becomes 6 characters), then cut: the writer
    # takes no definition text longer than the limit and its marker.
    for name in ("pathname", "filename", "module"):
        assert getattr(decoded, name) == _wire.cut(backslashed(pathname), limit), name
        assert len(getattr(decoded, name)) <= _wire.TABLE_TEXT_LIMIT + 100
    match = CUT_MARKER.match(decoded.pathname)
    assert match is not None
    assert match.group(2) == f"{len(backslashed(pathname)) - limit:,}"
    assert (decoded.msg, decoded.lineno, decoded.funcName) == ("long path", 7, "f")
    format_both(decoded)


def test_site_and_thread_texts_at_the_smallest_frame_limit_fit_it() -> None:
    """At the smallest frame_limit install() takes, SITE and THREAD frames of the worst texts fit it."""
    worst = "\udcff" * 100_000  # 6 characters each once backslash-escaped
    record = logging.LogRecord("n", logging.INFO, worst, 1, "m", None, None, worst)
    record.module = record.threadName = record.processName = worst
    decoded = roundtrip(record, frame_limit=4096)  # asserts each frame fits the limit
    assert decoded.module == _wire.cut(backslashed(worst), table_text_limit(4096))


class _OddSiteFilter(logging.Filter):
    """A filter that leaves standard site fields with values of the wrong type."""

    def __init__(self, changes: dict[str, Any]) -> None:
        super().__init__()
        self.changes = changes

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(self.changes)
        return True


class _EncodingHandler(logging.Handler):
    """A handler that encodes every record it gets with one encoder, as a connection does."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _wire.Encoder()
        self.data = b""

    def emit(self, record: logging.LogRecord) -> None:
        self.data += self.encoder.record(record)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lineno": [1]}, {"lineno": 0}),  # unhashable, and no int: 0
        ({"pathname": None}, {"pathname": ""}),
        ({"lineno": [1], "pathname": None, "funcName": {}}, {"lineno": 0, "pathname": ""}),
        ({"thread": [7], "threadName": ["t"]}, {"thread": 0, "threadName": "['t']"}),
    ],
)
def test_a_filter_that_sets_odd_site_values_still_encodes_and_decodes(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A filter setting an unhashable lineno or a None pathname gives coerced values, defined once."""
    handler = _EncodingHandler()
    handler.addFilter(_OddSiteFilter(changes))
    logger = logging.getLogger("test.wire.odd_site")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in (1, 2):  # one call site
            logger.warning("odd %d", i)
    finally:
        logger.removeHandler(handler)
    kinds = kinds_of(handler.data)
    assert (kinds.count(_wire.SITE), kinds.count(_wire.THREAD), kinds.count(_wire.RECORD)) == (
        1, 1, 2,
    )  # fmt: skip
    decoded = decode_frames(split_frames(handler.data), _wire.Tables())
    assert [r.msg for r in decoded] == ["odd 1", "odd 2"]
    for record in decoded:
        for name, value in expected.items():
            assert getattr(record, name) == value, name
        format_both(record)


def test_a_definition_with_an_over_long_text_is_refused() -> None:
    """A SITE text longer than TABLE_TEXT_LIMIT and a cut marker is refused, so a peer cannot make the writer keep it."""
    tables = _wire.Tables()
    text = "p" * (_wire.TABLE_TEXT_LIMIT + 101)
    with pytest.raises(_wire.FrameError, match="longer than"):
        tables.define([_wire.SITE, 0, text, "f", "m", 1, "fn"])
    with pytest.raises(_wire.FrameError, match="longer than"):
        tables.define([_wire.THREAD, 0, 1, text, 2, "p"])
    assert (tables.sites, tables.threads) == ({}, {})


class _HashRaises:
    """A value whose hash raises something other than TypeError, and whose int() is 5."""

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __int__(self) -> int:
        return 5


def test_a_site_value_whose_hash_raises_is_converted() -> None:
    """A lineno that cannot be hashed (its __hash__ raises RuntimeError) is converted, not lost."""
    record = logging.LogRecord("n", logging.INFO, "p.py", 1, "m", None, None, "f")
    record.lineno = _HashRaises()  # type: ignore[assignment]
    assert roundtrip(record).lineno == 5
