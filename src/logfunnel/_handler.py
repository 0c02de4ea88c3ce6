"""The source side: ``FunnelHandler`` and the one connection each process keeps to the writer.

Every process attached to a funnel owns exactly one ``Connection``: a stream
socket of its own to the writer.  Nothing is shared with another process, so a
process that dies (even by SIGKILL mid-record) can at worst cut its own last
frame, which the writer discards.  A record is written to the socket before the
logging call returns: once ``emit`` returns, the bytes are in the kernel, and
they reach the writer even if this process is killed the next instant.

Inside a process the connection's lock serialises threads, and is never held
across a fork: the child drops the inherited ``Connection`` (see ``_fork``) and
opens its own on first use, so a lock held by a parent's thread at fork time is
simply never touched again.
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

from logfunnel import _wire
from logfunnel._options import ENV_TLS_CA, ENV_TOKEN, Options

_SEND_FLAGS: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_RETRY_SECONDS: Final = 1.0
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
            from logfunnel._auth import answer_challenge  # noqa: PLC0415 - remote peers only

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


class Connection:
    """One process's connection to the writer, with its fallback and drop accounting."""

    def __init__(self, address: str, options: Options) -> None:
        self.address = address
        self.options = options
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.encoder = _wire.Encoder(options.frame_limit)
        self.fallback = Fallback(options.fallback)
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._pending = b""  # the rest of a frame a bounded send had to leave
        self._requests = itertools.count(1)
        self._exit_report_registered = False
        self._flags = _SEND_FLAGS  # 0 on a TLS socket (see _send_flags)
        self._block = options.on_full == "block"
        self._render = _renderer(options.render)
        # A rendered line longer than a record's message may be travels as a
        # record instead, so it is cut exactly as the record path cuts it.
        self._line_limit = max(256, options.frame_limit // 16)

    # -- the hot path -------------------------------------------------------------------

    def send_record(self, record: logging.LogRecord) -> None:
        """Send one record, or hand it to the fallback; never raises for transport reasons."""
        with self.lock:
            sock = self._sock
            if sock is not None and self._block and not self._pending and not self.dropped:
                # The common case, kept short: one encode, one sendall.
                try:
                    sock.sendall(self._frames(record), self._flags)
                except OSError:
                    # The writer went away (a writer process is restarted by
                    # its supervisor).  A frame whose sendall failed never
                    # reached it whole, so it was not written: encoding and
                    # sending it again on a new connection cannot duplicate it.
                    self.close()
                    attempts: tuple[int, ...] = (2,)  # that was the first
                else:
                    return
            else:
                attempts = (1, 2)
            if not self._send(record, attempts):
                if self._sock is None:
                    self.fallback.record(record)
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
                len(attrs) - ("message" in attrs) - ("asctime" in attrs) <= _BASE_LEN
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

    def _send(self, record: logging.LogRecord, attempts: tuple[int, ...]) -> bool:
        """Encode and write a record; return False if it went nowhere (writer gone, or dropped).

        The second attempt is on a new connection, and the last.
        """
        for attempt in attempts:
            sock = self._sock
            if sock is None:
                sock = self._reconnect()
                if sock is None:
                    return False
            # Encoded per attempt: a new connection starts with no sites or
            # threads defined, so the frames differ.
            frame = self._frames(record)
            try:
                if self._block and not self._pending:
                    if self.dropped:
                        self._report_dropped(sock)
                    sock.sendall(frame, self._flags)
                    return True
                sent = self._send_bounded(sock, frame)
            except OSError as exc:
                self.close()
                self._pending = b""
                if attempt == 2:
                    self._lost(exc)
            else:
                if not sent:
                    # Not a byte of it went out: the sites or threads it
                    # defined must be defined again with the next record.
                    self.encoder.reset()
                return sent
        return False

    def _send_bounded(self, sock: socket.socket, frame: bytes) -> bool:
        """Send within ``full_timeout``; a frame begun is always finished before another."""
        deadline = time.monotonic() + self.options.full_timeout
        if self._pending:
            self._pending = self._write_until(sock, self._pending, deadline)
            if self._pending:
                return False
        if self.dropped:
            note = self.encoder.frame([_wire.DROPPED, self.dropped])
            rest = self._write_until(sock, note, deadline)
            if len(rest) == len(note):
                return False
            self.dropped = 0
            self._pending = rest
            if rest:
                return False
        rest = self._write_until(sock, frame, deadline)
        if len(rest) == len(frame):
            return False
        self._pending = rest  # part of it is out: it must be finished, so it counts as sent
        return True

    @staticmethod
    def _write_until(sock: socket.socket, data: bytes, deadline: float) -> bytes:
        view = memoryview(data)
        if hasattr(sock, "cipher"):  # TLS takes no MSG_DONTWAIT: bound each send by a timeout
            try:
                while view:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    sock.settimeout(remaining)
                    try:
                        view = view[sock.send(view) :]
                    except TimeoutError:
                        break
            finally:
                sock.settimeout(None)
            return bytes(view)
        poller = None
        while view:
            try:
                sent = sock.send(view, _SEND_FLAGS | socket.MSG_DONTWAIT)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if poller is None:
                    poller = select.poll()
                    poller.register(sock, select.POLLOUT)
                poller.poll(remaining * 1000)
                continue
            view = view[sent:]
        return bytes(view)

    def _register_exit_report(self) -> None:
        """Make sure drops are reported even if this process never logs again."""
        self._exit_report_registered = True
        atexit.register(self.report_drops)
        # Pool workers leave through os._exit(): atexit never runs there, so
        # report from multiprocessing.util.Finalize, which Process._bootstrap runs.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(None, self.report_drops, exitpriority=100)

    def report_drops(self) -> None:
        """Send the count of dropped records now, waiting at most ``max(1 s, full_timeout)``."""
        if self.pid != os.getpid() or not self.lock.acquire(timeout=1.0):
            return
        try:
            sock = self._sock
            if sock is None or not self.dropped:
                return
            deadline = time.monotonic() + max(1.0, self.options.full_timeout)
            try:
                if self._pending:
                    self._pending = self._write_until(sock, self._pending, deadline)
                if not self._pending:
                    note = self.encoder.frame([_wire.DROPPED, self.dropped])
                    rest = self._write_until(sock, note, deadline)
                    if len(rest) < len(note):
                        self.dropped = 0
                        self._pending = self._write_until(sock, rest, deadline + 1.0)
            except OSError:
                pass
            if self.dropped:  # the writer is still stuck: say it where it can be read
                self.fallback.say(
                    f"{self.dropped} records of process {self.pid} were dropped "
                    f"(on_full='drop'), and the writer was still behind when it exited"
                )
                self.dropped = 0
        finally:
            self.lock.release()

    def _report_dropped(self, sock: socket.socket) -> None:
        sock.sendall(self.encoder.frame([_wire.DROPPED, self.dropped]), self._flags)
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
        self._sock = sock
        self._flags = flags
        self.encoder.reset()  # a new connection knows no sites or threads yet
        return sock

    def _lost(self, exc: OSError) -> None:
        self.close()
        self._pending = b""
        self._retry_at = time.monotonic() + _RETRY_SECONDS
        self._down_since = time.monotonic()
        self.fallback.say(
            f"lost the log writer at {self.address} ({type(exc).__name__}: {exc}); records of "
            f"process {self.pid} go to {self.options.fallback or 'stderr'} until it is back"
        )

    def close(self) -> None:
        """Close the socket (the writer sees EOF after reading everything sent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def forget(self) -> None:
        """Drop an inherited socket in a forked child without touching the parent's stream."""
        sock, self._sock = self._sock, None
        if sock is not None:
            # close() only releases this process's descriptor: the parent's
            # connection and any frame it is half-way through stay intact.
            with contextlib.suppress(OSError):
                sock.close()

    def flush(self, timeout: float) -> bool:
        """Ask the writer to write everything received so far, and wait for its answer."""
        deadline = time.monotonic() + timeout
        if not self.lock.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            sock = self._sock or self._reconnect()
            if sock is None:
                return False
            request = next(self._requests)
            try:
                if self._pending:
                    sock.sendall(self._pending, self._flags)
                    self._pending = b""
                sock.sendall(self.encoder.frame([_wire.FLUSH, request]), self._flags)
                return read_reply(sock, _wire.FLUSHED, request, deadline) is not None
            except OSError as exc:
                self._lost(exc)
                return False
        finally:
            self.lock.release()


# Attributes every LogRecord has: more in __dict__ may mean `extra=` (or a formatter's
# `message` and `asctime`).
_BASE_LEN: Final = len(logging.makeLogRecord({}).__dict__)


def _renderer(spec: Any) -> logging.Formatter | None:
    """Build the formatter ``Options.render`` names, or None if there is none (or it is odd)."""
    if not isinstance(spec, dict):
        return None
    from logfunnel import _formatters  # noqa: PLC0415 - only processes that render lines

    try:
        if spec.get("json") is True:
            return _formatters.JsonFormatter()
        fmt, datefmt = spec.get("fmt"), spec.get("datefmt")
        if isinstance(fmt, str) and (datefmt is None or isinstance(datefmt, str)):
            return _formatters.LineFormatter(fmt, datefmt)
    except ValueError:
        pass
    return None


def request_levels(connection: Connection, timeout: float) -> dict[str, Any] | None:
    """Ask the writer for the installing process's current levels."""
    deadline = time.monotonic() + timeout
    with connection.lock:
        sock = connection._sock or connection._reconnect()
        if sock is None:
            return None
        request = next(connection._requests)
        try:
            sock.sendall(connection.encoder.frame([_wire.LEVELS, request]), _send_flags(sock))
            reply = read_reply(sock, _wire.LEVELS, request, deadline)
        except OSError:
            return None
    if reply is None or len(reply) != 3 or not isinstance(reply[2], dict):
        return None
    return reply[2]


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


# -- the process-wide attachment ---------------------------------------------------------

_address: str | None = None
_options = Options()
_connection: Connection | None = None
_attach_lock = threading.Lock()


def attach(address: str, options: Options) -> None:
    """Make ``address`` the funnel this process's FunnelHandlers send to."""
    global _address, _options, _connection
    with _attach_lock:
        if _connection is not None:
            _connection.close()
        _address, _options, _connection = address, options, None


def detach() -> None:
    """Forget the funnel: FunnelHandlers write to the fallback from now on."""
    global _address, _connection
    with _attach_lock:
        if _connection is not None:
            _connection.close()
        _address, _connection = None, None


def attached_address() -> str | None:
    """Return the address this process sends to, if any."""
    return _address


def after_fork_in_child() -> None:
    """Drop the parent's connection: this process opens its own on first use."""
    global _connection, _attach_lock  # noqa: PLW0603
    # A parent's thread may have held _attach_lock at the instant of fork().
    _attach_lock = threading.Lock()
    if _connection is not None:
        _connection.forget()
        _connection = None


def current_connection() -> Connection | None:
    """Return this process's connection to its funnel, creating it on first use."""
    global _connection  # noqa: PLW0603
    connection = _connection
    if connection is not None:
        return connection
    with _attach_lock:
        if _connection is None and _address is not None:
            _connection = Connection(_address, _options)
        return _connection


_no_funnel_fallback = Fallback(None)
_last_sent = threading.local()


class FunnelHandler(logging.Handler):
    """Send records to the funnel this process is attached to.

    ``install()`` and the start-up hook put these on loggers for you; adding one
    by hand is only needed in processes that attach in an unusual way.  With no
    funnel attached, records go to standard error.

    A record is sent at most once per process however many FunnelHandlers it
    meets on its way up the logger hierarchy (the fork sanitizer puts one on
    every logger that had handlers): the writer then walks the installing
    process's hierarchy for it.

    ``stand_in_for`` is set on the handlers the fork sanitizer and the start-up
    hook put in place: they stand in for configuration the process inherited.
    Once the process adds a handler of its own to that logger (a pool
    initializer that configures logging, as the article's second program
    does), its own configuration wins and the stand-in stays silent, so a
    record is not written twice.
    """

    def __init__(
        self, level: int | str = logging.NOTSET, *, stand_in_for: logging.Logger | None = None
    ) -> None:
        """Create a handler sending to this process's funnel."""
        super().__init__(level)
        self.stand_in_for = stand_in_for

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and send ``record``; the connection's own lock serialises threads.

        Unlike ``Handler.handle`` this does not take the handler lock: the only
        shared state is the connection, which has a lock of its own.
        """
        rv = self.filter(record) if self.filters else True
        if rv:
            if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = rv
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        """Encode ``record`` and write it to the writer before returning."""
        try:
            stand_in_for = self.stand_in_for
            if stand_in_for is not None and len(stand_in_for.handlers) > 1:
                return  # the process configured this logger itself (see class doc)
            if getattr(_last_sent, "record", None) is record:
                return
            _last_sent.record = record
            connection = _connection or current_connection()
            if connection is None:
                _no_funnel_fallback.record(record)
            else:
                connection.send_record(record)
        except RecursionError:  # as logging.Handler does: a loop is a bug to surface
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Do nothing: records are in the kernel once emit returns (``Funnel.flush`` waits)."""

    def __repr__(self) -> str:
        """Show the level and the address this handler sends to."""
        level = logging.getLevelName(self.level)
        return f"<FunnelHandler {_address or '(no funnel attached)'} ({level})>"
