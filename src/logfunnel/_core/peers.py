"""The accepted connections: each read, cut into frames, routed, answered and closed here.

Stage (2) of the writer's loop (see ``_writer``).  A readable connection, or
the pipe a local peer's HELLO passed (``pipe``; read by ``read_pipe``, its own
``FrameReader`` in ``Peer.pipe_reader``), is read in pieces of up to
``RECV_SIZE`` and cut into frames by its ``FrameReader`` (a
``_lines.LineReader`` when the dispatcher writes runs of
LINE frames and bare lines as blocks); a TCP one's first bytes are its answer to the gate's
challenge (``_gate``).  The frames about the connection are handled here:
HELLO says who the process is (a protocol version other than this one's ends
the connection), FLUSH asks for a barrier (the writer's) whose answer goes
back on the same connection, LEAVING (a local process exiting) for its pipe
to be read and written, answered likewise.  Every other frame goes to the dispatcher
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

import contextlib
import logging
import os
import selectors
import socket
from collections.abc import Callable
from typing import Any, Final

from logfunnel._core import wire as _wire
from logfunnel._core.dispatch import Dispatcher
from logfunnel._core.gate import Gate, Peer, would_block
from logfunnel._core.lines import LINE_BLOCK, LINE_RUN, LineReader
from logfunnel._core.listeners import Listeners
from logfunnel._core.nap import fill, pipe_fill
from logfunnel._core.pipe import PIPE_SIZE, pipe_capacity, queued, receive_pipe

RECV_SIZE: Final = 256 * 1024
# Reads of one connection in the final drain before it is cut off (64 GiB).
_MAX_DRAIN_READS: Final = 2**18
# The frames ``Peers`` answers itself; every other kind is the dispatcher's.
_CONNECTION_KINDS: Final = frozenset((_wire.HELLO, _wire.FLUSH, _wire.LEAVING))


class PipeEnd:
    """The selector's key for a peer's pipe (its socket's key is the ``Peer``)."""

    __slots__ = ("peer",)

    def __init__(self, peer: Peer) -> None:
        self.peer = peer


class Peers:
    """Every accepted connection, from its accept to its close."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        listeners: Listeners,
        gate: Gate,
        dispatcher: Dispatcher,
        flush: Callable[[socket.socket, Any], None],
        waker: selectors.BaseSelector,
    ) -> None:
        """``flush(sock, request)``: the writer's barrier, for a FLUSH a peer sent.

        ``waker``: the selector the writer naps on (``nap``).  A local peer's
        socket joins it once its pipe arrives: its records travel in the pipe,
        which wakes no nap, while what it sends on its socket (a FLUSH: its
        ``flush()``; LEAVING: its exit) is served at once, during the nap.
        """
        self._selector = selector
        self._waker = waker
        self._encoder = _wire.Encoder()  # the answers to LEAVING
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
        #: The most of a pipe or socket buffer one read emptied (``nap.fill``), likewise.
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
        """Read what ``peer`` sent on its socket (at least ``budget`` bytes if given); handle it."""
        if peer.handshaking and not self._gate.handshake(peer):
            return
        received = self._received
        while True:
            want = RECV_SIZE if budget is None else min(max(budget, 1), RECV_SIZE)
            try:
                if peer.pid is None and peer.pipe is None and peer.sock.family == socket.AF_UNIX:
                    got = self._receive_hello(peer, received, want)
                else:
                    got = peer.sock.recv_into(received, want)
            except OSError as exc:
                if would_block(exc):
                    return
                got = 0  # ECONNRESET: the peer is gone; what was read is handled
            self.read_bytes += got
            records = self._stats.records
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
            if not self._handle(peer, peer.reader, data):
                return
            self.largest_fill = max(self.largest_fill, fill(got, self._stats.records - records))
            if budget is None:
                # TLS may hold decrypted bytes that select() will not report.
                if peer.tls and self.table.get(peer.fd) is peer and peer.sock.pending():  # type: ignore[attr-defined]
                    continue
                return
            budget -= len(data)
            if budget <= 0:
                return

    def read_pipe(self, peer: Peer, budget: int | None = None) -> None:
        """Read what ``peer`` wrote to its pipe (at least ``budget`` bytes if given); handle it."""
        received = self._received
        while peer.pipe is not None and self.table.get(peer.fd) is peer:
            want = RECV_SIZE if budget is None else min(max(budget, 1), RECV_SIZE)
            try:
                got = os.readv(peer.pipe, (received[:want],))
            except BlockingIOError:
                return
            except OSError:
                got = 0
            if not got:  # every write end closed: the process is gone, its socket ends too
                self._close_pipe(peer)
                return
            self.read_bytes += got
            self.largest_fill = max(self.largest_fill, pipe_fill(got, peer.pipe_half))
            if not self._handle(peer, peer.pipe_reader, received[:got]):  # type: ignore[arg-type]
                return
            if budget is None:
                return
            budget -= got
            if budget <= 0:
                return

    def _handle(self, peer: Peer, reader: _wire.FrameReader, data: bytes | memoryview) -> bool:
        """Cut ``data`` into frames and handle each; False if the peer was dropped or refused."""
        try:
            frames = reader.feed(data)
        except _wire.FrameError as exc:
            self._stats.bad_frames += 1
            self._dispatch.report(
                logging.ERROR, f"dropped the connection of {peer.describe()}: {exc}"
            )
            self.drop(peer)
            return False
        # Records and lines of a read go to the dispatcher together (adopt mode writes
        # a run of rendered lines under one lock); anything about the connection
        # first takes what came before it.
        records: list[list[Any]] = []
        for fields in frames:
            kind = fields[0]
            if type(kind) is int and kind not in _CONNECTION_KINDS:
                records.append(fields)
                continue
            if records:
                self._dispatch.frames(records, peer)
                records = []
            if kind is LINE_BLOCK:
                self._dispatch.block(fields[1], peer)
            elif kind is LINE_RUN:
                self._dispatch.lines(fields[1], peer)
            elif kind == _wire.HELLO:
                if not self._hello(peer, fields):
                    return False  # refused: the rest of what it sent is not read
            elif kind == _wire.FLUSH and len(fields) == 2:
                self._flush(peer.sock, fields[1])
            elif kind == _wire.LEAVING and len(fields) == 2:
                self._leaving(peer, fields[1])
            else:
                self._dispatch.frame(fields, peer)
        if records:
            self._dispatch.frames(records, peer)
        return True

    def _leaving(self, peer: Peer, request: Any) -> None:
        """Read the pipe of a process about to exit, write it to the sinks, and answer.

        Only its own pipe, not a barrier over every connection: at 64 processes
        a barrier read 64 pipes a few records each, for every process that left.
        """
        if peer.pipe is not None and (waiting := queued(peer.pipe)):
            self.read_pipe(peer, waiting)
        if self.table.get(peer.fd) is not peer:
            return  # dropped while its pipe was read
        self._dispatch.calls.flush_batched()  # in the file when it has exited, as before
        self.answer(peer.sock, self._encoder.frame([_wire.FLUSHED, request]))

    def _receive_hello(self, peer: Peer, received: memoryview, want: int) -> int:
        """Read a local peer's first bytes, and the pipe its HELLO may carry (protocol 4)."""
        got, pipe = receive_pipe(peer.sock, received[:want])
        if got < 0:
            # A descriptor it sent was dropped by the kernel (this process is out of
            # descriptors, or the peer sent more than a HELLO carries): its records
            # would wait in a pipe nobody reads.  Ending the connection tells it so; a
            # sender reads them back and tries again, or falls back.
            self._stats.bad_frames += 1
            self._dispatch.report(
                logging.ERROR,
                "dropped a connection: the descriptors it sent could not all be received "
                "(out of file descriptors, or more than its pipe); its process tries again",
            )
            return 0
        if pipe is not None:
            peer.pipe = pipe
            # At most PIPE_SIZE: the sender may have grown a full pipe already
            # (pipe.grow), and a bound from 1 MiB let 256 KiB reads nap 32 ms.
            peer.pipe_half = min(pipe_capacity(pipe), PIPE_SIZE) // 2
            peer.pipe_reader = type(peer.reader)(peer.reader.limit)
            self._selector.register(pipe, selectors.EVENT_READ, PipeEnd(peer))
            self._waker.register(peer.sock, selectors.EVENT_READ, peer)
        return got

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
        """Read, from every connection, at least what the kernel holds for it now (a barrier).

        Then read each one that is still ready: a connection that ended before
        the barrier (FIONREAD does not count an end of stream) is closed in it,
        its cut frame counted and reported before the flush() is answered.
        """
        for peer in list(self.table.values()):
            waiting = queued(peer.sock) if peer.nonce is None else 0
            if waiting:
                # TLS: FIONREAD counts encrypted bytes; read all there is.
                self.read(peer, RECV_SIZE * 64 if peer.tls else waiting)
            # After the socket: a HELLO read just now may have brought the pipe.
            if peer.pipe is not None and (waiting := queued(peer.pipe)):
                self.read_pipe(peer, waiting)
        for key, _ in self._selector.select(0):
            if type(key.data) is PipeEnd and self.table.get(key.data.peer.fd) is key.data.peer:
                self.read_pipe(key.data.peer)
            elif isinstance(key.data, Peer) and self.table.get(key.data.fd) is key.data:
                self.read(key.data)

    def answer(self, sock: socket.socket, frame: bytes) -> None:
        """Send ``frame`` to a peer; end it if it does not fit its socket at once.

        A process that asks and never reads must not wedge the writer.
        """
        try:
            sent = sock.send(frame)
        except BlockingIOError:
            sent = -1
        except OSError:
            # Gone before its answer (a process that gave up waiting at exit): its
            # end of stream is read in its turn, and closes it.
            return
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
            # A pipe is read for what it holds now, then closed: what its
            # process writes later is not lost, it reads that back itself
            # once the socket ends (``pipe``).
            if peer.pipe is not None:
                if waiting := queued(peer.pipe):
                    self.read_pipe(peer, waiting)
                self._close_pipe(peer)
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
        if peer.pipe is not None and not cut_ok:
            # Its end of stream: what the process wrote before it left is all in the
            # pipe (its write end closed with it), read before the socket closes.
            for _ in range(_MAX_DRAIN_READS):
                waiting = queued(peer.pipe)
                if not waiting or self.table.get(peer.fd) is not peer:
                    break
                self.read_pipe(peer, waiting)
        if self.table.get(peer.fd) is not peer:
            return  # dropped while its pipe was read
        self._close_pipe(peer, cut_ok=cut_ok)
        self._listeners.freed()
        self._gate.forget(peer)
        sock = peer.sock
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        del self.table[peer.fd]
        self._stats.connections_open -= 1
        if not cut_ok:
            self._report_cut(peer, peer.reader)
        sock.close()

    def _close_pipe(self, peer: Peer, *, cut_ok: bool = False) -> None:
        """Stop reading a peer's pipe (always before its socket closes: see ``pipe``)."""
        fd, reader = peer.pipe, peer.pipe_reader
        if fd is None:
            return
        peer.pipe = None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        with contextlib.suppress(KeyError, ValueError):
            self._waker.unregister(peer.sock)
        with contextlib.suppress(OSError):
            os.close(fd)
        if reader is not None and not cut_ok:
            self._report_cut(peer, reader)

    def _report_cut(self, peer: Peer, reader: _wire.FrameReader) -> None:
        """Count and report the cut frame ``reader`` holds at its stream's end, if any."""
        if reader.pending:  # that record's logging call never returned
            self._stats.cut_frames += 1
            self._dispatch.report(
                logging.WARNING,
                f"discarded {reader.pending} bytes of a cut frame from {peer.describe()}, "
                f"which ended in the middle of sending a record",
            )

    def close_all(self) -> None:
        """Close every connection (the loop's end)."""
        for peer in list(self.table.values()):
            self.close(peer)

    def forget(self) -> None:
        """Close every connection's descriptor in a forked child, where no writer thread runs."""
        for peer in list(self.table.values()):
            with contextlib.suppress(OSError):
                peer.sock.close()
            if peer.pipe is not None:
                with contextlib.suppress(OSError):
                    os.close(peer.pipe)
                peer.pipe = None
        self.table.clear()
