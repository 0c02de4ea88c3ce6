"""The sending side: one process's connection to the writer, its fallback and backpressure.

Every process attached to a funnel owns exactly one ``Connection``: a stream
socket of its own to the writer and, for a local writer, a pipe of its own that
carries the frames (``pipe``: the socket then says HELLO and carries the
writer's answers and its end).  Nothing is shared with another process, so a
process that dies (even by SIGKILL mid-record) can at worst cut its own last
frame, which the writer discards.  A record is written before the logging call
returns: once ``send_record`` returns, the bytes are in the kernel, and they
reach the writer even if this process is killed the next instant.

How a record leaves, in order::

    send_record(record)
      -> Framer.frames: its rendered line or the record itself   (framing)
      -> Outbox: the unit in flight, queued records, drop count  (outbox)
      -> its pipe (or the socket), opened and reopened here      (dial, pipe)
      -> or, while the writer cannot be reached, the Fallback    (fallback)

Who owns what: the ``Connection`` belongs to the process that made it (its
``pid``); its lock serialises that process's threads and is never held across
a fork, because a forked child drops the inherited object unused
(``state.reset_after_fork``) and opens its own on first use.  Everything else
in it (the socket, the encoder's definitions, the outbox) is read and written
only by the thread holding the lock.

Re-entrant calls.  The lock is re-entrant, and ``_busy`` is set while a thread
is inside a send.  A record logged from inside that send by the same thread
(an argument's ``__str__`` that logs, a signal handler that logs) does not
touch the socket or the encoder: it is queued (``Outbox.defer``, at most
``DEFERRED_LIMIT``; beyond that it is dropped and counted) and sent right after
the record being sent, before the outer logging call returns.  So a frame is
never interleaved with another, and every SITE or THREAD definition reaches
the writer before the first frame that uses it: nothing is encoded while
another encode is half-way through.

Interruptions.  An exception can leave a send at any point (KeyboardInterrupt,
or a signal handler's exception, raised while ``send()`` is blocked on a full
socket).  The outbox keeps exact byte counts of the unit in flight (see
``outbox``), so a unit begun is finished before anything else is sent, by the
next call or at exit; a record whose frames were ready when the exception came
is sent in full, and the exception still reaches the caller.  (Over TLS,
``send()`` is Python code, so this holds only for exceptions outside it.)
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import time

from logfunnel._core import dial as _dial
from logfunnel._core import wire as _wire
from logfunnel._core.fallback import Fallback
from logfunnel._core.framing import Framer
from logfunnel._core.outbox import DEFERRED_LIMIT, ENCODING, IDLE, Outbox
from logfunnel._core.pipe import RecordPipe, ask, writer_gone

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Final

    from logfunnel._core.options import Options

__all__ = ["DEFERRED_LIMIT", "Connection"]

_RETRY_SECONDS: Final = 1.0
#: How long a process in ``on_full="block"`` mode waits at exit for the writer to take
#: what it still owes (``"drop"`` waits ``max(1 s, full_timeout)``).
_EXIT_WAIT_BLOCK: Final = 5.0


class Connection:
    """One process's connection to the writer, with its fallback and drop accounting.

    Every byte goes out through the outbox (or the common case's one send),
    one unit at a time.
    """

    def __init__(self, address: str, options: Options) -> None:
        """Send to the writer at ``address``; nothing is connected before the first record."""
        self.address = address
        self.options = options
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.encoder = _wire.Encoder(options.frame_limit)
        self.fallback = Fallback(options.fallback)
        self._frames = Framer(self.encoder, options).frames
        self.outbox = Outbox(self.encoder, self._frames)
        self._sock: socket.socket | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._busy = False  # a thread holding the lock is inside a send
        self._requests = itertools.count(1)
        self._exit_report_registered = False
        self._block = options.on_full == "block"

    # -- the hot path -------------------------------------------------------------------

    def send_record(self, record: logging.LogRecord) -> None:
        """Send one record, or hand it to the fallback; never raises for transport reasons."""
        with self.lock:
            if self._busy:  # logged from inside this thread's own send: sent right after it
                if not self.outbox.defer(record) and not self._exit_report_registered:
                    self._register_exit_report()
                return
            self._busy = True
            try:
                sock = self._sock
                box = self.outbox
                if box.out is IDLE and sock is not None and self._block and not box.deferred:
                    # The common case, kept short: one encode, one write.
                    box.out = ENCODING
                    frame = self._frames(record)
                    sent: list[int] = []
                    box.out = (frame, sent, 0, record)
                    pipe = box.pipe
                    try:
                        if pipe is None:
                            sent += map(sock.send, (frame,), box.flags)
                        else:
                            sent += map(pipe.write, (frame,))
                    except BlockingIOError:  # the pipe is full: wait for room (or the end)
                        self._send_slow(None)
                        return
                    except OSError:
                        # The writer went away (a writer process is restarted by
                        # its supervisor).  A frame not sent whole was never
                        # written: it goes again, encoded anew, on a new connection.
                        self._broken()
                        self._send_slow(None, (2,))
                        return
                    if sent[0] == len(frame):
                        box.out = IDLE
                        if pipe is not None:
                            pipe.done(len(frame))
                            if pipe.due(time.monotonic()) and writer_gone(sock):
                                self._broken()  # what the writer did not read goes again
                                self._send_slow(None, (2,))
                                return
                        if not box.deferred and not box.dropped:
                            return
                    self._send_slow(None)  # the rest of it, then what was logged meanwhile
                else:
                    self._send_slow(record)
            finally:
                self._busy = False

    # -- the general path ---------------------------------------------------------------

    def _send_slow(
        self, record: logging.LogRecord | None, attempts: tuple[int, ...] = (1, 2)
    ) -> None:
        """Send what is owed, then ``record``; the second attempt is on a new connection."""
        if record is not None:
            self.outbox.deferred.append(record)
        deadline = None if self._block else time.monotonic() + self.options.full_timeout
        for attempt in attempts:
            sock = self._sock
            if sock is None:
                sock = self._reconnect()
                if sock is None:
                    break
            try:
                self.outbox.drain(sock, deadline, drop=not self._block)
            except OSError as exc:
                self._broken()
                if attempt == 2:
                    self._lost(exc)
            else:
                return
        self._to_fallback()

    def _to_fallback(self) -> None:
        """Hand what is queued to the fallback: the writer cannot be reached."""
        self.outbox.requeue()
        deferred = self.outbox.deferred
        while deferred:
            owed = deferred[0]
            if type(owed) is str:  # a line rendered before, read back from the pipe
                self.fallback.line(owed)
            else:
                self.fallback.record(owed)  # type: ignore[arg-type]
            del deferred[0]

    # -- at exit ------------------------------------------------------------------------

    def _register_exit_report(self) -> None:
        """Make sure what is owed is settled even if this process never logs again."""
        self._exit_report_registered = True
        atexit.register(self.settle_at_exit)
        # Pool workers leave through os._exit(): atexit never runs there, so
        # settle from multiprocessing.util.Finalize, which Process._bootstrap runs.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(None, self.settle_at_exit, exitpriority=100)

    def settle_at_exit(self) -> None:
        """Finish what is owed within a bounded wait; count and report what cannot be.

        Waits at most ``max(1 s, full_timeout)`` (``on_full="drop"``) or
        ``_EXIT_WAIT_BLOCK``.  A record whose frame cannot be finished counts as
        dropped, so that delivered + dropped == logged; a drop count the writer
        cannot take is written to the fallback.
        """
        if self.pid != os.getpid() or not self.lock.acquire(timeout=1.0):
            return
        try:
            if self._busy:  # inside this thread's own send (a signal handler that exits)
                return
            self._busy = True
            try:
                self._settle()
            finally:
                self._busy = False
        finally:
            self.lock.release()

    def _settle(self) -> None:
        box = self.outbox
        wait = _EXIT_WAIT_BLOCK if self._block else max(1.0, self.options.full_timeout)
        pipe, sock = box.pipe, self._sock
        leaving = self.encoder.frame([_wire.LEAVING, next(self._requests)])
        if pipe is not None and sock is not None and pipe.wait_until_read(sock, wait, leaving):
            self._broken()  # what the writer did not read is queued again
            self._reconnect()  # a restarted writer takes it; else the fallback does
        if not box.owes():
            return
        sock = self._sock
        if sock is not None:
            try:
                box.drain(sock, time.monotonic() + wait, drop=True)
            except OSError:
                self._broken()
        if self._sock is None:
            self._to_fallback()
        box.abandon_cut_unit()
        if box.dropped:  # the writer is still stuck: say it where it can be read
            mode = self.options.on_full
            self.fallback.say(
                f"{box.dropped} records of process {self.pid} were dropped "
                f"(on_full={mode!r}), and the writer was still behind when it exited"
            )
            box.dropped = 0

    # -- connection state ---------------------------------------------------------------

    def _reconnect(self) -> socket.socket | None:
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            sock = _dial.connect(self.address)
            flags = _dial.send_flags(sock)
            pipe = None
            try:
                hello = self.encoder.frame(_wire.hello_fields(self.pid, _dial.process_name()))
                if sock.family == getattr(socket, "AF_UNIX", None):
                    pipe = RecordPipe.open(sock, hello)
                else:
                    sock.sendall(hello, flags)
            except BaseException:
                sock.close()
                raise
        except (OSError, ValueError) as exc:
            self._retry_at = now + _RETRY_SECONDS
            if self._down_since is None:
                self._down_since = now
                self.fallback.say(
                    f"cannot reach the log writer at {self.address} ({type(exc).__name__}: "
                    f"{exc}); records of process {self.pid} go to "
                    f"{self.options.fallback or 'stderr'} until it is back"
                )
            return None
        if self._down_since is not None:
            self.fallback.say(
                f"the log writer at {self.address} is reachable again; "
                f"{self.fallback.count} records of process {self.pid} went to "
                f"{self.options.fallback or 'stderr'} meanwhile"
            )
            self._down_since = None
            self.fallback.count = 0
        self.outbox.requeue()  # a unit cut on the old connection goes again whole on this one
        self._sock = sock
        self.outbox.pipe = pipe
        self.outbox.flags = (flags,)
        self.outbox.tls = hasattr(sock, "cipher")
        self.encoder.reset()  # a new connection knows no sites or threads yet
        if not self._exit_report_registered:
            self._register_exit_report()
        return sock

    def _broken(self) -> None:
        """Close a connection that failed, and queue again what was in flight.

        With a pipe the writer no longer reads (its end of the socket came),
        what it did not read is read back and queued first, in order.
        """
        box = self.outbox
        pipe, sock = box.pipe, self._sock
        if pipe is not None and sock is not None and writer_gone(sock):
            data, sent, _, _ = box.out
            done = sum(sent)
            if data and done >= len(data):  # written whole, not yet noted
                pipe.done(len(data))
                box.out = IDLE
            items, dropped = pipe.salvage(
                self.encoder, self.options.frame_limit, done if box.out is not IDLE else 0
            )
            self.close()
            box.requeue()
            box.deferred[:0] = items
            box.dropped += dropped
            return
        self.close()
        box.requeue()

    def _lost(self, exc: OSError) -> None:
        self._broken()
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        self._down_since = time.monotonic()
        self.fallback.say(
            f"lost the log writer at {self.address} ({type(exc).__name__}: {exc}); records of "
            f"process {self.pid} go to {self.options.fallback or 'stderr'} until it is back"
        )

    def close(self) -> None:
        """Close the socket: the writer reads everything sent, then sees EOF.

        Takes no lock and touches nothing else, so it is also how a forked
        child drops an inherited connection: closing releases only this
        process's descriptor, and the parent's stream (and any frame it is
        half-way through) stays intact.
        """
        sock, self._sock = self._sock, None
        pipe, self.outbox.pipe = self.outbox.pipe, None
        if pipe is not None:
            pipe.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def flush(self, timeout: float) -> bool:
        """Ask the writer to write everything received so far, and wait for its answer."""
        deadline = time.monotonic() + timeout
        if not self.lock.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            if self._busy:  # called from inside this thread's own send (a signal handler)
                return False
            self._busy = True
            try:
                return self._flush(deadline)
            finally:
                self._busy = False
        finally:
            self.lock.release()

    def _flush(self, deadline: float) -> bool:
        sock = self._sock or self._reconnect()
        if sock is None:
            return False
        request = next(self._requests)
        try:
            box = self.outbox
            if not box.drain(sock, deadline, drop=False):
                return False
            frame = self.encoder.frame([_wire.FLUSH, request])
            if box.pipe is not None:
                # On the socket, not in the pipe: a writer napping wakes for its
                # socket, and its barrier reads the pipe before it answers (``pipe``).
                asked = ask(sock, frame)
            else:
                box.out = (frame, [], 0, None)
                asked = box.push(sock, deadline)
                if not asked:
                    if not box.out[1]:
                        box.out = IDLE
                    return False
            reply = _dial.read_reply(sock, _wire.FLUSHED, request, deadline) if asked else None
            answered = reply is not None
            if not answered and box.pipe is not None and writer_gone(sock):
                # What the writer did not read goes to its successor, if there is one.
                self._broken()
                sock = self._reconnect()
                if sock is not None:
                    box.drain(sock, deadline, drop=False)
                return False
            if box.deferred:  # logged while we waited (a signal handler)
                box.drain(sock, deadline, drop=False)
        except OSError as exc:
            self._lost(exc)
            return False
        return answered
