"""The writer: one loop that owns every sink (its two hosts are in ``_hosts``).

Data flow::

    process A (any start method)     process B ...          installing process
      logger.info(...)                                         Funnel.flush()/shutdown()
        -> FunnelHandler.emit                                        |
        -> Encoder.record (_wire), or the rendered line              | control channel
        -> sendall on A's own socket   B's own socket               | (socketpair)
                 |                           |                       |
                 v                           v                       v
      +----------------------------- Writer.run (one thread) -----------------------+
      | selector: listening sockets | one socket per process | control channel      |
      | recv -> FrameReader (length prefix, size limit), per connection:            |
      |   SITE/THREAD -> that peer's Tables                                         |
      |   RECORD -> decode_record -> the sinks: Writer(sinks=...) when given,       |
      |             else the logger tree's handlers, as Logger.handle would         |
      |   LINE (a writer process with install()'s own sinks) -> _sinks.write_line   |
      | after a quick busy turn: wait out the rest of _NAP, then select again       |
      | timers in the select timeout: challenge expiry, accept retries, summaries   |
      +-----------------------------------------------------------------------------+

Who owns what:

* Each source process owns its connection (``_handler.Connection``).  No lock,
  queue or socket is shared between processes.
* The writer thread owns the listening sockets, every accepted socket, the
  control channel's far end and every ``_Peer`` buffer.  Only it reads them.
* The sinks: with ``Writer(sinks=[...])`` exactly those handlers, on no
  logger (a process host builds them from ``install()``'s options with
  ``_sinks.build_handlers``).  Without, "adopt mode": the handlers of the
  hosting process's logger tree, found from a record's name without creating
  a logger (see ``_dispatch``).  In the thread host that tree is the
  installing program's own: its threads keep calling those handlers directly,
  the writer thread calls them for records from other processes, and each
  handler's own lock orders the two.  A process host with ``config=`` builds
  its tree with ``dictConfig`` and only the writer thread touches it.
* The writer changes one thing on a handler it calls: ``handleError``, on the
  instance (``_SinkWatch``); it puts the original back when its loop ends and
  in a forked child.

Where a record could be lost, and what happens instead:

* A process killed mid-``sendall`` leaves a cut frame: its peer ends at EOF
  with bytes in its ``FrameReader``; they are discarded, counted in
  ``Stats.cut_frames`` and reported as a WARNING record.  That record's
  logging call never returned, so no returned call loses its record.
* A frame over the size limit, or one that does not decode, ends that peer's
  connection (its stream can no longer be trusted); counted and reported.
* A handler that raises: ``Handler.handleError`` reports it as logging always
  does, and anything escaping a filter is caught here; the loop goes on.
* A sink that cannot write (a full disk): reported once on stderr, its
  records counted (``Stats.unwritten``; ``_sinks.LineFile`` counts whole
  records a failed batch cost), and "resumed after N failed records" written
  once it writes again.
* ``accept()`` failing for want of descriptors or memory: the listener is
  left out of ``select`` for a pause growing from 10 ms to 1 s, reported once
  and once more when accepting works again; connections already accepted are
  served meanwhile, and new ones wait in the listen backlog.
* ``Funnel.flush``: the barrier reads, from every connection, at least the
  bytes that were queued in the kernel when the request was processed
  (``FIONREAD``), after accepting every pending connection (a listener paused
  after ``accept()`` failed is left alone).  A record whose
  logging call returned before ``flush()`` was called had all its bytes queued
  by then, so it is written before the barrier answers.  What a barrier costs
  does not grow with the logger names peers send: the writer creates no
  logger, and flushes its sinks, the handlers it called and those of the
  host's own tree.

What a peer can make the writer keep or write is bounded: no logger per
record name (a bounded cache of names resolved, ``_NAME_CACHE_SIZE``), the
tables of sites and threads (``_wire.Tables``), and for refused TCP
connections one line, then at most one summary a minute (``_REPORT_INTERVAL``).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import selectors
import socket
import sys
import termios
import threading
import time
from typing import Any, Final

from logfunnel import _auth, _formatters, _sinks, _wire

_RECV_SIZE: Final = 256 * 1024
_CONTROL: Final = "control"
_LISTENER: Final = "listener"
_TCP_LISTENER: Final = "tcp listener"
# Reads of one connection in the final drain before it is cut off (64 GiB).
_MAX_DRAIN_READS: Final = 2**18
# A DROPPED count above this is not a real count: refused as a bad frame.
_MAX_DROPPED: Final = 2**40
_OWN_LOGGER: Final = "logfunnel"
# A turn of the loop that read at least _BUSY_BYTES and took less than _NAP
# waits out the rest of _NAP before it looks again.  Meanwhile the processes'
# records gather in their socket buffers (~278 records of 117 bytes each), their
# sends wake no one, and the next turn takes them in a few large reads instead
# of many small ones.  A writer that is behind (a turn longer than _NAP) never
# waits.  Measured with a process host, 2 workers on 2 cores: the writer's CPU per
# record 6.5-7.7 -> 3.2-3.3 µs, records/s 94-103k -> 126-133k.  A logging call
# still returns once its record is in the kernel; a barrier waits one nap more.
_BUSY_BYTES: Final = 4096
_NAP: Final = 0.001
# accept() failing with these leaves the connection in the backlog, so the
# listener stays readable: selecting it again at once would spin.  The writer
# stops selecting it for a pause that doubles from _ACCEPT_PAUSE_MIN to
# _ACCEPT_PAUSE_MAX, and accepts again when a timer in select's timeout ends.
_ACCEPT_PAUSE_MIN: Final = 0.010
_ACCEPT_PAUSE_MAX: Final = 1.0
# accept() errors about one connection only (it is gone from the backlog):
# Linux's accept(2) says to treat these as EAGAIN and accept the next one.
_ONE_CONNECTION_ERRORS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)
# Events anyone may cause (a TCP connection that does not prove the token, an
# accept that fails) are written into the sinks at most once per interval, the
# rest counted and summarised, so they cannot fill the user's log.
_REPORT_INTERVAL: Final = 60.0
# Record names resolved to the logger whose handlers get them (_dispatch).
_NAME_CACHE_SIZE: Final = 4096


@dataclasses.dataclass
class Stats:
    """What a writer has seen since it started."""

    #: The process the writer loop runs in (a writer process's pid changes on restart).
    pid: int = dataclasses.field(default_factory=os.getpid)
    records: int = 0
    #: Of ``records``, those that arrived rendered (LINE frames).
    lines: int = 0
    processes: int = 0
    connections_open: int = 0
    cut_frames: int = 0
    bad_frames: int = 0
    dropped_reported: int = 0
    handler_errors: int = 0
    #: TCP connections refused: wrong token, or no answer in time.
    refused: int = 0
    #: accept() calls that failed for want of descriptors or memory (EMFILE, ENFILE, ...).
    accept_failures: int = 0
    #: Records a sink failed to write (a full disk), summed over the sinks.
    unwritten: int = 0


class _Peer:
    """One connected process, as the writer sees it."""

    __slots__ = (
        "answer",
        "deadline",
        "fd",
        "handshaking",
        "name",
        "nonce",
        "pid",
        "reader",
        "sock",
        "tables",
        "tls",
        "where",
    )

    def __init__(self, sock: socket.socket, frame_limit: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()  # kept: fileno() is -1 once the socket is closed
        self.reader = _wire.FrameReader(frame_limit)
        self.tables = _wire.Tables()  # the sites and threads this peer defined
        self.pid: int | None = None
        self.name = "?"
        #: A TCP peer's challenge; None once it has answered it (or on Unix sockets).
        self.nonce: bytes | None = None
        self.answer = b""
        self.deadline = 0.0
        #: TLS: the socket is an SSLSocket; its handshake may still be under way.
        self.tls = False
        self.handshaking = False
        #: A TCP peer's ``host:port``, taken at accept (getpeername fails once it reset).
        self.where = "?"

    def describe(self) -> str:
        """Name the process for a report line."""
        return f"process {self.pid if self.pid is not None else '?'} ({self.name})"


class _Pause:
    """A listener left out of ``select`` after ``accept()`` failed (EMFILE and the like)."""

    __slots__ = ("delay", "failures", "reported", "since", "until")

    def __init__(self, now: float, *, reported: bool) -> None:
        self.since = now
        self.failures = 1
        self.delay = _ACCEPT_PAUSE_MIN
        self.until = now + self.delay
        #: Whether the start of this episode was written (then its end is too).
        self.reported = reported


def _would_block(exc: OSError) -> bool:
    """Return True for "try again later" from a plain or a TLS socket."""
    if isinstance(exc, (BlockingIOError, InterruptedError)):
        return True
    # ssl.SSLWantReadError / SSLWantWriteError, without importing ssl for everyone.
    return type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError")


def _queued_bytes(sock: socket.socket) -> int:
    """Return how many received bytes wait in the kernel for ``sock`` (FIONREAD)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
    except OSError:
        return 0
    return buf[0]


def _where(address: Any) -> str:
    """Return ``host:port`` of a TCP peer's address (as ``accept()`` gives it), or ``?``."""
    try:
        host, port = address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


_MISSING: Final = object()


class _SinkWatch:
    """Report a handler's write errors once per episode instead of once per record.

    ``logging.Handler.handleError`` prints a whole traceback for every record a
    sink fails to write: a full disk under a busy funnel floods stderr.  The
    writer replaces the handler's ``handleError`` (on that instance only)
    with this: the first failure is reported in one line, the others are
    counted, and the writer logs "resumed after N failed records" once the
    handler writes again.  ``restore()`` puts the handler's own back.

    A failed flush of ``_sinks.FileSink`` or ``RotatingFileSink`` costs the
    whole batch it held; it comes here once with a ``_sinks.LinesLostError`` that
    says how many records that was.  Those sinks count the records that reach
    the file (``landed``), so "writes again" means: records landed since the
    last failure, checked after the writer flushed them, not when a record was
    only handed over.
    """

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.failed = 0  # in this episode
        self.total = 0  # since the writer started
        #: ``handler.landed`` at the last failure (file sinks); None: other handlers.
        self.mark: int | None = None
        self.counts_landed = isinstance(handler, (_sinks.FileSink, _sinks.RotatingFileSink))
        self._original = vars(handler).get("handleError", _MISSING)
        handler.handleError = self  # type: ignore[method-assign]

    def __call__(self, record: logging.LogRecord) -> None:  # noqa: ARG002 - handleError's
        exc = sys.exc_info()[1]
        count = exc.records if isinstance(exc, _sinks.LinesLostError) else 1
        self.failed += count
        self.total += count
        if self.counts_landed:
            self.mark = getattr(self.handler, "landed", 0)
        if self.failed == count and logging.raiseExceptions:  # the first of this episode
            if isinstance(exc, _sinks.LinesLostError) and exc.__cause__ is not None:
                exc = exc.__cause__  # the OSError the file system gave
            print(
                f"logfunnel: {self.handler!r} cannot write ({type(exc).__name__}: {exc}); its "
                f"records are counted, not written, until it can again",
                file=sys.stderr,
            )

    def resumed(self) -> int:
        """Return the failures of an episode that just ended (a file sink wrote again), or 0."""
        if not self.failed or not self.counts_landed:
            return 0
        handler = self.handler
        handler.acquire()  # the installing program's threads may be writing through it
        try:
            if getattr(handler, "landed", 0) <= (self.mark or 0):
                return 0
            failed, self.failed = self.failed, 0
        finally:
            handler.release()
        return failed

    def restore(self) -> None:
        """Give the handler its own ``handleError`` back (unless someone replaced ours since)."""
        if vars(self.handler).get("handleError") is not self:
            return
        if self._original is _MISSING:
            del self.handler.handleError
        else:
            self.handler.handleError = self._original


class Writer:
    """The loop: multiplex every connection, decode, and hand records to the sinks."""

    def __init__(
        self,
        listener: socket.socket,
        control: socket.socket,
        frame_limit: int = _wire.DEFAULT_FRAME_LIMIT,
        *,
        tcp_listener: socket.socket | None = None,
        token: str | None = None,
        tls: Any = None,
        sinks: list[logging.Handler] | None = None,
    ) -> None:
        """Serve ``listener`` (and ``tcp_listener``); ``sinks``: the handlers records go to.

        Without ``sinks`` every record goes to the handlers of this process's
        logger tree, as if it had been logged here ("adopt mode").
        """
        self._tcp_listener = tcp_listener
        self._tls = tls  # an ssl.SSLContext for the TCP listener, or None
        self._token = token or ""
        self._listener = listener
        self._control = control
        self._frame_limit = frame_limit
        self._encoder = _wire.Encoder(frame_limit)
        self._control_reader = _wire.FrameReader(frame_limit)
        self._selector = selectors.DefaultSelector()
        self._peers: dict[int, _Peer] = {}
        #: The handlers every record goes to; None: the logger tree's (adopt mode).
        self._sinks = list(sinks) if sinks is not None else None
        #: Adopt mode: record names with no logger of their own -> the logger a
        #: logger of that name would have as parent (see _logger_for).
        self._names: dict[str, logging.Logger] = {}
        self._names_of: tuple[object, int] = (None, -1)  # the loggerDict they are valid for
        self._watches: dict[int, _SinkWatch] = {}
        #: Sinks that leave flushing to this loop (see _sinks.FileSink); set by run().
        self._batched: list[logging.Handler] = []
        #: A writer process with install()'s own sinks sets this: its peers may
        #: then send LINE frames, lines rendered with the sinks' formatter.
        self.lines_allowed = False
        #: The handlers a LINE is written to; set by run(), None: LINEs refused.
        self._line_sinks: list[logging.Handler] | None = None
        self._running = False
        self._read_bytes = 0  # in this turn of the loop
        self._in_barrier = False
        self._late_flushes: list[tuple[socket.socket, int]] = []
        #: Listeners left out of select() after accept() failed, by selector tag.
        self._paused: dict[str, _Pause] = {}
        self._accept_reported: dict[str, float] = {}  # when an episode was last written
        self._accept_unreported: dict[str, int] = {}  # episodes not written since
        self._refusals_unreported = 0
        self._refusal_last = ""
        self._refusal_reported_at = -_REPORT_INTERVAL
        #: Loggers looked at and handlers flushed by the last barrier (tests read it).
        self.barrier_work = 0
        self.stats = Stats()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Serve until the owner asks to shut down or closes the control channel."""
        self._listener.setblocking(False)
        self._control.setblocking(True)
        self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(self._control, selectors.EVENT_READ, _CONTROL)
        if self._tcp_listener is not None:
            self._tcp_listener.setblocking(False)
            self._selector.register(self._tcp_listener, selectors.EVENT_READ, _TCP_LISTENER)
        sinks = self._sinks if self._sinks is not None else logging.getLogger().handlers
        # The file sinks install() built leave flushing to this loop when it
        # writes through them: one write(2) per batch instead of per record.
        self._batched = [
            h for h in sinks if isinstance(h, (_sinks.FileSink, _sinks.RotatingFileSink))
        ]
        for handler in self._batched:
            handler.batch_thread = threading.get_ident()  # type: ignore[attr-defined]
        for handler in self._sinks or ():
            # Watched from the start: the installing program's threads may
            # write through them before this loop does (a thread host).
            self._watch(handler)
        self._line_sinks = self._find_line_sinks()
        self._running = True
        try:
            while self._running:
                events = self._selector.select(self._timeout())
                turn_started = time.monotonic()
                for key, _ in events:
                    if key.data is _LISTENER or key.data is _TCP_LISTENER:
                        self._accept_all(key.data)
                    elif key.data is _CONTROL:
                        self._serve_control()
                    else:
                        peer: _Peer = key.data
                        # A barrier run for an earlier event of this batch may
                        # have closed this peer already: skip its stale event.
                        if self._peers.get(peer.fd) is peer:
                            self._read(peer)
                if self._running:
                    self._timers()
                if self._batched:
                    self._flush_batched()
                if self._read_bytes >= _BUSY_BYTES:
                    spare = _NAP - (time.monotonic() - turn_started)
                    if spare > 0:
                        time.sleep(spare)
                self._read_bytes = 0
        finally:
            self._close_everything()

    def _find_line_sinks(self) -> list[logging.Handler] | None:
        """Return the handlers LINE frames may be written to, or None: refuse LINEs.

        Only when every sink is one whose formatter the senders were told of
        (``_sinks.LINE_SINKS``) and nothing filters or drops a record here.
        """
        if not self.lines_allowed:
            return None
        if self._sinks is not None:
            candidates, filtered = self._sinks, False
        else:
            root = logging.getLogger()
            candidates, filtered = root.handlers, bool(root.filters)
        if (
            candidates
            and not filtered
            and all(
                isinstance(h, _sinks.LINE_SINKS) and not h.filters and h.level == logging.NOTSET
                for h in candidates
            )
        ):
            return list(candidates)
        return None

    def _timeout(self) -> float | None:
        """Return how long select() may wait: until the next timer is due, or forever."""
        timeout: float | None = 1.0 if self._challenged else None
        due: list[float] = [pause.until for pause in self._paused.values()]
        if self._refusals_unreported:
            due.append(self._refusal_reported_at + _REPORT_INTERVAL)
        if due:
            wait = max(0.0, min(due) - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    def _timers(self) -> None:
        if self._challenged:
            self._expire_challenges()
        now = time.monotonic()
        for tag, pause in list(self._paused.items()):
            if now >= pause.until:
                self._accept_all(tag, retry=True)
        if self._refusals_unreported and now >= self._refusal_reported_at + _REPORT_INTERVAL:
            self._report_refusals()

    # -- accepting ----------------------------------------------------------------------

    def _listener_of(self, tag: str) -> socket.socket | None:
        return self._listener if tag is _LISTENER else self._tcp_listener

    def _accept_all(
        self, tag: str = _LISTENER, *, retry: bool = False, force: bool = False
    ) -> None:
        """Accept every pending connection of a listener.

        A paused listener (see ``_accept_failed``) is only tried again when its
        timer ends (``retry``), or in the final drain (``force``).
        """
        listener = self._listener_of(tag)
        if listener is None or listener.fileno() == -1:  # closed by the final drain
            return
        pause = self._paused.get(tag)
        if pause is not None and not (retry or force):
            return
        remote = tag is _TCP_LISTENER
        accepted = 0
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION_ERRORS:
                    continue  # that connection is gone; the next one may be fine
                self._accept_failed(tag, listener, exc, accepted, force=force)
                return
            accepted += 1
            sock.setblocking(False)
            if remote and self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except OSError:
                    sock.close()
                    continue
            peer = _Peer(sock, self._frame_limit)
            if remote:
                peer.where = _where(address)
                if not self._challenge(peer):
                    continue
            self._peers[peer.fd] = peer
            self._selector.register(sock, selectors.EVENT_READ, peer)
            self.stats.processes += 1
            self.stats.connections_open += 1
        if pause is not None:  # the backlog is empty and nothing failed: it works again
            self._accept_recovered(tag, listener, pause)

    def _describe_listener(self, tag: str, listener: socket.socket) -> str:
        if tag is _LISTENER:
            return "the Unix socket"
        try:
            host, port = listener.getsockname()[:2]
        except OSError:
            return "the TCP listener"
        return f"the TCP listener {host}:{port}"

    def _accept_failed(
        self,
        tag: str,
        listener: socket.socket,
        exc: OSError,
        accepted: int,
        *,
        force: bool,
    ) -> None:
        """Pause a listener whose accept() failed (EMFILE, ENFILE, ENOBUFS, ENOMEM ...).

        The connection stays in the backlog, so the listener stays readable:
        selecting it again at once would spin and report in a loop.  It is left
        out of select() for a pause that doubles up to ``_ACCEPT_PAUSE_MAX``
        (back to the shortest when some connections were accepted meanwhile),
        reported once per episode (and at most once per ``_REPORT_INTERVAL``),
        and tried again when ``_timers`` finds the pause over.
        """
        self.stats.accept_failures += 1
        now = time.monotonic()
        pause = self._paused.get(tag)
        if pause is not None:
            pause.failures += 1
            pause.delay = _ACCEPT_PAUSE_MIN if accepted else min(pause.delay * 2, _ACCEPT_PAUSE_MAX)
            pause.until = now + pause.delay
            return
        if force:  # the final drain: it stops accepting anyway
            return
        report = now - self._accept_reported.get(tag, -_REPORT_INTERVAL) >= _REPORT_INTERVAL
        self._paused[tag] = _Pause(now, reported=report)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(listener)
        if not report:
            self._accept_unreported[tag] = self._accept_unreported.get(tag, 0) + 1
            return
        self._accept_reported[tag] = now
        earlier = self._accept_unreported.pop(tag, 0)
        note = f" ({earlier} more such episodes since the last report)" if earlier else ""
        self._report(
            logging.WARNING,
            f"cannot accept connections on {self._describe_listener(tag, listener)}: {exc}; "
            f"serving the {len(self._peers)} it has, new ones wait in the backlog; trying "
            f"again after a pause growing to {_ACCEPT_PAUSE_MAX:.0f} s{note}",
        )

    def _accept_recovered(self, tag: str, listener: socket.socket, pause: _Pause) -> None:
        del self._paused[tag]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.register(listener, selectors.EVENT_READ, tag)
        if pause.reported:
            self._report(
                logging.WARNING,
                f"accepting connections on {self._describe_listener(tag, listener)} again, "
                f"after {pause.failures} failed attempts in "
                f"{time.monotonic() - pause.since:.1f} s",
            )

    # -- remote peers: the challenge (see _auth) -----------------------------------------

    @property
    def _challenged(self) -> bool:
        return any(peer.nonce is not None for peer in self._peers.values())

    def _challenge(self, peer: _Peer) -> bool:
        """Send a new TCP peer its nonce; False if it could not even be sent.

        Over TLS the nonce goes once the handshake is done (see ``_handshake``);
        the handshake and the answer share one deadline.
        """
        peer.nonce = _auth.new_nonce()
        peer.deadline = time.monotonic() + _auth.ANSWER_TIMEOUT
        if hasattr(peer.sock, "do_handshake"):
            peer.tls = peer.handshaking = True
        else:
            try:
                peer.sock.send(peer.nonce)  # 32 bytes into an empty buffer: never partial
            except OSError:
                peer.sock.close()
                self._refused(peer.where, "gone before its challenge could be sent")
                return False
        with contextlib.suppress(OSError):
            peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True

    def _check_answer(self, peer: _Peer, data: bytes) -> bytes | None:
        """Take the answer from a challenged peer's first bytes; return what follows it."""
        assert peer.nonce is not None
        needed = _auth.ANSWER_SIZE - len(peer.answer)
        peer.answer += data[:needed]
        if len(peer.answer) < _auth.ANSWER_SIZE:
            return b""
        if not _auth.check(self._token, peer.nonce, peer.answer):
            self._refuse(peer, "wrong token")
            return None
        peer.nonce, peer.answer = None, b""
        try:
            peer.sock.send(_auth.ACCEPTED)  # one byte into an idle socket: never partial
        except OSError:
            self._close_peer(peer, cut_ok=True)
            return None
        return data[needed:]

    def _expire_challenges(self) -> None:
        now = time.monotonic()
        for peer in list(self._peers.values()):
            if peer.nonce is not None and now > peer.deadline:
                self._refuse(peer, f"no answer to the challenge in {_auth.ANSWER_TIMEOUT:.0f} s")

    def _refuse(self, peer: _Peer, why: str) -> None:
        self._close_peer(peer, cut_ok=True)
        self._refused(peer.where, why)

    def _refused(self, where: str, why: str) -> None:
        """Count a refused TCP connection; write the first, summarise the others.

        Anyone who can reach the port can make refusals, so each one must not
        cost a line in the user's log: after one written, the next are counted
        and summarised in one line at most once per ``_REPORT_INTERVAL`` (and
        at a barrier and at shutdown, so the count is there after ``flush()``).
        """
        self.stats.refused += 1
        now = time.monotonic()
        if not self._refusals_unreported and now - self._refusal_reported_at >= _REPORT_INTERVAL:
            self._refusal_reported_at = now
            self._report(
                logging.WARNING,
                f"refused a TCP connection from {where}: {why} (the next refusals are "
                f"counted and summarised at most once a minute)",
            )
            return
        self._refusals_unreported += 1
        self._refusal_last = f"{where}: {why}"

    def _report_refusals(self) -> None:
        """Write the summary of the refusals not written yet, if any."""
        count = self._refusals_unreported
        if not count:
            return
        now = time.monotonic()
        self._report(
            logging.WARNING,
            f"refused {count:,} more TCP connections in the last "
            f"{now - self._refusal_reported_at:.0f} s (the last from {self._refusal_last}); "
            f"{self.stats.refused:,} refused since the writer started",
        )
        self._refusals_unreported = 0
        self._refusal_reported_at = now

    # -- reading ------------------------------------------------------------------------

    def _handshake(self, peer: _Peer) -> bool:
        """Advance a TLS handshake; True once it is done and the nonce is sent."""
        try:
            peer.sock.do_handshake()  # type: ignore[attr-defined]
            peer.handshaking = False
            assert peer.nonce is not None
            peer.sock.send(peer.nonce)
        except OSError as exc:
            if _would_block(exc):
                return False
            self._refuse(peer, f"TLS handshake failed: {exc}")
            return False
        return True

    def _read(self, peer: _Peer, budget: int | None = None) -> None:
        """Read what ``peer`` sent (at least ``budget`` bytes if given) and handle it."""
        if peer.handshaking and not self._handshake(peer):
            return
        while True:
            try:
                data = peer.sock.recv(_RECV_SIZE if budget is None else max(budget, 1))
            except OSError as exc:
                if _would_block(exc):
                    return
                data = b""  # ECONNRESET: the peer is gone; what was read is handled
            self._read_bytes += len(data)
            if not data:
                if peer.nonce is not None:
                    self._refuse(peer, "closed before answering the challenge")
                else:
                    self._close_peer(peer)
                return
            if peer.nonce is not None:
                rest = self._check_answer(peer, data)
                if not rest:  # None: refused; b"": the answer is not complete yet
                    return
                data = rest
            try:
                frames = peer.reader.feed(data)
            except _wire.FrameError as exc:
                self.stats.bad_frames += 1
                self._report(logging.ERROR, f"dropped the connection of {peer.describe()}: {exc}")
                self._close_peer(peer, cut_ok=True)
                return
            for fields in frames:
                if fields[0] == _wire.HELLO:
                    if not self._hello(peer, fields):
                        return  # refused: the rest of what it sent is not read
                else:
                    self._handle_frame(peer, fields)
            if budget is None:
                # TLS may hold decrypted bytes that select() will not report.
                if peer.tls and self._peers.get(peer.fd) is peer and peer.sock.pending():  # type: ignore[attr-defined]
                    continue
                return
            budget -= len(data)
            if budget <= 0:
                return

    def _handle_frame(self, peer: _Peer, fields: list[Any]) -> None:
        kind = fields[0]
        if kind == _wire.LINE:
            sinks = self._line_sinks
            if sinks is None or len(fields) != 2 or type(fields[1]) is not str:
                self.stats.bad_frames += 1
                why = "malformed" if sinks is not None else "not expected by this writer"
                self._report(logging.ERROR, f"discarded a line from {peer.describe()}: {why}")
                return
            self.stats.records += 1
            self.stats.lines += 1
            text = fields[1]
            if "\n" in text or "\r" in text:  # one record, one line, whoever rendered it
                text = _formatters.continued(text)
            for handler in sinks:
                self._call_handler(handler, None, text)
        elif kind == _wire.RECORD:
            try:
                record = _wire.decode_record(fields, peer.tables)
            except _wire.FrameError as exc:
                self.stats.bad_frames += 1
                self._report(
                    logging.ERROR, f"discarded a malformed record from {peer.describe()}: {exc}"
                )
                return
            self._dispatch(record)
        elif kind in (_wire.SITE, _wire.THREAD):
            try:
                peer.tables.define(fields)
            except _wire.FrameError as exc:
                self.stats.bad_frames += 1
                self._report(
                    logging.ERROR, f"discarded a malformed frame from {peer.describe()}: {exc}"
                )
        elif (
            kind == _wire.DROPPED
            and len(fields) == 2
            and isinstance(fields[1], int)
            and 0 < fields[1] <= _MAX_DROPPED
        ):
            self.stats.dropped_reported += fields[1]
            self._report(
                logging.WARNING,
                f"{fields[1]:,} records dropped from {peer.describe()}: the writer was behind "
                f"for longer than its on_full='drop' wait",
            )
        elif kind == _wire.FLUSH and len(fields) == 2:
            self._flush_request(peer.sock, fields[1])
        else:  # LEVELS too: levels travel in a file the installer writes, not through here
            self.stats.bad_frames += 1

    def _hello(self, peer: _Peer, fields: list[Any]) -> bool:
        """Note who the peer is; refuse it (False) if it speaks another protocol version."""
        if len(fields) >= 4:
            if isinstance(fields[2], int):
                peer.pid = fields[2]
            if isinstance(fields[3], str):
                peer.name = fields[3][:200]
        if fields[1:2] == [_wire.PROTOCOL_VERSION]:
            return True
        self.stats.bad_frames += 1
        self._report(
            logging.ERROR,
            f"refused {peer.describe()}: it speaks logfunnel protocol {fields[1:2]}, this "
            f"writer [{_wire.PROTOCOL_VERSION}]; install the same logfunnel version on both ends",
        )
        self._close_peer(peer, cut_ok=True)
        return False

    def _dispatch(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to the sinks, or to the logger tree as if it had been logged here.

        With ``sinks``, every sink whose level the record reaches gets it.  In
        adopt mode this is ``Logger.handle`` and ``Logger.callHandlers`` with
        three differences: no logger is created for the record's name (see
        ``_logger_for``); an exception escaping one handler (or a filter) is
        counted and reported, and the other handlers still get the record; and
        a handler that fails to write (``handleError``) is reported once, not
        once per record (see ``_SinkWatch``).
        """
        self.stats.records += 1
        if self._sinks is not None:
            for handler in self._sinks:
                if record.levelno >= handler.level:
                    self._call_handler(handler, record)
            return
        logger, own = self._logger_for(record.name)
        # Logger levels were applied where the record was made, when it was
        # made: checking them again here would drop a record whose logging
        # call returned, if the installing process raised a level between
        # the call and this moment.  Handler levels apply here, as always.
        if own:
            # As Logger.handle: the filters and `disabled` of the logger the
            # record was logged on; a name with no logger here has neither.
            if logger.disabled:
                return
            try:
                passed = logger.filter(record)
            except Exception as exc:
                self._handler_failed(record.name, exc)
                return
            if not passed:
                return
            if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = passed
        found = 0
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                found += 1
                if record.levelno >= handler.level:
                    self._call_handler(handler, record)
            current = current.parent if current.propagate else None
        if not found:
            last = logging.lastResort
            if last is not None and record.levelno >= last.level:
                self._call_handler(last, record)

    def _logger_for(self, name: str) -> tuple[logging.Logger, bool]:
        """Return the logger a record of ``name`` starts at, and whether it is ``name``'s own.

        ``logging.getLogger(name)`` would create a logger (and keep it forever)
        for every name a peer sends: unbounded memory, and every barrier that
        walks the tree slower.  A name with no logger here behaves as a new,
        empty logger would: its records go to the handlers of the logger that
        would be its parent (``Manager._fixupParents``: the nearest dotted
        prefix that is a ``Logger``, not a ``PlaceHolder``) and up from there.

        Those parents are cached (at most ``_NAME_CACHE_SIZE`` names) only
        while the tree has as many entries as when they were found: a logger
        created later for the name or a prefix between it and its parent adds
        an entry, so it wins from the next record on.  A path through a
        ``PlaceHolder`` is never cached (a logger made there replaces the
        entry without adding one).  Handlers are read from the loggers at each
        record, so a handler added later is used at once.
        """
        root = logging.root
        if not name or name == root.name:
            return root, True
        loggers = root.manager.loggerDict
        found = loggers.get(name)
        if isinstance(found, logging.Logger):
            return found, True
        valid_for = (loggers, len(loggers))
        names = self._names
        if self._names_of[0] is not loggers or self._names_of[1] != valid_for[1]:
            names.clear()
            self._names_of = valid_for
        parent = names.get(name)
        if parent is not None and (parent is root or loggers.get(parent.name) is parent):
            return parent, False
        parent = root
        cacheable = found is None
        i = name.rfind(".")
        while i > 0:
            entry = loggers.get(name[:i])
            if entry is not None:
                if isinstance(entry, logging.Logger):
                    parent = entry
                    break
                cacheable = False
            i = name.rfind(".", 0, i - 1)  # as Manager._fixupParents
        if cacheable:
            if len(names) >= _NAME_CACHE_SIZE:
                del names[next(iter(names))]  # the oldest entry
            names[name] = parent
        return parent, False

    def _watch(self, handler: logging.Handler) -> _SinkWatch:
        watch = self._watches.get(id(handler))
        if watch is None:  # a watch holds its handler: the id is never reused meanwhile
            watch = self._watches[id(handler)] = _SinkWatch(handler)
        return watch

    def _call_handler(
        self, handler: logging.Handler, record: logging.LogRecord | None, line: str = ""
    ) -> None:
        """Hand ``handler`` a record, or (``record`` None) a line rendered for it."""
        watch = self._watch(handler)
        failed = watch.failed
        try:
            if record is None:
                _sinks.write_line(handler, line)
            else:
                handler.handle(record)
        except Exception as exc:
            self._handler_failed(record.name if record is not None else "(a line)", exc)
            return
        # A file sink's records may only be buffered yet: it writes again
        # when a flush lands some (_check_resumed).  Any other wrote it now.
        if failed and not watch.counts_landed and watch.failed == failed:
            watch.failed = 0
            self._report_resumed(handler, failed)

    def _report_resumed(self, handler: logging.Handler, failed: int) -> None:
        self._report(
            logging.WARNING,
            f"{handler!r} writes again: resumed after {failed} failed records",
        )

    def _check_resumed(self) -> None:
        """Report the file sinks that wrote records again since they last failed."""
        again = [
            (watch.handler, failed)
            for watch in list(self._watches.values())
            if watch.failed and (failed := watch.resumed())
        ]
        for handler, failed in again:
            self._report_resumed(handler, failed)
        if again:
            self._flush_batched(check=False)  # the reports themselves

    def _handler_failed(self, name: str, exc: Exception) -> None:
        self.stats.handler_errors += 1
        if self.stats.handler_errors <= 10 or self.stats.handler_errors % 1000 == 0:
            print(
                f"logfunnel writer: handling a record of {name!r} raised "
                f"{type(exc).__name__}: {exc}; the other handlers got it, and the writer "
                f"goes on ({self.stats.handler_errors} such errors so far)",
                file=sys.stderr,
            )

    def _report(self, level: int, message: str) -> None:
        """Put a record about the funnel itself into the sinks."""
        record = logging.LogRecord(_OWN_LOGGER, level, __file__, 0, message, None, None)
        record.processName = "logfunnel-writer"
        self._dispatch(record)
        self.stats.records -= 1  # count only records that processes logged

    def _close_peer(self, peer: _Peer, *, cut_ok: bool = False) -> None:
        if self._peers.get(peer.fd) is not peer:
            return  # closed already
        for pause in self._paused.values():
            pause.until = 0.0  # a descriptor is free again: a paused accept may work now
        sock = peer.sock
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        del self._peers[peer.fd]
        self.stats.connections_open -= 1
        if peer.reader.pending and not cut_ok:
            self.stats.cut_frames += 1
            self._report(
                logging.WARNING,
                f"discarded {peer.reader.pending} bytes of a cut frame from {peer.describe()}, "
                f"which ended in the middle of sending a record",
            )
        sock.close()

    # -- barrier and control ----------------------------------------------------------

    def barrier(self) -> None:
        """Write everything any process had sent when this was called, then flush the sinks."""
        self._in_barrier = True
        try:
            self._accept_all(_LISTENER)
            if self._tcp_listener is not None:
                self._accept_all(_TCP_LISTENER)
            for peer in list(self._peers.values()):
                queued = _queued_bytes(peer.sock) if peer.nonce is None else 0
                if queued:
                    # TLS: FIONREAD counts encrypted bytes; read all there is.
                    self._read(peer, _RECV_SIZE * 64 if peer.tls else queued)
        finally:
            self._in_barrier = False
        self._report_refusals()  # so the count is in the sinks after flush()
        self._flush_sinks()
        late, self._late_flushes = self._late_flushes, []
        for sock, request in late:
            self._answer(sock, request)

    def _flush_request(self, sock: socket.socket, request: Any) -> None:
        if self._in_barrier:  # answered when the barrier under way ends
            self._late_flushes.append((sock, request))
            return
        self.barrier()
        self._answer(sock, request)

    def _answer(self, sock: socket.socket, request: Any) -> None:
        self._send_to(sock, [_wire.FLUSHED, request])

    def _send_to(self, sock: socket.socket, fields: list[Any]) -> None:
        frame = self._encoder.frame(fields)
        if sock is not self._control:
            # A process that asks and never reads must not wedge the writer:
            # an answer that does not fit its (non-blocking) socket at once
            # ends that peer.
            try:
                sent = sock.send(frame)
            except OSError:
                sent = -1
            if sent != len(frame):
                peer = next((p for p in self._peers.values() if p.sock is sock), None)
                if peer is not None:
                    self._report(logging.WARNING, f"dropped {peer.describe()}: it does not read")
                    self._close_peer(peer, cut_ok=True)
            return
        try:
            sock.setblocking(True)
            sock.sendall(frame)
        except OSError:
            return  # the asker is gone; nothing to answer
        finally:
            with contextlib.suppress(OSError):
                if sock is not self._control:
                    sock.setblocking(False)

    def _flush_batched(self, *, check: bool = True) -> None:
        for handler in self._batched:
            try:
                handler.flush()
            except Exception:
                self.stats.handler_errors += 1
        if check:
            self._check_resumed()

    def _flush_sinks(self) -> None:
        """Flush every handler a record may have reached: the barrier's last step.

        That is the sinks, every handler this loop called, and those on this
        process's logger tree (a thread host's program writes through them
        too).  The tree holds the program's own loggers only (the writer
        creates none), so the cost does not grow with the names peers send.
        """
        handlers: dict[int, logging.Handler] = {}
        for handler in self._sinks or ():
            handlers.setdefault(id(handler), handler)
        for watch in self._watches.values():
            handlers.setdefault(id(watch.handler), watch.handler)
        loggers = [logging.root, *logging.root.manager.loggerDict.values()]
        for logger in loggers:
            if isinstance(logger, logging.Logger):
                for handler in logger.handlers:
                    handlers.setdefault(id(handler), handler)
        for handler in list(handlers.values()):
            try:
                handler.flush()
            except Exception:
                self.stats.handler_errors += 1
        self.barrier_work = len(loggers) + len(handlers)
        self._check_resumed()

    def _serve_control(self) -> None:
        try:
            data = self._control.recv(65536)
        except OSError:
            data = b""
        if not data:  # the owner is gone: finish what was sent, then stop
            self._final_drain()
            return
        for fields in self._control_reader.feed(data):
            kind = fields[0]
            if kind == _wire.FLUSH:
                self._flush_request(self._control, fields[1])
            elif kind == _wire.SHUTDOWN:
                self._final_drain()
                self._answer(self._control, fields[1] if len(fields) > 1 else 0)
            elif kind == _wire.STATS and len(fields) == 2:
                self.stats.unwritten = sum(w.total for w in self._watches.values())
                frame = self._encoder.frame(
                    [_wire.STATS, fields[1], dataclasses.asdict(self.stats)]
                )
                self._control.sendall(frame)

    def _final_drain(self) -> None:
        """Stop taking records without losing one whose logging call returned.

        The listeners are shut first, so a new connection is refused (those
        already queued are accepted and drained like the others).  Then each
        connection is shut for reading: from that instant a process's send
        fails with EPIPE (its record goes to its fallback), while everything
        already queued is still read, up to the end of the stream.  So every
        record is either written here or handed to its sender's fallback.
        """
        for tag in (_LISTENER, _TCP_LISTENER):
            listener = self._listener_of(tag)
            if listener is None:
                continue
            remote = tag is _TCP_LISTENER
            if remote:  # a TCP listener drops its backlog on shutdown: take it first
                self._accept_all(tag, force=True)
            # shutdown(), not just close(): a writer process's supervisor holds
            # this listening socket too, and it must refuse connections for
            # everyone.  A Unix listener's queued connections can still be
            # accepted after it (Linux); a TCP listener's cannot (EINVAL).
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            if not remote:
                self._accept_all(tag, force=True)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(listener)
            with contextlib.suppress(OSError):
                listener.close()
        for peer in list(self._peers.values()):
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RD)
        for peer in list(self._peers.values()):
            for _ in range(_MAX_DRAIN_READS):  # reads end at the end of the stream
                if self._peers.get(peer.fd) is not peer:
                    break
                self._read(peer, _RECV_SIZE)
            else:
                self._close_peer(peer)
        self._report_refusals()
        self._flush_sinks()
        self._running = False

    def _close_everything(self) -> None:
        for peer in list(self._peers.values()):
            self._close_peer(peer)
        for sock in (self._listener, self._control, self._tcp_listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._selector.close()
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        """Give every handler this writer watched its own ``handleError`` back."""
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.restore()

    def forget_in_child(self) -> None:
        """Close this writer's descriptors in a forked child, where no writer thread runs."""
        for peer in list(self._peers.values()):
            with contextlib.suppress(OSError):
                peer.sock.close()
        self._peers.clear()
        for sock in (self._listener, self._control, self._tcp_listener):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        self._restore_handlers()


def tls_context(cert: str | None, key: str | None) -> Any:
    """Return a server ``ssl.SSLContext`` for ``cert`` (and ``key``), or None without one."""
    if not cert:
        return None
    import ssl  # noqa: PLC0415 - only funnels that listen with TLS need it

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    return context


def start_thread(writer: Writer) -> threading.Thread:
    """Run ``writer`` in a daemon thread of this process."""
    thread = threading.Thread(target=writer.run, name="logfunnel-writer", daemon=True)
    thread.start()
    return thread
