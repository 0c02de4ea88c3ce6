"""What one connection owes the writer, and how it goes out: units, queued records, drops.

Owned by one ``Connection`` and used only by the thread holding its lock.
What is being sent is one *unit* (``out``): a record's frames, a DROPPED note
or a control frame, with the byte counts ``send()`` returned for it.  Those
counts are appended by C code in the same call as the send
(``sent += map(sock.send, ...)``): CPython runs signal handlers only at a
call's end, a function's start or a backward jump, so a handler's exception
can come after ``send()`` but never between it and its count.  A unit begun is
finished before anything else is sent, by the next call or at exit.

``drain`` orders what is owed: the unit in flight, the queued records (logged
from inside this thread's own send, or left over by a broken connection),
then the count of dropped records.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time

from logfunnel._core import wire as _wire
from logfunnel._core.dial import SEND_FLAGS
from logfunnel._core.pipe import RecordPipe, writer_gone

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final

_NO_WAIT: Final = SEND_FLAGS | getattr(socket, "MSG_DONTWAIT", 0)
#: Records logged from inside this thread's own send, kept to be sent right after it.
DEFERRED_LIMIT: Final = 256

#: A record to send, or a line its sender rendered before (read back from a pipe
#: the writer did not read: ``pipe.RecordPipe.salvage``).
Owed = logging.LogRecord | str
#: What is being sent: the unit's bytes, the counts ``send()`` returned for them,
#: the drop count a DROPPED note carries, and the record the frames encode.  The
#: rest after ``sum(counts)`` bytes goes out next.
Unit = tuple[bytes, list[int], int, Owed | None]
#: Nothing in flight.
IDLE: Final[Unit] = (b"", [], 0, None)
#: A record is being encoded: if that is interrupted, the encoder may hold
#: definitions that never went out, so the next drain resets it first.
ENCODING: Final[Unit] = (b"", [], 0, None)


class Outbox:
    """The unit in flight, the records queued behind it, and the drops not yet reported."""

    __slots__ = ("deferred", "dropped", "encoder", "flags", "frames", "out", "pipe", "tls")

    def __init__(
        self, encoder: _wire.Encoder, frames: Callable[[logging.LogRecord], bytes]
    ) -> None:
        """Send with ``encoder``; ``frames`` makes what to send for a record."""
        self.encoder = encoder
        self.frames = frames
        self.out = IDLE
        self.deferred: list[Owed] = []
        #: Records dropped (on_full="drop", or nested records beyond the queue's
        #: bound) that the writer has not been told of yet.
        self.dropped = 0
        self.flags = (SEND_FLAGS,)  # (0,) on a TLS socket, which takes no flags
        self.tls = False
        #: Where the units go instead of the socket (``pipe``); None: the socket.
        self.pipe: RecordPipe | None = None

    def owes(self) -> bool:
        """Tell whether anything waits to go out."""
        return bool(self.out[0] or self.deferred or self.dropped)

    def defer(self, record: logging.LogRecord) -> bool:
        """Queue a record logged from inside this thread's own send; False if dropped instead."""
        if len(self.deferred) < DEFERRED_LIMIT:
            self.deferred.append(record)
            return True
        self.dropped += 1
        return False

    def drain(self, sock: socket.socket, deadline: float | None, *, drop: bool) -> bool:
        """Send the unit in flight, the queued records, then the drop count.

        Returns False if ``deadline`` passed first.  A unit partly out stays in
        flight, to be finished first next time; one not begun is taken back,
        and with ``drop`` it and the records still queued are dropped and
        counted.  Raises OSError if the connection broke.
        """
        if self.out is ENCODING:  # an encode was interrupted: what it defined never went out
            self.encoder.reset()
            self.out = IDLE
        deferred = self.deferred
        budget = len(deferred) + DEFERRED_LIMIT  # a signal handler logging faster cannot hold us
        while self.push(sock, deadline):
            if deferred and budget:
                budget -= 1
                record = deferred[0]
                self.out = ENCODING
                try:
                    frame = self.line(record) if type(record) is str else self.frames(record)  # type: ignore[arg-type]
                except Exception:  # not the transport's to handle: the caller reports it
                    del deferred[0]
                    raise
                # Between these statements no signal handler can run (see the module doc):
                # the record is either queued or in flight, never both nor neither.
                self.out = (frame, [], 0, record)
                del deferred[0]
            elif self.dropped:
                count = self.dropped
                note = self.encoder.frame([_wire.DROPPED, count])
                self.out = (note, [], count, None)
                self.dropped -= count  # not `= 0`: a nested call may have counted one meanwhile
            else:
                return True
        self._take_back(drop=drop)
        return False

    def _take_back(self, *, drop: bool) -> None:
        """After a deadline: take back a unit not begun; with ``drop``, drop what is queued."""
        _, sent, drops, held = self.out
        if not sent:  # not a byte of it went out: take it back
            if held is None:
                self.dropped += drops
                self.out = IDLE
            elif drop:
                self.dropped += 1
                self.out = ENCODING  # what its frames defined must be defined again
            else:
                self.out = ENCODING
                self.deferred.insert(0, held)
        if drop:
            late = len(self.deferred)
            self.dropped += late
            del self.deferred[:late]

    def line(self, text: str) -> bytes:
        """Return what carries a line read back from a pipe (see ``Owed``)."""
        return self.encoder.line(text)

    def push(self, sock: socket.socket, deadline: float | None) -> bool:
        """Write the rest of the unit in flight; False if ``deadline`` passed first.

        Raises OSError if the connection broke.  Any other exception (a signal
        handler's) leaves the unit's counts exact, for the next call to finish.
        """
        if self.pipe is not None:
            return self._push_pipe(self.pipe, sock, deadline)
        data, sent, _, _ = self.out
        poller = None
        while True:
            done = sum(sent)
            if done >= len(data):
                self.out = IDLE
                return True
            rest = memoryview(data)[done:]
            if deadline is None:
                sent += map(sock.send, (rest,), self.flags)
                continue
            remaining = deadline - time.monotonic()
            if self.tls:  # TLS takes no MSG_DONTWAIT: bound each send by a timeout
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                try:
                    sent += map(sock.send, (rest,))
                except TimeoutError:
                    return False
                finally:
                    sock.settimeout(None)
                continue
            try:
                sent += map(sock.send, (rest,), (_NO_WAIT,))
            except BlockingIOError:
                if remaining <= 0:
                    return False
                if poller is None:
                    poller = select.poll()
                    poller.register(sock, select.POLLOUT)
                poller.poll(remaining * 1000)

    def _push_pipe(self, pipe: RecordPipe, sock: socket.socket, deadline: float | None) -> bool:
        """``push`` to the pipe, whose write end never blocks: a full pipe is waited on here.

        While it waits it watches the socket too: the writer's end of it means
        nobody reads the pipe any more (raises ``ConnectionResetError``).
        """
        data, sent, _, _ = self.out
        poller = None
        while True:
            done = sum(sent)
            if done >= len(data):
                pipe.done(len(data))
                self.out = IDLE
                return True
            try:
                sent += map(pipe.write, (memoryview(data)[done:],))
                continue
            except BlockingIOError:
                if pipe.grow():  # the writer is behind: let its backlog wait in the kernel
                    continue
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return False
            if poller is None:
                poller = select.poll()
                poller.register(pipe.write_fd, select.POLLOUT)
                poller.register(sock, select.POLLIN)
            for fd, _ in poller.poll(None if wait is None else wait * 1000):
                if fd != pipe.write_fd and writer_gone(sock):
                    raise ConnectionResetError("the writer closed the connection")
                if fd != pipe.write_fd:  # a late answer to a flush that gave up
                    with contextlib.suppress(OSError):
                        sock.recv(65536, socket.MSG_DONTWAIT)

    def requeue(self) -> None:
        """Queue again what the unit in flight carried: the stream it was on has ended.

        A unit not sent whole was discarded by the writer (a cut frame), so
        its record goes again, first, and a DROPPED note's count is owed again.
        """
        data, sent, drops, record = self.out
        cut = sum(sent) < len(data)
        self.out = IDLE
        if cut:
            self.dropped += drops
            if record is not None:
                self.deferred.insert(0, record)

    def abandon_cut_unit(self) -> None:
        """At exit: a unit begun and never to be finished counts as dropped (the writer cuts it)."""
        data, sent, drops, record = self.out
        if sum(sent) < len(data):
            self.dropped += drops + (record is not None)
            self.out = IDLE
