"""The syslog sink's sender thread: the one owner of the socket to the collector.

Who owns what: one ``Sender`` per ``syslog.SyslogSink``, run by the thread the
sink starts.  It owns the socket (connect, TLS handshake, send, close) and
its back-off; it shares the sink's queue, byte count and flags under the
sink's ``_ready`` condition, and never holds that lock while it waits on the
network.  A batch it took stays counted against the queue's bound until it
was sent (``_in_flight``), so a failed send that puts it back never makes
room for records meanwhile; a collector that is down is retried after a
back-off of 0.1 s doubling to 5 s, and records queued during it wake the
thread without shortening it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import collections
    import ssl
    import threading

__all__ = ["SEND_TIMEOUT", "Sender", "SinkQueue"]

_BACKOFF_FIRST: Final = 0.1
_BACKOFF_MAX: Final = 5.0
#: A send that makes no progress this long means a stuck collector: reconnect.
SEND_TIMEOUT: Final = 5.0
#: Bytes sent in one go (several messages joined: one system call).
_BATCH_BYTES: Final = 256 * 1024
#: How long the sender waits for more records once one came (seconds): latency it adds.
_LINGER: Final = 0.002


class SinkQueue(Protocol):
    """What a ``Sender`` shares with its sink (``syslog.SyslogSink``): the queue and its state.

    A protocol, not an import of the sink: the sink module builds its sender,
    so the sender names only what it touches, all under ``_ready``.
    """

    host: str
    port: int
    down: str | None
    sent: int
    _ready: threading.Condition
    _queue: collections.deque[bytes]
    _queued_bytes: int
    _in_flight: int
    _sending: bool
    _closing: bool
    _idle: bool
    _stream: bool
    _tls: ssl.SSLContext | None
    _want_read: tuple[type[OSError], ...]


class Sender:
    """The sink's thread: owns the socket; takes batches from the queue and sends them."""

    def __init__(self, sink: SinkQueue) -> None:
        """Send ``sink``'s queue; nothing is connected until the first batch."""
        self.sink = sink
        self.sock: socket.socket | None = None
        self.backoff = _BACKOFF_FIRST
        self.retry_at = 0.0

    def run(self) -> None:
        """Send until the sink closes: take a batch, send it, or put it back and wait."""
        sink = self.sink
        ready = sink._ready
        batch: list[bytes] = []
        while True:
            with ready:
                if batch:  # sent: the room is free now, and drain() may be waiting
                    sink._queued_bytes -= sum(map(len, batch))
                    sink._in_flight = 0
                    sink._sending = False
                    ready.notify_all()
                woken = False
                while not sink._queue and not sink._closing:
                    sink._idle = woken = True
                    ready.wait()
                sink._idle = False
                if woken and not sink._closing and sink._queued_bytes < _BATCH_BYTES:
                    # Linger once after a wake-up: records that come meanwhile do not
                    # wake this thread (_idle is False), so a busy writer does not hand
                    # the GIL over at every record, and one send takes them all.
                    ready.wait(_LINGER)
                if sink._closing:
                    break
                batch = self._take()
                sink._sending = True
            done = self._send(batch)
            if done < len(batch):
                with ready:  # back at the front, oldest first; the next try after the back-off
                    sink._queued_bytes -= sum(map(len, batch[:done]))
                    sink._queue.extendleft(reversed(batch[done:]))
                    sink._in_flight = 0
                    sink._sending = False
                    ready.notify_all()
                    # Records queued meanwhile wake this: wait the back-off out all the same.
                    while not sink._closing and (left := self.retry_at - time.monotonic()) > 0:
                        ready.wait(left)
                batch = []
        self._close()

    def _take(self) -> list[bytes]:
        """Take messages off the queue, up to ``_BATCH_BYTES``, under the lock."""
        queue = self.sink._queue
        batch = [queue.popleft()]
        size = len(batch[0])
        while queue and size + len(queue[0]) <= _BATCH_BYTES:
            size += len(queue[0])
            batch.append(queue.popleft())
        self.sink._in_flight = len(batch)
        return batch

    def _send(self, batch: list[bytes]) -> int:
        """Send ``batch``; return how many messages went (fewer: socket closed, back-off set).

        A stream's batch goes in one ``sendall``: when it fails, how much of it
        the collector got is unknown, so all of it is sent again (RFC 6587's
        receiver discards a message cut by the connection's end).  Datagrams go
        one by one, so only those not sent are kept.
        """
        sink = self.sink
        if time.monotonic() < self.retry_at:
            return 0
        done = 0
        try:
            sock = self.sock if self.sock is not None and self._alive() else self._connect()
            if sink._stream:
                sock.sendall(b"".join(batch))
                done = len(batch)
            else:
                for message in batch:
                    sock.send(message)
                    done += 1
        except Exception as exc:  # OSError (ssl.SSLError too), or anything: the thread goes on
            self._close()
            sink.down = f"{type(exc).__name__}: {exc}"
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, _BACKOFF_MAX)
            sink.sent += done
            return done
        sink.sent += done
        sink.down = None
        self.backoff = _BACKOFF_FIRST
        return done

    def _connect(self) -> socket.socket:
        sink = self.sink
        kind = socket.SOCK_STREAM if sink._stream else socket.SOCK_DGRAM
        infos = socket.getaddrinfo(sink.host, sink.port, type=kind)
        family, _, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(address)  # UDP: only fixes the peer; nothing is sent
            if sink._tls is not None:
                sock = sink._tls.wrap_socket(sock, server_hostname=sink.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return sock

    def _alive(self) -> bool:
        """Tell whether the stream is still open: a collector sends nothing, so readable is EOF.

        RFC 6587 and RFC 5425 have no acknowledgement: a collector that died
        is seen when the kernel reports its FIN or RST, checked before each
        batch, so what was sent in between is lost uncounted (docs/guarantees.md).
        """
        sock = self.sock
        if sock is None or not self.sink._stream:
            return sock is not None
        try:
            # poll(), not select(): a writer with many peers has descriptors above
            # FD_SETSIZE (1024), which select() refuses.
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if not poller.poll(0):
                return True
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.settimeout(SEND_TIMEOUT)
        except self.sink._want_read:
            return True  # part of a TLS record (a renegotiation, a ticket): still open
        except OSError:
            data = b""
        if data:
            return True  # something a collector sent unasked: ignored
        self._close()
        return False

    def _close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
