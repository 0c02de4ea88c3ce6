"""Unit and property tests of the frame reader (``frame_reader``, reached as ``_wire``).

Streams split at every byte, frames over the limit refused unbuffered, and
garbage that raises ``FrameError`` and nothing else.
"""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from logfunnel._core import wire as _wire
from test_wire_support import (
    PROPERTY,
    decode_frames,
    handle_and_format,
    has_surrogate,
    kinds_of,
    make_record,
    plain_values,
)

frames_strategy = st.lists(
    st.lists(plain_values, max_size=6).map(lambda rest: [_wire.FLUSH, *rest]),
    min_size=1,
    max_size=6,
)


@PROPERTY
@given(arrays=frames_strategy)
def test_split_at_every_byte_boundary_yields_the_same_frames(arrays: list[list[Any]]) -> None:
    """Feeding a stream in two parts, split anywhere, or byte by byte, yields the same frames."""
    assume(not has_surrogate(arrays))
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


@pytest.mark.parametrize("claimed", [4097, 2**20, _wire.BARE_LIMIT - 1])
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


@pytest.mark.parametrize("claimed", [_wire.BARE_LIMIT, 2**31, 2**32 - 1])
def test_a_first_byte_other_than_0_is_a_bare_line_refused_at_its_first_nul(claimed: int) -> None:
    """From 16 MiB on a header's first byte is not 0: those bytes read as a bare line.

    No sender makes such a frame (the limit is below ``BARE_LIMIT`` wherever
    bare lines are read); a NUL before the line's end refuses the stream as
    soon as it arrives, so this buffers no more than the header did.
    """
    reader = _wire.FrameReader(limit=4096)
    header = struct.pack(">I", claimed)
    assert reader.feed(header[:1]) == []  # a line's first byte: more may follow
    with pytest.raises(_wire.FrameError, match="line holds a NUL byte"):
        reader.feed(header[1:] + b"\x00" * 100)
    assert reader.pending <= 4 + 100


def test_a_large_limit_reads_every_first_byte_as_a_header() -> None:
    """With a limit of 16 MiB or more, a 16 MiB frame is a frame (and no line is bare)."""
    encoder = _wire.Encoder(_wire.BARE_LIMIT)
    line = encoder.line("plain text")
    assert line[:1] == b"\x00"  # framed: a bare line would be ambiguous here
    frame = encoder.frame([_wire.STACKS, 7, "x" * _wire.BARE_LIMIT])  # over 16 MiB
    assert frame[:1] != b"\x00"
    reader = _wire.FrameReader(limit=_wire.BARE_LIMIT + 64)
    got = reader.feed(line + frame)
    assert [f[:2] for f in got] == [[_wire.LINE, "plain text"], [_wire.STACKS, 7]]


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
    assume(not has_surrogate(arrays))
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
        handle_and_format(fields, tables)
