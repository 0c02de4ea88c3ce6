"""In-process tests of ``Connection`` against a real Unix socket standing in for the writer.

No transport is mocked: the connection connects, says HELLO with the read end
of its pipe and writes frames there, as it does to a writer; the test side
takes the pipe as the writer does and decodes every frame as the writer would
(definitions first, every RECORD checked against them), so a torn or
interleaved frame, or a record that uses a definition not yet sent, fails here.
"""

from __future__ import annotations

import array
import logging
import os
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from logfunnel._core import connection as _connection
from logfunnel._core import wire as _wire
from logfunnel._core.connection import Connection
from logfunnel._core.options import Options

DEADLINE = 20.0
BIG = 50_000  # characters: a record that cannot fit the socket's buffer with others


class FakeWriter:
    """Accept one connection on a Unix socket and decode its stream as the writer does."""

    def __init__(self, tmp_path: Path) -> None:
        """Listen on a socket in ``tmp_path``; nothing is accepted until first read."""
        self.path = str(tmp_path / "writer.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.address = "unix:" + self.path
        self.sock: socket.socket | None = None
        #: The read end of the connection's pipe, once its HELLO brought it.
        self.pipe: int | None = None
        self.socket_ended = False
        self.reader = _wire.FrameReader()
        self.socket_reader = _wire.FrameReader()
        self.tables = _wire.Tables()
        self.messages: list[str] = []
        self.dropped = 0
        self.hellos = 0
        #: The FLUSH and LEAVING frames the connection sent (on its socket).
        self.asked: list[int] = []

    def accept(self) -> socket.socket:
        """Return the connection's socket, accepting it first if need be."""
        if self.sock is None:
            self.listener.settimeout(DEADLINE)
            self.sock, _ = self.listener.accept()
            self.sock.settimeout(None)
        return self.sock

    def feed(self, data: bytes) -> None:
        """Decode received bytes: definitions are kept, records checked against them."""
        for fields in self.reader.feed(data):
            kind = fields[0]
            if kind in (_wire.SITE, _wire.THREAD):
                self.tables.define(fields)
            elif kind == _wire.RECORD:
                # Raises FrameError for a site or thread not defined before.
                self.messages.append(_wire.decode_record(fields, self.tables).getMessage())
            elif kind == _wire.LINE:
                self.messages.append(fields[1])
            elif kind == _wire.DROPPED:
                self.dropped += fields[1]
            elif kind == _wire.HELLO:
                self.hellos += 1
            else:
                pytest.fail(f"unexpected frame {fields!r}")

    def feed_socket(self, data: bytes) -> None:
        """Decode what the socket brings once the pipe carries the records: questions only."""
        for fields in self.socket_reader.feed(data):
            if fields[0] not in (_wire.FLUSH, _wire.LEAVING):
                pytest.fail(f"unexpected frame on the socket {fields!r}")
            self.asked.append(fields[0])  # this writer never answers

    def read_until(self, done: Any, timeout: float = DEADLINE) -> None:
        """Read and decode until ``done()`` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while not done():
            data = self.receive(deadline)
            if data is None:
                pytest.fail(f"gave up waiting; got {len(self.messages)} messages")
            if not data:
                pytest.fail(f"EOF; got {len(self.messages)} messages")
            self.feed(data)

    def read_to_eof(self, timeout: float = DEADLINE) -> None:
        """Read and decode everything until the peer closes."""
        deadline = time.monotonic() + timeout
        while data := self.receive(deadline):
            self.feed(data)

    def receive(self, deadline: float) -> bytes | None:
        """Return the next bytes of the stream, b"" at its end, None at the deadline.

        The stream is what the socket brings until the HELLO's pipe arrives,
        then the pipe's bytes; once the socket ends, what the pipe still holds.
        """
        sock = self.accept()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sources: list[Any] = [self.pipe] if self.pipe is not None else []
            if not self.socket_ended:
                sources.append(sock)
            elif self.pipe is None:
                return b""
            ready, _, _ = select.select(sources, [], [], remaining)
            if self.pipe is not None and self.pipe in ready:
                data = os.read(self.pipe, 1 << 20)
                if data:
                    return data
                os.close(self.pipe)  # every write end closed
                self.pipe = None
            elif sock in ready:
                if self.pipe is None and not self.socket_ended:
                    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
                    for _, _, fds in ancillary:
                        self.pipe = array.array("i", fds[:4])[0]
                else:
                    data = sock.recv(1 << 20)
                    if data and self.pipe is not None:  # a stream of its own, beside the pipe's
                        self.feed_socket(data)
                        continue
                if data:
                    return data
                self.socket_ended = True

    def close(self) -> None:
        """Close both sockets and the pipe (the connection sees EOF or a reset)."""
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    fake = FakeWriter(tmp_path)
    yield fake
    fake.close()


def record_at(
    msg: str, args: Any = (), *, line: int = 1, path: str = "site.py"
) -> logging.LogRecord:
    """Return a record from call site ``path:line`` (each new site has its own SITE frame)."""
    return logging.LogRecord("test.connection", logging.INFO, path, line, msg, args, None, "f")


def run_bounded(target: Any) -> None:
    """Run ``target`` in a thread and fail if it does not finish in time (a deadlock)."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "send_record deadlocked"
    if errors:
        raise errors[0]


# -- item 1: re-entrant calls from the same thread --------------------------------------------


class Lazy:
    """An argument whose ``__str__`` sends records of its own on the same connection."""

    def __init__(self, connection: Connection, inner: list[logging.LogRecord]) -> None:
        """Send ``inner`` on ``connection`` whenever this is made a string."""
        self.connection = connection
        self.inner = inner

    def __str__(self) -> str:
        """Send the inner records, then return the row's text."""
        for record in self.inner:
            self.connection.send_record(record)
        return "row-42"


def test_a_record_logged_while_one_is_encoded_arrives_whole_and_once(writer: FakeWriter) -> None:
    """A __str__ that logs: both records arrive, each once, each whole, definitions before use."""
    conn = Connection(writer.address, Options())
    # Each from a call site of its own, so each encode defines a new site: the
    # nested ones are encoded while the outer one's encode is half-way through.
    deeper = record_at("query %s", (Lazy(conn, [record_at("deepest", line=4)]),), line=3)
    nested = [record_at("query one", line=2), deeper]
    outer = record_at("loaded %s " + "x" * 2000, (Lazy(conn, nested),), line=1)
    run_bounded(lambda: conn.send_record(outer))
    writer.read_until(lambda: len(writer.messages) == 4)
    assert sorted(writer.messages) == sorted(
        ["loaded row-42 " + "x" * 2000, "query one", "query row-42", "deepest"]
    )
    run_bounded(lambda: conn.send_record(record_at("after", line=5)))
    writer.read_until(lambda: len(writer.messages) == 5)
    assert writer.messages[-1] == "after"
    conn.close()


def test_a_rendered_line_that_logs_while_rendered_arrives_with_it(writer: FakeWriter) -> None:
    """The same on the LINE path (host='process' renders in the process that logs)."""
    conn = Connection(writer.address, Options(render={"fmt": "%(levelname)s %(message)s"}))
    outer = record_at("loaded %s", (Lazy(conn, [record_at("query", line=2)]),))
    run_bounded(lambda: conn.send_record(outer))
    writer.read_until(lambda: len(writer.messages) == 2)
    assert sorted(writer.messages) == ["INFO loaded row-42", "INFO query"]
    conn.close()


def test_nested_records_beyond_the_bound_are_counted_as_dropped(writer: FakeWriter) -> None:
    """More nested records than the queue holds: the rest are dropped and the count arrives."""
    conn = Connection(writer.address, Options())
    nested = _connection.DEFERRED_LIMIT + 50
    many = [record_at(f"inner {i}", line=10) for i in range(nested)]
    run_bounded(lambda: conn.send_record(record_at("outer %s", (Lazy(conn, many),))))
    writer.read_until(lambda: len(writer.messages) + writer.dropped == nested + 1)
    inner = [m for m in writer.messages if m.startswith("inner")]
    assert inner == [f"inner {i}" for i in range(len(inner))]  # in order, none twice
    # The queue holds the bound's worth (the outer record, while encoded, takes a place).
    assert len(inner) >= _connection.DEFERRED_LIMIT - 1
    assert writer.dropped == nested - len(inner)
    conn.close()


def test_flush_from_inside_a_send_does_not_deadlock(writer: FakeWriter) -> None:
    """A flush() issued from inside this thread's own send returns False instead of waiting."""
    conn = Connection(writer.address, Options())
    answers: list[bool] = []

    class Flusher:
        def __str__(self) -> str:
            answers.append(conn.flush(1.0))
            return "flushed?"

    run_bounded(lambda: conn.send_record(record_at("%s", (Flusher(),))))
    assert answers == [False]
    writer.read_until(lambda: writer.messages == ["flushed?"])
    conn.close()


# -- item 5: an exception raised inside a blocked send ----------------------------------------


class Interrupted(BaseException):
    """What the test's signal handler raises (as KeyboardInterrupt would)."""


def _state(native_id: int) -> str:
    with open(f"/proc/self/task/{native_id}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def interrupt_when_blocked(native_id: int, main: int, stop: threading.Event) -> None:
    """Signal the main thread once it sleeps (blocked in send), until it says it was interrupted."""
    while not stop.is_set():
        if _state(native_id) == "S":
            signal.pthread_kill(main, signal.SIGUSR1)
        stop.wait(0.01)


@pytest.mark.skipif(
    not os.path.exists("/proc/self/task"), reason="needs /proc to see a blocked thread"
)
def test_an_exception_in_a_blocked_send_leaves_the_stream_whole(writer: FakeWriter) -> None:
    """Interrupted half-way through a 50 KB frame: it is completed, and 5 later records arrive."""
    conn = Connection(writer.address, Options())
    conn.send_record(record_at("first"))
    writer.accept()

    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    stop = threading.Event()
    watcher = threading.Thread(
        target=interrupt_when_blocked,
        args=(threading.get_native_id(), threading.get_ident(), stop),
        daemon=True,
    )
    sent = 0
    try:
        watcher.start()
        # Nobody reads: the socket fills up and a send blocks part-way through a frame.
        try:
            for sent in range(1, 1000):
                conn.send_record(record_at(f"big {sent} " + "b" * BIG, line=2))
            pytest.fail("the socket never filled up")
        except Interrupted:
            pass
        finally:
            stop.set()
            watcher.join(DEADLINE)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    data, counts, _, _ = conn.outbox.out  # the scenario this test is about: a frame half sent
    assert 0 < sum(counts) < len(data), "the interruption did not come in the middle of a frame"
    reading = threading.Thread(
        target=writer.read_until, args=(lambda: len(writer.messages) == sent + 6,), daemon=True
    )
    reading.start()
    for i in range(5):
        conn.send_record(record_at(f"after {i}", line=3))
    reading.join(DEADLINE)
    big = [m for m in writer.messages if m.startswith("big")]
    # The interrupted record is complete, and counts as sent.
    assert big == [f"big {i} " + "b" * BIG for i in range(1, sent + 1)]
    assert writer.messages[-5:] == [f"after {i}" for i in range(5)]
    conn.close()


# -- item 6: a frame partly sent under on_full="drop" ------------------------------------------


def _fill_until_partial(conn: Connection) -> int:
    """Log big records until one is only partly sent (the writer reads nothing); return how many."""
    for count in range(1, 1000):
        conn.send_record(record_at(f"big {count} " + "b" * BIG, line=2))
        data, sent, _, _ = conn.outbox.out
        if 0 < sum(sent) < len(data):
            return count
    pytest.fail("no frame was ever left half sent")


def test_a_partial_frame_that_cannot_be_finished_at_exit_is_counted(
    writer: FakeWriter, tmp_path: Path
) -> None:
    """Delivered + dropped == logged: the half-sent record is reported as dropped at exit."""
    fallback = tmp_path / "fallback.log"
    conn = Connection(
        writer.address, Options(on_full="drop", full_timeout=0.05, fallback=str(fallback))
    )
    logged = _fill_until_partial(conn)
    writer.accept()
    conn.settle_at_exit()  # what atexit and multiprocessing's Finalize run; nobody reads
    text = fallback.read_text(encoding="utf-8")
    assert f"1 records of process {os.getpid()} were dropped (on_full='drop')" in text, text
    conn.close()
    writer.read_to_eof()
    # The writer got every record but the cut one (discarded), and that one was counted.
    assert writer.reader.pending > 0
    assert writer.messages == [f"big {i} " + "b" * BIG for i in range(1, logged)]


def test_a_partial_frame_is_finished_at_exit_when_the_writer_reads(
    writer: FakeWriter, tmp_path: Path
) -> None:
    """The half-sent record is completed at exit if the writer takes it within the wait."""
    fallback = tmp_path / "fallback.log"
    conn = Connection(
        writer.address, Options(on_full="drop", full_timeout=0.05, fallback=str(fallback))
    )
    logged = _fill_until_partial(conn)
    reading = threading.Thread(
        target=writer.read_until, args=(lambda: len(writer.messages) == logged,), daemon=True
    )
    reading.start()
    conn.settle_at_exit()
    reading.join(DEADLINE)
    assert writer.messages == [f"big {i} " + "b" * BIG for i in range(1, logged + 1)]
    assert not fallback.exists() or "dropped" not in fallback.read_text(encoding="utf-8")
    conn.close()


# -- the connection's other paths ----------------------------------------------------------


@pytest.mark.parametrize("read_first", [0, 2])
def test_what_a_lost_writer_did_not_read_goes_again_whole_and_in_order(
    tmp_path: Path, read_first: int
) -> None:
    """The writer goes away mid-frame: what it never read goes to the next one, once, in order.

    The records stay in the pipe the connection keeps a read end of; it reads
    them back once the socket ends.  A record the dead writer read part of is
    lost with it (the writer discarded the part as a cut frame).
    """
    first = FakeWriter(tmp_path)
    conn = Connection(first.address, Options(on_full="drop", full_timeout=0.05))
    logged = _fill_until_partial(conn)
    first.read_until(lambda: len(first.messages) >= read_first)
    first.close()  # the writer dies with the frame half received
    os.unlink(first.path)
    second = FakeWriter(tmp_path)
    try:
        reading = threading.Thread(
            target=second.read_until, args=(lambda: "again" in second.messages,), daemon=True
        )
        reading.start()
        conn.send_record(record_at("again", line=5))  # into the pipe, if it has room
        # At exit (what atexit and multiprocessing's Finalize run) the socket's
        # end says nobody reads the pipe: what it holds goes to the writer that
        # took the address.
        conn.settle_at_exit()
        reading.join(DEADLINE)
        cut = 1 if first.reader.pending else 0  # the one it was reading when it died
        rest = [f"big {i} " + "b" * BIG for i in range(len(first.messages) + 1 + cut, logged + 1)]
        assert second.messages == [*rest, "again"]
        assert len(first.messages) + cut + len(rest) == logged
        assert second.hellos == 1
        conn.close()
    finally:
        second.close()
