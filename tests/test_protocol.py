"""Unit and property tests of decoding and checking frames into records (``_protocol``)."""

from __future__ import annotations

import logging
import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logfunnel._core import protocol as _protocol
from logfunnel._core import wire as _wire
from test_wire_support import (
    PROPERTY,
    decode_frames,
    format_both,
    handle_and_format,
    make_record,
    plain_leaves,
    plain_values,
    roundtrip,
    split_frames,
)


@PROPERTY
@given(created=st.floats(min_value=-62_135_596_800.0 + 86_400, max_value=253_402_300_799.0 - 86_400))
def test_any_created_time_the_decoder_accepts_formats_in_every_sink(created: float) -> None:
    """Every `created` that decode_record accepts can be rendered by both stock formatters."""
    record = make_record()
    record.created = created
    decoded = roundtrip(record)
    assert decoded.created == created
    format_both(decoded)


field_values = st.one_of(
    plain_leaves,
    st.floats(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.lists(plain_leaves, max_size=3),
    st.dictionaries(st.text(max_size=5) | st.binary(max_size=3), plain_values, max_size=3),
)


def defined_tables() -> _protocol.Tables:
    """Return the tables of a connection that defined site 0 and thread 0."""
    tables = _protocol.Tables()
    tables.define([_protocol.SITE, 0, "p", "f", "mod", 1, "fn"])
    tables.define([_protocol.THREAD, 0, 1, "t", 2, "proc"])
    return tables


def record_fields(**values: Any) -> list[Any]:
    """Return a well-formed RECORD frame naming site 0 and thread 0, with ``values`` changed."""
    fields = dict(
        zip(
            _protocol.RECORD_FIELDS,
            ("n", 20, "INFO", "m", 1.0, 0.0, 0.0, 0, 0, None, None, None, None),
            strict=True,
        )
    )
    fields.update(values)
    return [_protocol.RECORD, *fields.values()]


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
    fields = [_protocol.RECORD, *values[:7], site, thread, *values[7:10], extra, *values[10:]]
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")
    payload = packer.pack(fields)
    if ext:
        payload = payload[:-1] + msgpack.packb(msgpack.Timestamp(1, 0))
    try:
        frames = _wire.FrameReader().feed(struct.pack(">I", len(payload)) + payload)
    except _protocol.FrameError:
        return
    tables = defined_tables()
    tables.define([_protocol.SITE, 1, "", "", "", 0, None])
    tables.define([_protocol.THREAD, 2, None, None, None, None])
    for decoded in frames:
        handle_and_format(decoded, tables)


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
    kind = draw(st.sampled_from([_protocol.SITE, _protocol.THREAD]))
    names = _protocol.SITE_FIELDS if kind == _protocol.SITE else _protocol.THREAD_FIELDS
    values = [draw(_definition_values[name]) for name in names]
    ident: Any = draw(st.integers(min_value=-2, max_value=_protocol.TABLE_SIZE + 1))
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
    names = _protocol.SITE_FIELDS if kind == _protocol.SITE else _protocol.THREAD_FIELDS
    well_formed = (
        type(ident) is int
        and 0 <= ident < _protocol.TABLE_SIZE
        and len(values) == len(names)
        and all(type(v) in _DEFINITION_TYPES[n] for n, v in zip(names, values, strict=False))
    )
    tables = defined_tables()
    before = (dict(tables.sites), dict(tables.threads))
    if not well_formed:
        with pytest.raises(_protocol.FrameError):
            tables.define(fields)
        assert (tables.sites, tables.threads) == before
        return
    tables.define(fields)
    site, thread = (ident, 0) if kind == _protocol.SITE else (0, ident)
    record = _protocol.decode_record(record_fields(site=site, thread=thread), tables)
    for name, value in zip(names, values, strict=True):
        assert getattr(record, name) == value, name
    format_both(record)


def test_well_formed_frames_with_every_type_right_decode() -> None:
    """Hand-built SITE, THREAD and RECORD frames with exactly the declared types decode and format."""
    last = _protocol.TABLE_SIZE - 1
    arrays = [
        [_protocol.SITE, 0, "p", "f", "mod", 1, None],
        [_protocol.THREAD, last, None, None, None, None],
        [
            _protocol.RECORD, "n", 20, "INFO", "m", 1.0, 0.0, 0.0, 0, last,
            None, None, None, {"k": [b"v", {"x": None}]},
        ],
    ]  # fmt: skip
    stream = b"".join(struct.pack(">I", len(p)) + p for p in map(msgpack.packb, arrays))
    (record,) = decode_frames(_wire.FrameReader().feed(stream), _protocol.Tables())
    assert record.__dict__["k"] == [b"v", {"x": None}]
    assert [getattr(record, name) for name in _protocol.SITE_FIELDS] == ["p", "f", "mod", 1, None]
    assert [getattr(record, name) for name in _protocol.THREAD_FIELDS] == [None] * 4
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
    _protocol.decode_record(record_fields(), tables)  # the frame itself is fine
    with pytest.raises(_protocol.FrameError):
        _protocol.decode_record(record_fields(**{name: value}), tables)


def test_record_frames_of_the_wrong_length_raise_frame_error() -> None:
    """A RECORD with a field too many or too few, or a protocol 1 record, is refused."""
    tables = defined_tables()
    fields = record_fields()
    protocol_1 = [
        _protocol.RECORD, "n", 20, "INFO", "m", "p", "f", "mod", 1, "fn", 1.0, 0.0, 0.0,
        None, None, None, None, None, None, None, None,
    ]  # fmt: skip
    for bad in (fields[:-1], [*fields, None], protocol_1):
        with pytest.raises(_protocol.FrameError, match="fields, expected 13"):
            _protocol.decode_record(bad, tables)


def test_extras_cannot_replace_standard_attributes_or_methods() -> None:
    """Extras named msg, levelno, getMessage or a site or thread field do not replace the record's own."""
    extra = {
        "msg": "forged", "levelno": 50, "getMessage": 1, "__class__": "x", "ok": 2,
        "pathname": "forged", "lineno": 99, "thread": 7, "processName": "forged",
    }  # fmt: skip
    record = _protocol.decode_record(record_fields(msg="the message", extra=extra), defined_tables())
    assert record.getMessage() == "the message"
    assert record.levelno == 20
    assert (record.pathname, record.lineno, record.thread, record.processName) == (
        "p", 1, 1, "proc",
    )  # fmt: skip
    assert type(record) is logging.LogRecord
    assert record.__dict__["ok"] == 2
    format_both(record)


# -- sites and threads: what a connection defined ---------------------------------------


def test_definitions_belong_to_their_connection() -> None:
    """A record naming ids another connection defined is refused on this one."""
    data = _wire.Encoder().record(make_record())
    frames = split_frames(data)
    decode_frames(frames, _protocol.Tables())
    with pytest.raises(_protocol.FrameError, match="undefined"):
        _protocol.decode_record(frames[-1], _protocol.Tables())


def test_a_record_naming_an_undefined_id_raises_frame_error() -> None:
    """A RECORD whose site or thread id was never defined (or only in the other table) is refused."""
    tables = _protocol.Tables()
    with pytest.raises(_protocol.FrameError, match=r"undefined site \(0\) or thread \(0\)"):
        _protocol.decode_record(record_fields(), tables)
    tables.define([_protocol.SITE, 0, "p", "f", "mod", 1, "fn"])
    with pytest.raises(_protocol.FrameError, match="undefined"):
        _protocol.decode_record(record_fields(), tables)  # the thread is still undefined
    tables.define([_protocol.THREAD, 5, 1, "t", 2, "proc"])
    with pytest.raises(_protocol.FrameError, match="undefined"):
        _protocol.decode_record(record_fields(site=5, thread=5), tables)  # 5 is a thread, not a site
    for site, thread in ((1, 5), (0, 0), (-1, 5), (_protocol.TABLE_SIZE, 5), (2**64 - 1, 5)):
        with pytest.raises(_protocol.FrameError, match="undefined"):
            _protocol.decode_record(record_fields(site=site, thread=thread), tables)
    assert _protocol.decode_record(record_fields(site=0, thread=5), tables).threadName == "t"


_GOOD_SITE: list[Any] = [_protocol.SITE, 0, "p", "f", "mod", 1, "fn"]


_GOOD_THREAD: list[Any] = [_protocol.THREAD, 0, 1, "t", 2, "proc"]


def _changed(fields: list[Any], index: int, value: Any) -> list[Any]:
    changed = list(fields)
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(_changed(_GOOD_SITE, 1, -1), id="site-id-minus-1"),
        pytest.param(_changed(_GOOD_SITE, 1, _protocol.TABLE_SIZE), id="site-id-table-size"),
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
        pytest.param([_protocol.SITE], id="site-alone"),
        pytest.param([_protocol.SITE, *_GOOD_THREAD[1:]], id="site-with-thread-fields"),
        pytest.param(_changed(_GOOD_THREAD, 1, -1), id="thread-id-minus-1"),
        pytest.param(_changed(_GOOD_THREAD, 1, _protocol.TABLE_SIZE), id="thread-id-table-size"),
        pytest.param(_changed(_GOOD_THREAD, 1, [0]), id="thread-id-list"),
        pytest.param(_changed(_GOOD_THREAD, 2, "1"), id="thread-str"),
        pytest.param(_changed(_GOOD_THREAD, 3, 1), id="threadname-int"),
        pytest.param(_changed(_GOOD_THREAD, 4, 2.0), id="process-float"),
        pytest.param(_changed(_GOOD_THREAD, 5, {"p": 1}), id="processname-dict"),
        pytest.param(_GOOD_THREAD[:-1], id="thread-too-short"),
        pytest.param([*_GOOD_THREAD, None], id="thread-too-long"),
        pytest.param([_protocol.THREAD, *_GOOD_SITE[1:]], id="thread-with-site-fields"),
        pytest.param(_changed(_GOOD_SITE, 0, _protocol.RECORD), id="not-a-definition"),
    ],
)
def test_malformed_definition_frames_raise_frame_error(fields: list[Any]) -> None:
    """A SITE or THREAD frame with a wrong type, length or an id outside 0..TABLE_SIZE-1 is refused."""
    tables = _protocol.Tables()
    with pytest.raises(_protocol.FrameError):
        tables.define(fields)
    assert (tables.sites, tables.threads) == ({}, {})
    for good in (_GOOD_SITE, _GOOD_THREAD, _changed(_GOOD_SITE, 1, _protocol.TABLE_SIZE - 1)):
        tables.define(good)  # the same table still takes well-formed ones


def test_a_definition_with_an_over_long_text_is_refused() -> None:
    """A SITE text longer than TABLE_TEXT_LIMIT and a cut marker is refused, so a peer cannot make the writer keep it."""
    tables = _protocol.Tables()
    text = "p" * (_protocol.TABLE_TEXT_LIMIT + 101)
    with pytest.raises(_protocol.FrameError, match="longer than"):
        tables.define([_protocol.SITE, 0, text, "f", "m", 1, "fn"])
    with pytest.raises(_protocol.FrameError, match="longer than"):
        tables.define([_protocol.THREAD, 0, 1, text, 2, "p"])
    assert (tables.sites, tables.threads) == ({}, {})

