"""The accepted connections: each read, cut into frames, routed, answered and closed here.

Stage (2) of the writer's loop (see ``_writer``).  A readable connection is
read in pieces of up to ``RECV_SIZE`` and cut into frames by its
``FrameReader`` (a ``_lines.LineReader`` when the dispatcher writes runs of
LINE frames and bare lines as blocks); a TCP one's first bytes are its answer to the gate's
challenge (``_gate``).  The frames about the connection are handled here:
HELLO says who the process is (a protocol version other than this one's ends
the connection), FLUSH asks for a barrier (the writer's) whose answer goes
back on the same connection.  Every other frame goes to the dispatcher
(``_dispatch``).

What ends a connection: its end of stream (bytes of a cut frame left in its
reader are discarded, counted in ``Stats.cut_frames`` and reported: that
record's logging call never returned); a frame over the size limit, or bytes
that do not decode (its stream can no longer be trusted: counted and
reported); a FLUSH answer it does not read (it must not wedge the writer).

Who owns what: one ``Peers`` per ``Writer``, used only by the writer thread.
It owns every accepted socket and its ``_gate.Peer`` (``table``, by
descriptor), and registers and unregisters them in the loop's selector.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import selectors
import socket
import termios
from collections.abc import Callable
from typing import Any, Final

from logfunnel._core import wire as _wire
from logfunnel._core.dispatch import Dispatcher
from logfunnel._core.gate import Gate, Peer, would_block
from logfunnel._core.lines import LINE_BLOCK, LINE_RUN, LineReader
from logfunnel._core.listeners import Listeners
from logfunnel._core.nap import fill

RECV_SIZE: Final = 256 * 1024
# Reads of one connection in the final drain before it is cut off (64 GiB).
_MAX_DRAIN_READS: Final = 2**18


def _queued_bytes(sock: socket.socket) -> int:
    """Return how many received bytes wait in the kernel for ``sock`` (FIONREAD)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
    except OSError:
        return 0
    return buf[0]


class Peers:
    """Every accepted connection, from its accept to its close."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        listeners: Listeners,
        gate: Gate,
        dispatcher: Dispatcher,
        flush: Callable[[socket.socket, Any], None],
    ) -> None:
        """``flush(sock, request)``: the writer's barrier, for a FLUSH a peer sent."""
        self._selector = selector
        self._listeners = listeners
        self._gate = gate
        self._dispatch = dispatcher
        self._stats = dispatcher.stats
        self._flush = flush
        #: The connections served, by descriptor.
        self.table: dict[int, Peer] = {}
        #: Every process id a peer gave (``Stats.processes``); a few bytes per process.
        self._pids: set[int] = set()
        #: Bytes read since the loop last set this to 0 (once per turn).
        self.read_bytes = 0
        #: The most bytes one read brought since the loop last set this to 0.
        self.largest_read = 0
        #: The most of a socket buffer one read emptied (``nap.fill``), likewise.
        self.largest_fill = 0
        # Every read lands here, then is copied into the peer's reader.  A
        # recv(RECV_SIZE) allocated 256 KiB per call, which malloc serves with
        # mmap, mremap and munmap (strace: 3 system calls more per read, and page
        # faults).  A nested read (a barrier during a read) reuses it: the outer
        # read fed its bytes to the reader before any frame was handled.
        self._received = memoryview(bytearray(RECV_SIZE))

    def accept_all(self, tag: str, *, retry: bool = False, force: bool = False) -> None:
        """Serve every connection a listener has pending (see ``Listeners.accept``)."""
        for peer in self._listeners.accept(tag, len(self.table), retry=retry, force=force):
            if self._dispatch.takes_runs:  # nothing was read yet: its reader is still empty
                peer.reader = LineReader(peer.reader.limit)
            self.table[peer.fd] = peer
            self._selector.register(peer.sock, selectors.EVENT_READ, peer)
            self._stats.connections += 1
            self._stats.connections_open += 1

    def read(self, peer: Peer, budget: int | None = None) -> None:
        """Read what ``peer`` sent (at least ``budget`` bytes if given) and handle it."""
        if peer.handshaking and not self._gate.handshake(peer):
            return
        received = self._received
        stats = self._stats
        while True:
            want = RECV_SIZE if budget is None else min(max(budget, 1), RECV_SIZE)
            try:
                got = peer.sock.recv_into(received, want)
            except OSError as exc:
                if would_block(exc):
                    return
                got = 0  # ECONNRESET: the peer is gone; what was read is handled
            self.read_bytes += got
            self.largest_read = max(self.largest_read, got)
            records = stats.records
            if not got:
                if peer.nonce is not None:
                    self._gate.refuse(peer, "closed before answering the challenge")
                else:
                    self.close(peer)
                return
            data: bytes | memoryview = received[:got]
            if peer.nonce is not None:
                rest = self._gate.check_answer(peer, bytes(data))
                if not rest:  # None: refused; b"": the answer is not complete yet
                    return
                data = rest
            try:
                frames = peer.reader.feed(data)
            except _wire.FrameError as exc:
                self._stats.bad_frames += 1
                self._dispatch.report(
                    logging.ERROR, f"dropped the connection of {peer.describe()}: {exc}"
                )
                self.drop(peer)
                return
            for fields in frames:
                kind = fields[0]
                if kind is LINE_BLOCK:
                    self._dispatch.block(fields[1], peer)
                elif kind is LINE_RUN:
                    self._dispatch.lines(fields[1], peer)
                elif kind == _wire.HELLO:
                    if not self._hello(peer, fields):
                        return  # refused: the rest of what it sent is not read
                elif kind == _wire.FLUSH and len(fields) == 2:
                    self._flush(peer.sock, fields[1])
                else:
                    self._dispatch.frame(fields, peer)
            self.largest_fill = max(self.largest_fill, fill(got, stats.records - records))
            if budget is None:
                # TLS may hold decrypted bytes that select() will not report.
                if peer.tls and self.table.get(peer.fd) is peer and peer.sock.pending():  # type: ignore[attr-defined]
                    continue
                return
            budget -= len(data)
            if budget <= 0:
                return

    def _hello(self, peer: Peer, fields: list[Any]) -> bool:
        """Note who the peer is; refuse it (False) if it speaks another protocol version."""
        if len(fields) >= 4:
            if isinstance(fields[2], int):
                peer.pid = fields[2]
                if peer.pid not in self._pids:
                    self._pids.add(peer.pid)
                    self._stats.processes += 1
            if isinstance(fields[3], str):
                peer.name = fields[3][:200]
        if fields[1:2] == [_wire.PROTOCOL_VERSION]:
            return True
        self._stats.bad_frames += 1
        self._dispatch.report(
            logging.ERROR,
            f"refused {peer.describe()}: it speaks logfunnel protocol {fields[1:2]}, this "
            f"writer [{_wire.PROTOCOL_VERSION}]; install the same logfunnel version on both ends",
        )
        self.drop(peer)
        return False

    def read_queued(self) -> None:
        """Read, from every connection, at least what the kernel holds for it now (a barrier)."""
        for peer in list(self.table.values()):
            queued = _queued_bytes(peer.sock) if peer.nonce is None else 0
            if queued:
                # TLS: FIONREAD counts encrypted bytes; read all there is.
                self.read(peer, RECV_SIZE * 64 if peer.tls else queued)

    def answer(self, sock: socket.socket, frame: bytes) -> None:
        """Send ``frame`` to a peer; end it if it does not fit its socket at once.

        A process that asks and never reads must not wedge the writer.
        """
        try:
            sent = sock.send(frame)
        except OSError:
            sent = -1
        if sent != len(frame):
            peer = next((p for p in self.table.values() if p.sock is sock), None)
            if peer is not None:
                self._dispatch.report(
                    logging.WARNING, f"dropped {peer.describe()}: it does not read"
                )
                self.drop(peer)

    def drain(self) -> None:
        """Shut every connection for reading, then read each to the end of its stream.

        From the shutdown on, a process's send fails with EPIPE (its record
        goes to its fallback), while everything already queued is still read.
        """
        for peer in list(self.table.values()):
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RD)
        for peer in list(self.table.values()):
            for _ in range(_MAX_DRAIN_READS):  # reads end at the end of the stream
                if self.table.get(peer.fd) is not peer:
                    break
                self.read(peer, RECV_SIZE)
            else:
                self.close(peer)

    def drop(self, peer: Peer) -> None:
        """Close a peer whose last bytes are of no use (refused, or its stream untrusted)."""
        self.close(peer, cut_ok=True)

    def close(self, peer: Peer, *, cut_ok: bool = False) -> None:
        """Close a connection; report a cut frame it left, unless ``cut_ok``."""
        if self.table.get(peer.fd) is not peer:
            return  # closed already
        self._listeners.freed()
        self._gate.forget(peer)
        sock = peer.sock
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        del self.table[peer.fd]
        self._stats.connections_open -= 1
        if peer.reader.pending and not cut_ok:
            self._stats.cut_frames += 1
            self._dispatch.report(
                logging.WARNING,
                f"discarded {peer.reader.pending} bytes of a cut frame from {peer.describe()}, "
                f"which ended in the middle of sending a record",
            )
        sock.close()

    def close_all(self) -> None:
        """Close every connection (the loop's end)."""
        for peer in list(self.table.values()):
            self.close(peer)

    def forget(self) -> None:
        """Close every connection's descriptor in a forked child, where no writer thread runs."""
        for peer in list(self.table.values()):
            with contextlib.suppress(OSError):
                peer.sock.close()
        self.table.clear()
