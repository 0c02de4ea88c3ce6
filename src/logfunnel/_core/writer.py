"""The writer: one loop that owns every sink.

Data flow::

    process A (any start method)     process B ...          installing process
      logger.info(...)                                         Funnel.flush()/shutdown()
        -> Logger.callHandlers (route): its own handlers, then   |
        -> handler.send: this process's one Connection            | control channel
        -> Connection.send_record (connection):                   | (socketpair)
             Framer.frames (framing): the line or the record     |
             Outbox (outbox): unit in flight, queued, drops      |
             or Fallback (fallback) while the writer is away     |
        -> write to A's own pipe       B's own pipe               |
           (its socket: HELLO, FLUSHED, the writer's end)           |
                 |                           |                       |
                 v                           v                       v
      +----------------------------- Writer.run (one thread) -----------------------+
      | select: listeners | one socket and one pipe per process | control channel   |
      |  (1) accept: _listeners (back-off) -> _gate (TLS, token challenge)          |
      |  (2) _peers: read -> FrameReader (length prefix, size limit), per peer:     |
      |        HELLO -> who it is (and its protocol version), FLUSH -> barrier (5)  |
      |  (3)   any other frame -> _dispatch.Dispatcher.frame:                       |
      |        SITE/THREAD -> that peer's Tables                                    |
      |        RECORD -> decode_record -> Writer(sinks=...) when given, else the    |
      |                  logger tree's handlers, as Logger.handle would             |
      |        LINE (a writer process with install()'s own sinks) -> write_line     |
      |        each handler called through _calls (errors caught, write failures    |
      |        watched)                                                             |
      |  (4) end of a turn: timers, flush the batching file sinks, maybe a nap      |
      |  (5) barrier  (6) control channel  (7) final drain                          |
      +-----------------------------------------------------------------------------+

The stages, in the order a record meets them:

(0) Sending.  In every attached process the route (``route``) runs the
stdlib's handler loop unchanged, then hands the record to ``handler.send``:
the process's one connection (``connection``), opened on first use
(``dial``).  ``framing`` decides what travels -- the line already rendered
(a writer process with install()'s own sinks) or the record, encoded by
``wire`` -- and ``outbox`` sends it whole, one unit at a time, with exact
byte counts, so neither a re-entrant call nor a signal handler can interleave
or tear a frame; with ``on_full="drop"`` it bounds the wait and counts what it
drops.  A local process writes to a pipe of its own, whose read end its HELLO
passed to the writer (``pipe``); a TCP peer sends on its socket.  The frame is
in the kernel before the logging call returns.  While
the writer cannot be reached, records go to the ``fallback`` (stderr or a
file), and the connection retries once a second.  No lock, queue or socket is
shared between processes.

(1) Accepting.  A readable listener is accepted from until its backlog is
empty (``_listeners``); a Unix connection is a peer at once, a TCP one must
first finish TLS and prove the token (``_gate``), and nothing it sends is read
as frames before.  ``accept()`` failing for want of descriptors pauses that
listener with a growing back-off instead of spinning.

(2) Reading (``_peers``).  A readable connection or pipe is read in pieces of
up to 256 KiB and cut into frames by its ``FrameReader``.  A local peer's first
read takes the pipe its HELLO carries (SCM_RIGHTS), and its frames come from
there on over the pipe.  The frames about the
connection are handled there: HELLO (a protocol version other than this
one's ends it), FLUSH (a barrier, answered on that connection).  A frame over
the size limit, or bytes that do not decode, end the connection (its stream
can no longer be trusted): counted and reported.

(3) Dispatch.  Every other frame goes to the ``Dispatcher`` (``_dispatch``),
which needs no socket: definitions, records and lines to the sinks or the
logger tree, DROPPED counts reported.  A handler that raises, or cannot write,
is counted and reported once (``_calls``); the loop goes on.

(4) The end of a turn.  Timers run (challenge deadlines, accept retries, the
refusals summary: the next one bounds select's timeout).  The file sinks
install() built are flushed once per turn, not once per record.  A busy
turn that took less than the nap waits out the rest of it, on the control
channel and the local processes' sockets but not their pipes: a process's
flush() or exit (``LEAVING``) is served during the nap, the owner's ends it;
the end of a socket (a killed process) is read out and written when the nap
ends, not left batched while the loop waits.  Meanwhile records
gather in the pipes and socket buffers, their writes wake no one, and the next
turn takes them in a few large reads.  How long (``nap``): 1 to 32 ms, doubling
on each busy turn of a burst, and never so long that the fastest connection's
buffer would fill.

(5) The barrier (``Funnel.flush``, or a FLUSH from any process) reads, from
every connection and pipe, at least the bytes that were queued in the kernel when the
request was processed (``FIONREAD``), after accepting every pending
connection (a paused listener is left alone).  A record whose logging call
returned before ``flush()`` was called had all its bytes queued by then, so
it is written before the barrier answers.  Then it flushes the sinks, the
handlers it called and those of the host's own tree: what it costs does not
grow with the logger names peers send (the writer creates no logger).

(6) The control channel, from the installing ``Funnel`` (or a writer
process's supervisor): FLUSH, STATS (``Stats``) and SHUTDOWN; at EOF (the
owner is gone) the writer drains and ends as for SHUTDOWN.

(7) The final drain stops taking records without losing one whose logging
call returned: the listeners are shut (``Listeners.shut``), then each
connection is shut for reading: from that instant a process's send fails
(its record goes to its fallback), while everything already queued is still
read to the end of the stream.  A pipe is read for what it holds and closed
before its socket: what its process writes after that it reads back itself
once the socket has ended, and sends to its fallback (``pipe``).  A process
killed mid-send leaves a cut frame: discarded, counted in ``Stats.cut_frames`` and reported; that
record's logging call never returned.

Who owns what:

* The writer thread owns the selector, the control channel's far end, and
  the ``Listeners`` (the listening sockets), ``Gate``, ``Peers`` (every
  accepted socket) and ``Dispatcher`` it made; only it touches them.  The
  hosts (``_hosts``) hand it the listening sockets and the control channel's
  far end; the writer closes them when its loop ends.  Each source process
  owns its own connection (``connection.Connection``).
* The sinks: with ``Writer(sinks=[...])`` exactly those handlers, on no
  logger; without, "adopt mode": the handlers of this process's logger tree.
  In the thread host that tree is the installing program's own: its threads
  keep calling those handlers directly and each handler's lock orders the
  two.  The writer changes one thing on a handler it calls, ``handleError``
  (``_calls.SinkWatch``), and puts it back when its loop ends and in a
  forked child (``forget_in_child``).

What a peer can make the writer keep or write is bounded: no logger per
record name (``_names.Names``), the tables of sites and threads
(``_protocol.Tables``), and for refused TCP connections and failing accepts
one line, then at most one summary a minute (``_gate.REPORT_INTERVAL``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import selectors
import socket
import threading
import time
from typing import Any, Final

from logfunnel._core import wire as _wire
from logfunnel._core.adopt_render import Spec
from logfunnel._core.dispatch import Dispatcher, Stats
from logfunnel._core.gate import Gate, Peer
from logfunnel._core.listeners import LISTENER, TCP_LISTENER, Listeners
from logfunnel._core.nap import Nap
from logfunnel._core.peers import Peers, PipeEnd

_CONTROL: Final = "control"


class Writer:
    """The loop: multiplex every connection, read frames, and hand them on (see the stages)."""

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
        ``tls``: an ``ssl.SSLContext`` for the TCP listener (``_gate.tls_context``).
        """
        self._control = control
        self._encoder = _wire.Encoder(frame_limit)
        self._control_reader = _wire.FrameReader(frame_limit)
        self._selector = selectors.DefaultSelector()
        try:
            # The control channel and local peers' sockets, not their pipes (stage 4).
            self._nap = selectors.DefaultSelector()
        except BaseException:  # out of descriptors: install() is all-or-nothing
            self._selector.close()
            raise
        self.stats = Stats()
        self._dispatch = Dispatcher(sinks, self.stats)
        self._gate = Gate(token, tls, frame_limit, self._dispatch, self._drop)
        self._listeners = Listeners(
            listener, tcp_listener, self._selector, frame_limit, self._gate, self._dispatch
        )
        self._peers = Peers(
            self._selector,
            self._listeners,
            self._gate,
            self._dispatch,
            self._flush_request,
            self._nap,
        )
        #: A writer process with install()'s own sinks sets this: its peers may
        #: then send LINE frames, lines rendered with the sinks' formatter.
        self.lines_allowed = False
        #: Adopt mode with a stock formatter: the Spec its senders render with.
        self.adopt_spec: Spec | None = None
        self._running = False
        self._in_barrier = False
        self._late_flushes: list[tuple[socket.socket, int]] = []

    @property
    def barrier_work(self) -> int:
        """Loggers looked at and handlers flushed by the last barrier (tests read it)."""
        return self._dispatch.calls.barrier_work

    def _drop(self, peer: Peer) -> None:
        self._peers.drop(peer)  # for the gate, made before the peers

    # -- the loop (stages 1 to 4) ------------------------------------------------------

    def run(self) -> None:
        """Serve until the owner asks to shut down or closes the control channel."""
        self._listeners.register(LISTENER)
        self._control.setblocking(True)
        self._selector.register(self._control, selectors.EVENT_READ, _CONTROL)
        self._nap.register(self._control, selectors.EVENT_READ, _CONTROL)
        self._listeners.register(TCP_LISTENER)
        self._dispatch.start(lines=self.lines_allowed, adopt=self.adopt_spec)
        peers = self._peers
        table, read, accept_all = peers.table, peers.read, peers.accept_all
        read_pipe = peers.read_pipe
        flush_batched = self._dispatch.calls.flush_batched
        nap = Nap()
        self._running = True
        try:
            while self._running:
                events = self._selector.select(self._timeout())
                turn_started = time.monotonic()
                for key, _ in events:
                    if key.data is LISTENER or key.data is TCP_LISTENER:
                        accept_all(key.data)
                    elif key.data is _CONTROL:
                        self._serve_control()
                    elif type(key.data) is PipeEnd:
                        owner: Peer = key.data.peer
                        if table.get(owner.fd) is owner:
                            read_pipe(owner)
                    else:
                        peer: Peer = key.data
                        # A barrier run for an earlier event of this batch may
                        # have closed this peer already: skip its stale event.
                        if table.get(peer.fd) is peer:
                            read(peer)
                if self._running:
                    self._timers()
                flush_batched()
                now = time.monotonic()
                wait = nap.after_turn(turn_started, now, peers.read_bytes, peers.largest_fill)
                if wait is not None:  # a busy turn
                    if wait > 0 and self._nap_for(wait):
                        # A socket's end in the nap read its pipe out (Peers.close): write
                        # that now, not when someone next logs or at shutdown.
                        flush_batched()
                    peers.read_bytes = peers.largest_fill = 0
                    nap.napped_at(time.monotonic())
        finally:
            self._peers.close_all()
            self._close_own()

    def _nap_for(self, wait: float) -> bool:
        """Nap ``wait`` seconds (stage 4), serving local processes' sockets meanwhile.

        What comes on those sockets is a FLUSH (a process's ``flush()``: a
        barrier, answered) or LEAVING (a process's exit: its pipe is read and
        written, answered), or a socket's end: served at once, and the nap goes
        on, so no process waits for it and no other pipe is read early.  The
        control channel (the owner's flush(), stats(), shutdown()) ends it.
        Return whether a socket was served: what it read may sit in a batch.
        """
        deadline = time.monotonic() + wait
        table, read = self._peers.table, self._peers.read
        served = False
        while self._running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            events = self._nap.select(remaining)
            if not events:
                break
            for key, _ in events:
                if key.data is _CONTROL:
                    return served  # served by the next turn's select, at once
                peer: Peer = key.data
                if table.get(peer.fd) is peer:
                    read(peer)
                    served = True
        return served

    def _timeout(self) -> float | None:
        """Return how long select() may wait: until the next timer is due, or forever."""
        timeout: float | None = 1.0 if self._gate.challenged else None
        due = self._listeners.due() + self._gate.due()
        if due:
            wait = max(0.0, min(due) - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        return timeout

    def _timers(self) -> None:
        if self._gate.challenged:
            self._gate.expire_challenges()
        now = time.monotonic()
        for tag, pause in list(self._listeners.paused.items()):
            if now >= pause.until:
                self._peers.accept_all(tag, retry=True)
        self._gate.summarise_if_due(now)

    # -- barrier and control (stages 5 and 6) ------------------------------------------

    def barrier(self) -> None:
        """Write everything any process had sent when this was called, then flush the sinks."""
        self._in_barrier = True
        try:
            self._peers.accept_all(LISTENER)
            self._peers.accept_all(TCP_LISTENER)
            self._peers.read_queued()
        finally:
            self._in_barrier = False
        self._gate.report_refusals()  # so the count is in the sinks after flush()
        self._dispatch.flush_all()
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
        frame = self._encoder.frame([_wire.FLUSHED, request])
        if sock is not self._control:
            self._peers.answer(sock, frame)
            return
        with contextlib.suppress(OSError):  # the asker is gone; nothing to answer
            sock.setblocking(True)
            sock.sendall(frame)

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
                self.stats.unwritten = self._dispatch.calls.unwritten()
                self.stats.exported_dropped = self._dispatch.calls.exported_dropped()
                frame = self._encoder.frame(
                    [_wire.STATS, fields[1], dataclasses.asdict(self.stats)]
                )
                self._control.sendall(frame)

    # -- the end (stage 7) -------------------------------------------------------------

    def _final_drain(self) -> None:
        """Stop taking records without losing one whose logging call returned (stage 7).

        Every record is either written here or handed to its sender's fallback.
        """
        for tag in (LISTENER, TCP_LISTENER):
            self._listeners.shut(tag, functools.partial(self._peers.accept_all, tag, force=True))
        self._peers.drain()
        self._gate.report_refusals()
        self._dispatch.flush_all()
        self._running = False

    def forget_in_child(self) -> None:
        """Close this writer's descriptors in a forked child, where no writer thread runs."""
        self._peers.forget()
        self._close_own()

    def _close_own(self) -> None:
        """Close the listeners, the control channel and the selector; give handlers theirs back."""
        self._listeners.close()
        with contextlib.suppress(OSError):
            self._control.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        with contextlib.suppress(OSError):
            self._nap.close()
        self._dispatch.calls.restore()


def start_thread(writer: Writer) -> threading.Thread:
    """Run ``writer`` in a daemon thread of this process."""
    thread = threading.Thread(target=writer.run, name="logfunnel-writer", daemon=True)
    thread.start()
    return thread
