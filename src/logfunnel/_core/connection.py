"""The sending side: one process's connection to the writer, its fallback and backpressure.

Every process attached to a funnel owns exactly one ``Connection``: a stream
socket of its own to the writer.  Nothing is shared with another process, so a
process that dies (even by SIGKILL mid-record) can at worst cut its own last
frame, which the writer discards.  A record is written to the socket before the
logging call returns: once ``send_record`` returns, the bytes are in the kernel,
and they reach the writer even if this process is killed the next instant.

Who owns what: the ``Connection`` belongs to the process that made it (its
``pid``); its lock serialises that process's threads and is never held across
a fork, because a forked child drops the inherited object unused
(``_handler.after_fork_in_child``) and opens its own on first use.  Everything
else in it (the socket, the encoder's definitions, the unit in flight, the
queue of nested records, the drop count) is read and written only by the
thread holding the lock.

Re-entrant calls.  The lock is re-entrant, and ``_busy`` is set while a thread
is inside a send.  A record logged from inside that send by the same thread
(an argument's ``__str__`` that logs, a signal handler that logs) does not
touch the socket or the encoder: it is queued (``_deferred``, at most
``_DEFERRED_LIMIT``; beyond that it is dropped and counted) and sent right after
the record being sent, before the outer logging call returns.  So a frame is
never interleaved with another, and every SITE or THREAD definition reaches
the writer before the first frame that uses it: nothing is encoded while
another encode is half-way through.

Interruptions.  An exception can leave a send at any point (KeyboardInterrupt,
or a signal handler's exception, raised while ``send()`` is blocked on a full
socket).  What is being sent is one *unit* (``_out``): a record's frames, a
DROPPED note or a control frame, with the byte counts ``send()`` returned for
it.  Those counts are appended by C code in the same call as the send
(``sent += map(sock.send, ...)``): CPython runs signal handlers only at a
call's end, a function's start or a backward jump, so a handler's exception
can come after ``send()`` but never between it and its count.  A unit begun is
finished before anything else is sent, by the next call or at exit; a record
whose frames were ready when the exception came is sent in full, and the
exception still reaches the caller.  (Over TLS, ``send()`` is Python code, so
this holds only for exceptions outside it.)
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import select
import socket
import sys
import threading
import time
from typing import IO, Any, Final

from logfunnel._core import wire as _wire
from logfunnel._core.options import ENV_TLS_CA, ENV_TOKEN, Options, field_limit
from logfunnel._core.plain import BASE_LEN

_SEND_FLAGS: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_NO_WAIT: Final = _SEND_FLAGS | getattr(socket, "MSG_DONTWAIT", 0)
_RETRY_SECONDS: Final = 1.0
#: Records logged from inside this thread's own send, kept to be sent right after it.
_DEFERRED_LIMIT: Final = 256
#: How long a process in ``on_full="block"`` mode waits at exit for the writer to take
#: what it still owes (``"drop"`` waits ``max(1 s, full_timeout)``).
_EXIT_WAIT_BLOCK: Final = 5.0
_CONNECT_TIMEOUT: Final = 5.0
_FALLBACK_FORMAT: Final = (
    "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(name)s: %(message)s"
)


def connect(address: str, timeout: float = _CONNECT_TIMEOUT) -> socket.socket:
    """Open a stream socket to a writer address (``unix:PATH`` or ``tcp:HOST:PORT``)."""
    kind, _, where = address.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = where
    elif kind in ("tcp", "tls"):
        host, _, port = where.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    else:
        msg = f"unknown logfunnel address {address!r}: expected unix:PATH, tcp: or tls:HOST:PORT"
        raise ValueError(msg)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
        if kind != "unix":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            from logfunnel._core.auth import answer_challenge  # noqa: PLC0415 - remote peers only

            if kind == "tls":
                import ssl  # noqa: PLC0415 - remote peers only

                context = ssl.create_default_context(cafile=os.environ.get(ENV_TLS_CA) or None)
                sock = context.wrap_socket(sock, server_hostname=target[0])
            answer_challenge(sock, os.environ.get(ENV_TOKEN, ""))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _send_flags(sock: socket.socket) -> int:
    """Return the flags for sendall on ``sock``: TLS sockets take none."""
    return 0 if hasattr(sock, "cipher") else _SEND_FLAGS


class Fallback:
    """Where records go while the writer cannot be reached: standard error or a file."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._formatter = logging.Formatter(_FALLBACK_FORMAT)
        self.count = 0

    def _stream(self) -> IO[str]:
        if self._path is None:
            return sys.stderr
        return open(self._path, "a", encoding="utf-8", errors="backslashreplace")

    def say(self, text: str) -> None:
        """Write one line about the funnel itself."""
        self._write(f"logfunnel: {text}\n")

    def record(self, record: logging.LogRecord) -> None:
        """Write one record that could not be sent."""
        self.count += 1
        try:
            line = self._formatter.format(record)
        except Exception:
            line = f"{record.levelname} {record.name}: {_wire.get_message(record)}"
        self._write(line + "\n")

    def _write(self, text: str) -> None:
        with contextlib.suppress(Exception):  # the last resort must not raise either
            stream = self._stream()
            try:
                stream.write(text)
                stream.flush()
            finally:
                if self._path is not None:
                    stream.close()


#: What a connection is sending (see "Interruptions" above): the unit's bytes, the
#: counts ``send()`` returned for them, the drop count a DROPPED note carries, and
#: the record the frames encode.  The rest after ``sum(counts)`` bytes goes out next.
_Unit = tuple[bytes, list[int], int, logging.LogRecord | None]
#: Nothing in flight.
_IDLE: Final[_Unit] = (b"", [], 0, None)
#: A record is being encoded: if that is interrupted, the encoder may hold
#: definitions that never went out, so the next send resets it first.
_ENCODING: Final[_Unit] = (b"", [], 0, None)


class Connection:
    """One process's connection to the writer, with its fallback and drop accounting.

    Every byte goes out through ``_push`` (or the common case's one send),
    one unit at a time; ``_drain`` orders what is owed: the unit in flight,
    the queued records, then the drop count.
    """

    def __init__(self, address: str, options: Options) -> None:
        self.address = address
        self.options = options
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.encoder = _wire.Encoder(options.frame_limit)
        self.fallback = Fallback(options.fallback)
        #: Records dropped (on_full="drop", or nested records beyond the queue's
        #: bound) that the writer has not been told of yet.
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._busy = False  # a thread holding the lock is inside a send
        self._out = _IDLE
        self._deferred: list[logging.LogRecord] = []
        self._requests = itertools.count(1)
        self._exit_report_registered = False
        self._flags = (_SEND_FLAGS,)  # (0,) on a TLS socket, which takes no flags
        self._tls = False
        self._block = options.on_full == "block"
        self._render = _renderer(options.render)
        # A rendered line longer than a record's message may be travels as a
        # record instead, so it is cut exactly as the record path cuts it.
        self._line_limit = field_limit(options.frame_limit)

    # -- the hot path -------------------------------------------------------------------

    def send_record(self, record: logging.LogRecord) -> None:
        """Send one record, or hand it to the fallback; never raises for transport reasons."""
        with self.lock:
            if self._busy:  # logged from inside this thread's own send: sent right after it
                self._defer(record)
                return
            self._busy = True
            try:
                sock = self._sock
                if self._out is _IDLE and sock is not None and self._block and not self._deferred:
                    # The common case, kept short: one encode, one send.
                    self._out = _ENCODING
                    frame = self._frames(record)
                    sent: list[int] = []
                    self._out = (frame, sent, 0, record)
                    try:
                        sent += map(sock.send, (frame,), self._flags)
                    except OSError:
                        # The writer went away (a writer process is restarted by
                        # its supervisor).  A frame not sent whole was never
                        # written: it goes again, encoded anew, on a new connection.
                        self._broken()
                        self._send_slow(None, (2,))
                        return
                    if sent[0] == len(frame):
                        self._out = _IDLE
                        if not self._deferred and not self.dropped:
                            return
                    self._send_slow(None)  # the rest of it, then what was logged meanwhile
                else:
                    self._send_slow(record)
            finally:
                self._busy = False

    def _defer(self, record: logging.LogRecord) -> None:
        """Keep a record logged from inside this thread's own send, to send right after it."""
        if len(self._deferred) < _DEFERRED_LIMIT:
            self._deferred.append(record)
        else:
            self.dropped += 1
            if not self._exit_report_registered:
                self._register_exit_report()

    def _frames(self, record: logging.LogRecord) -> bytes:
        """Return what to send for ``record``: its rendered line, or the record itself.

        With ``Options.render`` set, the writer's sinks are install()'s own,
        with a formatter this process can build too: a plain record (no
        traceback, stack or extras) is rendered here and travels as text, so
        the writer only writes it.  Anything else travels as a record, and
        the writer formats it, as always.
        """
        render = self._render
        attrs = record.__dict__
        if (
            render is not None
            and attrs.get("exc_info") is None
            and attrs.get("exc_text") is None
            and attrs.get("stack_info") is None
            # More attributes than a fresh record's: a formatter's `message` and
            # `asctime`, or extras.
            and (
                len(attrs) - ("message" in attrs) - ("asctime" in attrs) <= BASE_LEN
                or _wire.has_no_extras(record)
            )
        ):
            try:
                text = render.format(record)
            except Exception:  # the formatters degrade rather than raise; just in case
                return self.encoder.record(record)
            if len(text) <= self._line_limit:
                return self.encoder.line(text)
        return self.encoder.record(record)

    # -- the general path ---------------------------------------------------------------

    def _send_slow(
        self, record: logging.LogRecord | None, attempts: tuple[int, ...] = (1, 2)
    ) -> None:
        """Send what is owed, then ``record``; the second attempt is on a new connection."""
        if record is not None:
            self._deferred.append(record)
        deadline = None if self._block else time.monotonic() + self.options.full_timeout
        for attempt in attempts:
            sock = self._sock
            if sock is None:
                sock = self._reconnect()
                if sock is None:
                    break
            try:
                self._drain(sock, deadline, drop=not self._block)
            except OSError as exc:
                self._broken()
                if attempt == 2:
                    self._lost(exc)
            else:
                return
        self._to_fallback()

    def _drain(self, sock: socket.socket, deadline: float | None, *, drop: bool) -> bool:
        """Send the unit in flight, the queued records, then the drop count.

        Returns False if ``deadline`` passed first.  A unit partly out stays in
        flight, to be finished first next time; one not begun is taken back,
        and with ``drop`` it and the records still queued are dropped and
        counted.  Raises OSError if the connection broke.
        """
        if self._out is _ENCODING:  # an encode was interrupted: what it defined never went out
            self.encoder.reset()
            self._out = _IDLE
        deferred = self._deferred
        budget = len(deferred) + _DEFERRED_LIMIT  # a signal handler logging faster cannot hold us
        while self._push(sock, deadline):
            if deferred and budget:
                budget -= 1
                record = deferred[0]
                self._out = _ENCODING
                try:
                    frame = self._frames(record)
                except Exception:  # not the transport's to handle: the caller reports it
                    del deferred[0]
                    raise
                # Between these statements no signal handler can run (see the module doc):
                # the record is either queued or in flight, never both nor neither.
                self._out = (frame, [], 0, record)
                del deferred[0]
            elif self.dropped:
                count = self.dropped
                note = self.encoder.frame([_wire.DROPPED, count])
                self._out = (note, [], count, None)
                self.dropped -= count  # not `= 0`: a nested call may have counted one meanwhile
            else:
                return True
        _, sent, drops, held = self._out
        if not sent:  # not a byte of it went out: take it back
            if held is None:
                self.dropped += drops
                self._out = _IDLE
            elif drop:
                self.dropped += 1
                self._out = _ENCODING  # what its frames defined must be defined again
            else:
                self._out = _ENCODING
                deferred.insert(0, held)
        if drop:
            late = len(deferred)
            self.dropped += late
            del deferred[:late]
        return False

    def _push(self, sock: socket.socket, deadline: float | None) -> bool:
        """Write the rest of the unit in flight; False if ``deadline`` passed first.

        Raises OSError if the connection broke.  Any other exception (a signal
        handler's) leaves the unit's counts exact, for the next call to finish.
        """
        data, sent, _, _ = self._out
        poller = None
        while True:
            done = sum(sent)
            if done >= len(data):
                self._out = _IDLE
                return True
            rest = memoryview(data)[done:]
            if deadline is None:
                sent += map(sock.send, (rest,), self._flags)
                continue
            remaining = deadline - time.monotonic()
            if self._tls:  # TLS takes no MSG_DONTWAIT: bound each send by a timeout
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

    def _to_fallback(self) -> None:
        """Hand what is queued to the fallback: the writer cannot be reached."""
        self._requeue()
        deferred = self._deferred
        while deferred:
            self.fallback.record(deferred[0])
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
        if not (self._out[0] or self._deferred or self.dropped):
            return
        wait = _EXIT_WAIT_BLOCK if self._block else max(1.0, self.options.full_timeout)
        sock = self._sock
        if sock is not None:
            try:
                self._drain(sock, time.monotonic() + wait, drop=True)
            except OSError:
                self._broken()
        if self._sock is None:
            self._to_fallback()
        data, sent, drops, record = self._out
        if sum(sent) < len(data):  # begun and never to be finished: the writer discards it
            self.dropped += drops + (record is not None)
            self._out = _IDLE
        if self.dropped:  # the writer is still stuck: say it where it can be read
            mode = self.options.on_full
            self.fallback.say(
                f"{self.dropped} records of process {self.pid} were dropped "
                f"(on_full={mode!r}), and the writer was still behind when it exited"
            )
            self.dropped = 0

    # -- connection state ---------------------------------------------------------------

    def _reconnect(self) -> socket.socket | None:
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            sock = connect(self.address)
            flags = _send_flags(sock)
            try:
                hello = self.encoder.frame(_wire.hello_fields(self.pid, _process_name()))
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
        self._requeue()  # a unit cut on the old connection goes again whole on this one
        self._sock = sock
        self._flags = (flags,)
        self._tls = hasattr(sock, "cipher")
        self.encoder.reset()  # a new connection knows no sites or threads yet
        if not self._exit_report_registered:
            self._register_exit_report()
        return sock

    def _requeue(self) -> None:
        """Queue again what the unit in flight carried: the stream it was on has ended.

        A unit not sent whole was discarded by the writer (a cut frame), so
        its record goes again, first, and a DROPPED note's count is owed again.
        """
        data, sent, drops, record = self._out
        cut = sum(sent) < len(data)
        self._out = _IDLE
        if cut:
            self.dropped += drops
            if record is not None:
                self._deferred.insert(0, record)

    def _broken(self) -> None:
        """Close a connection that failed, and queue again what was in flight."""
        self.close()
        self._requeue()

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
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    forget = close  # the name _handler.after_fork_in_child still calls

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
            if not self._drain(sock, deadline, drop=False):
                return False
            self._out = (self.encoder.frame([_wire.FLUSH, request]), [], 0, None)
            if not self._push(sock, deadline):
                if not self._out[1]:
                    self._out = _IDLE
                return False
            answered = read_reply(sock, _wire.FLUSHED, request, deadline) is not None
            if self._deferred:  # logged while we waited (a signal handler)
                self._drain(sock, deadline, drop=False)
        except OSError as exc:
            self._lost(exc)
            return False
        return answered


def _renderer(spec: Any) -> logging.Formatter | None:
    """Build the formatter ``Options.render`` names, or None if there is none (or it is odd)."""
    if not isinstance(spec, dict):
        return None
    from logfunnel._core import formatters as _formatters  # noqa: PLC0415 - only processes that render lines

    try:
        if spec.get("json") is True:
            return _formatters.JsonFormatter()
        fmt, datefmt = spec.get("fmt"), spec.get("datefmt")
        if isinstance(fmt, str) and (datefmt is None or isinstance(datefmt, str)):
            return _formatters.LineFormatter(fmt, datefmt)
    except ValueError:
        pass
    return None


def read_reply(
    sock: socket.socket, kind: int, request: int | None, deadline: float
) -> list[Any] | None:
    """Read frames until ``[kind, request, ...]`` arrives; None if the deadline passes first.

    With ``request=None`` any frame of that kind answers.
    """
    reader = _wire.FrameReader()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            for fields in reader.feed(data):
                if fields[0] == kind and (request is None or fields[1:2] == [request]):
                    return list(fields)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)


def _process_name() -> str:
    mp = sys.modules.get("multiprocessing")
    if mp is not None:
        with contextlib.suppress(Exception):
            return str(mp.current_process().name)
    return "MainProcess"
