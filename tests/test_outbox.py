"""The outbox and the framer in-process: what a connection owes, and what a record becomes.

Real kernel sockets (a socketpair), no writer: the far end is read with the
writer's own ``FrameReader``, so what these tests see is what a writer would.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from logfunnel._core import wire as _wire
from logfunnel._core.framing import Framer
from logfunnel._core.options import Options, field_limit
from logfunnel._core.outbox import DEFERRED_LIMIT, ENCODING, IDLE, Outbox


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("outbox", logging.INFO, __file__, 7, message, None, None)
    record.__dict__.update(extra)
    return record


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Return a connected pair with small buffers, so a few records fill it."""
    near, far = socket.socketpair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield near, far
    near.close()
    far.close()


def _outbox() -> Outbox:
    encoder = _wire.Encoder()
    return Outbox(encoder, encoder.record)


def _read_all(sock: socket.socket) -> list[list[object]]:
    """Read what is queued on ``sock`` now, and return its frames."""
    reader = _wire.FrameReader()
    frames: list[list[object]] = []
    sock.setblocking(False)
    try:
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                return frames
            if not data:
                return frames
            frames += [list(f) for f in reader.feed(data)]
    finally:
        sock.setblocking(True)


def _kinds(frames: list[list[object]]) -> list[object]:
    return [f[0] for f in frames if f[0] not in (_wire.SITE, _wire.THREAD)]


def test_queued_records_go_out_in_order_then_the_drop_count(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Drain sends the queue in order and reports drops after it, in one DROPPED frame."""
    near, far = pair
    box = _outbox()
    for i in range(3):
        assert box.defer(_record(f"queued {i}"))
    box.dropped = 5
    assert box.owes()
    assert box.drain(near, None, drop=False) is True
    assert not box.owes()
    assert box.out is IDLE
    frames = _read_all(far)
    assert _kinds(frames) == [_wire.RECORD, _wire.RECORD, _wire.RECORD, _wire.DROPPED]
    assert frames[-1] == [_wire.DROPPED, 5]


def test_the_queue_is_bounded_and_what_is_past_it_is_counted() -> None:
    """Records logged from inside a send are kept up to DEFERRED_LIMIT, then counted as dropped."""
    box = _outbox()
    kept = sum(box.defer(_record("nested")) for _ in range(DEFERRED_LIMIT + 7))
    assert kept == DEFERRED_LIMIT
    assert box.dropped == 7


def test_a_full_socket_with_drop_counts_every_record_not_sent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Past the deadline, a unit not begun and the queue are dropped, each counted once."""
    near, far = pair
    box = _outbox()
    big = "x" * 3000
    queued = 200
    for i in range(queued):
        box.defer(_record(f"{i} {big}"))
    assert box.drain(near, time.monotonic() + 0.05, drop=True) is False
    cut = box.out is not IDLE and box.out is not ENCODING  # a unit begun stays in flight
    # What is still owed: the drop count, and at most one unit half sent.
    assert box.deferred == []
    frames = _read_all(far)
    while box.owes():  # the far end reads; everything owed goes out
        box.drain(near, time.monotonic() + 1.0, drop=False)
        frames += _read_all(far)
    delivered = _kinds(frames).count(_wire.RECORD)
    reported = sum(int(f[1]) for f in frames if f[0] == _wire.DROPPED)  # type: ignore[call-overload]
    assert delivered + reported == queued, (delivered, reported, cut)
    assert delivered < queued


def test_a_cut_unit_goes_again_whole_after_requeue(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A unit half sent when the stream ended is queued again, first, to go whole on the next."""
    near, _ = pair
    box = _outbox()
    record = _record("y" * 20_000)  # larger than the buffers: cannot go out at once
    box.defer(record)
    box.defer(_record("after it"))
    assert box.drain(near, time.monotonic() + 0.05, drop=False) is False
    data, sent, _, held = box.out
    assert held is record
    assert 0 < sum(sent) < len(data)
    box.requeue()  # the connection broke
    assert box.out is IDLE
    assert box.deferred[0] is record
    assert [r.getMessage() for r in box.deferred[1:] if isinstance(r, logging.LogRecord)] == [
        "after it"
    ]
    assert len(box.deferred) == 2


def test_an_interrupted_encode_resets_the_encoder_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """After an encode that never finished, definitions are sent again before their first use."""
    near, far = pair
    box = _outbox()
    box.encoder.record(_record("defines the site"))  # defined, never sent
    box.out = ENCODING
    box.defer(_record("uses the site"))
    assert box.drain(near, None, drop=False) is True
    frames = _read_all(far)
    assert [f[0] for f in frames][:2] != [_wire.RECORD]
    assert _wire.SITE in [f[0] for f in frames]


def test_the_framer_renders_plain_records_and_sends_the_rest_as_records() -> None:
    """With render set: a plain record is a LINE; an exception, a stack or extras, a RECORD."""
    encoder = _wire.Encoder()
    options = Options().replace(render={"fmt": "%(levelname)s %(message)s", "datefmt": None})
    framer = Framer(encoder, options)
    reader = _wire.FrameReader()

    def kinds(record: logging.LogRecord) -> list[object]:
        return _kinds([list(f) for f in reader.feed(framer.frames(record))])

    assert kinds(_record("plain")) == [_wire.LINE]
    assert kinds(_record("with extras", shard=3)) == [_wire.RECORD]
    stacked = _record("with a stack")
    stacked.stack_info = "Stack (most recent call last):\n  here"
    assert kinds(stacked) == [_wire.RECORD]
    long = _record("z" * (field_limit(options.frame_limit) + 1))
    assert kinds(long) == [_wire.RECORD]  # cut as the record path cuts it
    assert kinds(_record("x")) == [_wire.LINE]
    # Fields of logfunnel.context() are plain: the line is rendered here, as the writer would.
    fields = {"job": "nightly", "shard": 3}
    assert kinds(_record("in a block", **fields, logfunnel_context=fields)) == [_wire.LINE]
    clash = _record("an extra named like a field", job=object(), logfunnel_context=fields)
    assert kinds(clash) == [_wire.RECORD]
    assert _kinds([list(f) for f in reader.feed(Framer(encoder, Options()).frames(_record("r")))]) == [
        _wire.RECORD
    ]
