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


def roundtrip(record: logging.LogRecord, frame_limit: int = _wire.DEFAULT_FRAME_LIMIT) -> Any:
    """Encode, frame, read back and decode one record; return the rebuilt record."""
    frame = _wire.Encoder(frame_limit).record(record)
    assert len(frame) - _wire.HEADER_SIZE <= frame_limit
    reader = _wire.FrameReader(frame_limit)
    frames = reader.feed(frame)
    assert len(frames) == 1
    assert reader.pending == 0
    assert frames[0][0] == _wire.RECORD
    return _wire.decode_record(frames[0])


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
    """Every field in RECORD_FIELDS arrives with the value the sender's record had."""
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
    for name in _wire.RECORD_FIELDS:
        if name == "extra":
            assert decoded.__dict__["custom"] == record.__dict__["custom"]
        else:
            assert getattr(decoded, name) == expected[name], name
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
    format_both(cut)
    for key in ("pathname", "filename", "module", "threadName", "processName"):
        record.__dict__[key] = "z" * 100_000
    minimal = roundtrip(record, frame_limit=600)
    assert minimal.msg == _wire.TOO_LARGE_MESSAGE
    assert minimal.name.startswith("n" * 100)
    assert minimal.levelno == logging.INFO
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


any_values = st.recursive(
    plain_leaves
    | st.integers()
    | st.floats()
    | st.text(max_size=20_000)
    | st.builds(Opaque)
    | st.builds(threading.Lock),
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
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
    else:
        check_degraded(func, decoded.funcName, 10**9)
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
            assert received == str(value)
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
    """Three real RECORD frames split at every boundary decode to the same three records."""
    encoder = _wire.Encoder()
    stream = b"".join(
        encoder.record(make_record(f"record {i} %s", ("ü\n",), extra={"i": i})) for i in range(3)
    )
    for split in range(len(stream) + 1):
        reader = _wire.FrameReader()
        frames = reader.feed(stream[:split]) + reader.feed(stream[split:])
        assert [_wire.decode_record(f).getMessage() for f in frames] == [
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
        _wire.decode_record(frames[0])


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
    for fields in frames:
        assert type(fields) is list
        assert type(fields[0]) is int
        _decode_and_format(fields)


def _decode_and_format(fields: list[Any]) -> None:
    """Decode a RECORD frame; if it decodes, both stock formatters must render it."""
    try:
        record = _wire.decode_record(fields)
    except _wire.FrameError:
        return
    format_both(record)


field_values = st.one_of(
    plain_leaves,
    st.floats(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.lists(plain_leaves, max_size=3),
    st.dictionaries(st.text(max_size=5) | st.binary(max_size=3), plain_values, max_size=3),
)


@PROPERTY
@given(
    values=st.lists(field_values, min_size=19, max_size=22),
    extra=st.none() | st.dictionaries(st.text(max_size=12), plain_values, max_size=4),
    ext=st.booleans(),
)
def test_valid_looking_records_with_wrong_types_raise_frame_error_or_format(
    values: list[Any], extra: dict[str, Any] | None, ext: bool
) -> None:
    """A RECORD frame with arbitrary field values decodes only if every sink can format it."""
    fields = [_wire.RECORD, *values[:19], extra, *values[19:]]
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")
    payload = packer.pack(fields)
    if ext:
        payload = payload[:-1] + msgpack.packb(msgpack.Timestamp(1, 0))
    try:
        frames = _wire.FrameReader().feed(struct.pack(">I", len(payload)) + payload)
    except _wire.FrameError:
        return
    for decoded in frames:
        _decode_and_format(decoded)


def test_well_formed_record_frame_with_every_type_right_decodes() -> None:
    """A hand-built RECORD frame with exactly the declared types decodes and formats."""
    fields = [
        _wire.RECORD, "n", 20, "INFO", "m", "p", "f", "mod", 1, None, 1.0, 0.0, 0.0,
        None, None, None, None, None, None, None, {"k": [b"v", {"x": None}]},
    ]  # fmt: skip
    payload = msgpack.packb(fields)
    (decoded,) = _wire.FrameReader().feed(struct.pack(">I", len(payload)) + payload)
    record = _wire.decode_record(decoded)
    assert record.__dict__["k"] == [b"v", {"x": None}]
    format_both(record)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (10, math.nan),  # created
        (10, 1e300),
        (11, math.inf),  # msecs
        (12, -math.inf),  # relativeCreated
        (2, "20"),  # levelno
        (4, None),  # msg
        (20, [1, 2]),  # extra not a dict
    ],
)
def test_record_fields_out_of_type_or_range_raise_frame_error(index: int, value: Any) -> None:
    """A RECORD frame with a wrong type or a time no formatter renders is refused."""
    fields: list[Any] = [
        _wire.RECORD, "n", 20, "INFO", "m", "p", "f", "mod", 1, "fn", 1.0, 0.0, 0.0,
        None, None, None, None, None, None, None, None,
    ]  # fmt: skip
    fields[index] = value
    with pytest.raises(_wire.FrameError):
        _wire.decode_record(fields)


def test_extras_cannot_replace_standard_attributes_or_methods() -> None:
    """Extras named msg, levelno or getMessage do not replace the record's own."""
    fields: list[Any] = [
        _wire.RECORD, "n", 20, "INFO", "the message", "p", "f", "mod", 1, "fn", 1.0, 0.0, 0.0,
        None, None, None, None, None, None, None,
        {"msg": "forged", "levelno": 50, "getMessage": 1, "__class__": "x", "ok": 2},
    ]  # fmt: skip
    record = _wire.decode_record(fields)
    assert record.getMessage() == "the message"
    assert record.levelno == 20
    assert type(record) is logging.LogRecord
    assert record.__dict__["ok"] == 2
    format_both(record)
