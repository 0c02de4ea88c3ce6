"""Unit and property tests of the encoder (``_wire``): records and messages to bytes, and back.

The frame reader's own tests (streams split anywhere, garbage) are ``test_frame_reader.py``.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conftest import run_python
from logfunnel._core import encoder as _encoder
from logfunnel._core import frame_reader as _frame_reader
from logfunnel._core import plain as _plain
from logfunnel._core import protocol as _protocol
from logfunnel._core import wire as _wire
from test_wire_support import (
    CUT_MARKER,
    FIELD_LIMIT,
    PROPERTY,
    Opaque,
    any_values,
    backslashed,
    check_degraded,
    decode_frames,
    extra_keys,
    format_both,
    kinds_of,
    make_record,
    roundtrip,
    split_frames,
    table_text_limit,
    texts,
)

# -- round trips through the encoder ----------------------------------------------------


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


def test_long_message_with_lone_surrogate_keeps_the_field_limit() -> None:
    """A lone surrogate does not make a long message be cut shorter than the field limit."""
    text = "a" * 50_000 + "\udcff"
    decoded = roundtrip(make_record(text, None))
    assert decoded.msg == "a" * 50_000 + "\\udcff"


def test_nul_and_newlines_travel_unchanged() -> None:
    """NUL bytes and every kind of newline arrive as sent (the sinks decide how to write them)."""
    text = "a\x00b\nc\r\nd\re\u2028f"
    assert roundtrip(make_record(text, None)).msg == text


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


# -- property tests of the encoder ------------------------------------------------------


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


# -- the short path of a rendered record (Encoder.rendered) -----------------------------


class _Text(str):
    """A str subclass, as a message whose ``__str__`` returned one."""

    __slots__ = ()


class _Record(logging.LogRecord):
    """A LogRecord subclass whose ``levelname`` is a property (record() reads attributes)."""

    @property
    def levelname(self) -> str:
        return "FROM-PROPERTY"

    @levelname.setter
    def levelname(self, value: str) -> None:
        self.__dict__["levelname"] = value  # what a read of the attributes' dict finds


def _rendered_pair(
    record: logging.LogRecord, line: str, message: str, frame_limit: int, *, delete: str = ""
) -> tuple[bytes | None, bytes | None]:
    """Return ``rendered()`` of one encoder and ``record()`` of its twin (None: it raised).

    Both are primed with ``record``, which defines its site and thread as a
    connection's first record does; ``delete`` is then taken from the record.
    """
    short, general = _wire.Encoder(frame_limit), _wire.Encoder(frame_limit)
    for encoder in (short, general):
        encoder.record(record)
    if delete:
        del record.__dict__[delete]
    frame = short.rendered(record, line, message)
    try:
        return frame, general.record(record, line, message)
    except AttributeError:  # a standard field deleted: the sender reports the record
        return frame, None


def test_a_plain_rendered_record_takes_the_short_path_to_the_same_bytes() -> None:
    """After its site and thread are defined, a plain record's RENDERED frame comes by the short path."""
    record = make_record("task %d value=%s", (7, "ü…"))
    line = "2026-12-06 05:00:00,000 INFO " + record.getMessage()
    frame, expected = _rendered_pair(record, line, record.getMessage(), _wire.DEFAULT_FRAME_LIMIT)
    assert frame is not None
    assert frame == expected
    (fields,) = split_frames(frame)
    assert fields[0] == _wire.RENDERED
    assert fields[-1] == line
    # Before the site is defined (a connection's first record) the short path declines.
    assert _wire.Encoder().rendered(record, line, record.getMessage()) is None


_odd_numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | texts
)
# One field a filter may change, and what it may set it to (the rest stays plain).
_one_odd_field = st.one_of(
    st.tuples(
        st.sampled_from(
            ["name", "levelno", "levelname", "created", "msecs", "relativeCreated", "thread",
             "threadName", "process", "processName", "taskName", "pathname", "lineno",
             "funcName"]
        ),
        _odd_numbers,
    ),
    st.tuples(st.sampled_from(["exc_text", "stack_info", "shard", "subclass"]), st.just("x")),
    st.tuples(st.just("delete"), st.sampled_from(["created", "taskName", "thread", "name"])),
)  # fmt: skip


@PROPERTY
@given(
    message=texts | texts.map(_Text),
    line=texts,
    odd=st.none() | _one_odd_field,
    frame_limit=st.sampled_from([1024, 4096, _wire.DEFAULT_FRAME_LIMIT]),
)
@example(message="m", line="l", odd=("levelno", True), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m", line="l", odd=("msecs", math.inf), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m", line="l", odd=("subclass", "x"), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m", line="l", odd=("exc_text", "x"), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m", line="l", odd=("shard", "x"), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m", line="l", odd=("created", 1), frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message=_Text("m"), line="l", odd=None, frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="\udcff", line="l", odd=None, frame_limit=_wire.DEFAULT_FRAME_LIMIT)
@example(message="m" * 300, line="l", odd=None, frame_limit=1024)
@example(message="m" * 200, line="l" * 900, odd=None, frame_limit=1024)
@example(message="m", line="l", odd=("relativeCreated", math.nan), frame_limit=1024)
@example(message="m", line="l", odd=("created", 1e300), frame_limit=1024)
@example(message="m", line="l", odd=("taskName", 5), frame_limit=1024)
@example(message="", line="", odd=("pathname", "/" + "d" * 40 + "/job.py"), frame_limit=1024)
def test_a_rendered_frame_is_the_one_record_makes_or_the_short_path_declines(
    message: str, line: str, odd: tuple[str, Any] | None, frame_limit: int
) -> None:
    """Whatever a filter left in the record, ``rendered()`` gives ``record()``'s bytes, or None."""
    kind = _Record if odd is not None and odd[0] == "subclass" else logging.LogRecord
    # A short path of its own, not __file__: a checkout deeper than the table
    # text limit (32 characters at 1024-byte frames) cuts the site, and a cut
    # site rightly declines the short path (CI's clone did, this one did not).
    record = kind("test.wire", logging.INFO, "/srv/job.py", 42, "msg", None, None, "f")
    delete = odd[1] if odd is not None and odd[0] == "delete" and odd[1] in vars(record) else ""
    if odd is not None and odd[0] not in ("delete", "subclass"):
        record.__dict__[odd[0]] = odd[1]
    frame, expected = _rendered_pair(record, line, message, frame_limit, delete=delete)
    assert frame is None or frame == expected
    if odd is None and type(message) is str and len(message) < 256 and len(line) < 256:
        try:
            (message + line).encode()
        except UnicodeEncodeError:  # lone surrogates: record() escapes them
            return
        assert frame is not None  # a plain record takes the short path


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



def test_what_wire_exports_is_defined_once() -> None:
    """A name ``_wire`` exports from another module of the codec is the very object defined there."""
    for name in _wire.__all__:
        assert hasattr(_wire, name), name
        for home in (_protocol, _plain, _frame_reader, _encoder):
            if name in vars(home):
                assert getattr(_wire, name) is vars(home)[name], name


def test_the_codec_imports_neither_typing_nor_msgpack_before_it_needs_them() -> None:
    """``_plain`` and ``_protocol`` import no msgpack, and none of the three imports typing."""
    probe = (
        "import sys; import logfunnel._core.plain, logfunnel._core.protocol;"
        " print('msgpack' in sys.modules, 'typing' in sys.modules);"
        " import logfunnel._core.wire; print('typing' in sys.modules)"
    )
    assert run_python("-c", probe).stdout.split() == ["False", "False", "False"]
