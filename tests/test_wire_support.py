"""Helpers of the codec tests (``tests/test_plain.py``, ``test_wire.py``, ``test_protocol.py``).

No test lives here: records to encode, the round trip through ``_wire.Encoder``,
``_wire.FrameReader`` and ``decode_record`` that most tests check, the checks of
a degraded text and of both sinks' formatting, and the hypothesis strategies
of plain and odd values the property tests share.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from logfunnel._core import wire as _wire
from logfunnel.sinks.files import JsonFormatter, LineFormatter

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


def strict_json(line: str) -> Any:
    """Parse ``line`` as RFC 8259 JSON (no NaN or Infinity), checking it is one line."""
    assert "\n" not in line

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def handle_and_format(fields: list[Any], tables: _wire.Tables) -> None:
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

