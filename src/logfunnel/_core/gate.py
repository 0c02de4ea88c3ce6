"""The gate: what a TCP connection must do before the writer reads a record from it.

A connection on the Unix socket is let in at once: the socket is in a 0700
directory, so only this user's processes reach it.  Anyone who can reach the
TCP port can connect, so a TCP connection is let in only once it proves the
token (``_auth``): the writer sends a nonce and reads ``ANSWER_SIZE`` bytes
back before it takes one frame; over TLS (``tls_context``) the handshake
comes first, and handshake and answer share one deadline
(``_auth.ANSWER_TIMEOUT``).  A connection that answers wrong, too late, or
not at all is closed and counted (``Stats.refused``).

Anyone may cause refusals, so they must not fill the user's log: the first is
written into the sinks, the next are counted and summarised in one line at
most once per ``REPORT_INTERVAL`` (and at a barrier and at shutdown, so the
count is there after ``flush()``).

Who owns what: one ``Gate`` per ``Writer``, used only by the writer thread.
It holds the connections still proving the token (by descriptor) and the
refusal counts.  ``_peers.Peers`` owns every ``Peer`` and its socket once
accepted; the gate closes one only through the ``close`` it was given.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from logfunnel._core import auth as _auth
from logfunnel._core import wire as _wire
from logfunnel._core.dispatch import Dispatcher

# Events anyone may cause (a TCP connection that does not prove the token, an
# accept that fails) are written into the sinks at most once per interval, the
# rest counted and summarised, so they cannot fill the user's log.
REPORT_INTERVAL: Final = 60.0


class Peer:
    """One connected process, as the writer sees it."""

    __slots__ = (
        "answer",
        "deadline",
        "fd",
        "handshaking",
        "name",
        "nonce",
        "pid",
        "pipe",
        "pipe_half",
        "pipe_reader",
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
        #: The read end of the pipe its frames come over after its HELLO (``pipe``), and
        #: the reader of that stream; None: they come over the socket.
        self.pipe: int | None = None
        self.pipe_reader: _wire.FrameReader | None = None
        #: Half of what its pipe holds (``nap.pipe_fill``).
        self.pipe_half = 32 * 1024
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


def would_block(exc: OSError) -> bool:
    """Return True for "try again later" from a plain or a TLS socket."""
    if isinstance(exc, (BlockingIOError, InterruptedError)):
        return True
    # ssl.SSLWantReadError / SSLWantWriteError, without importing ssl for everyone.
    return type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError")


def _where(address: Any) -> str:
    """Return ``host:port`` of a TCP peer's address (as ``accept()`` gives it), or ``?``."""
    try:
        host, port = address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


def tls_context(cert: str | None, key: str | None) -> Any:
    """Return a server ``ssl.SSLContext`` for ``cert`` (and ``key``), or None without one."""
    if not cert:
        return None
    import ssl  # noqa: PLC0415 - only funnels that listen with TLS need it

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    return context


class Gate:
    """Let TCP connections in once they prove the token; count and summarise refusals."""

    def __init__(
        self,
        token: str | None,
        tls: Any,
        frame_limit: int,
        dispatcher: Dispatcher,
        close: Callable[[Peer], None],
    ) -> None:
        """``tls``: an ``ssl.SSLContext`` or None; ``close(peer)``: the loop ends a connection."""
        self._token = token or ""
        self._tls = tls
        self._frame_limit = frame_limit
        self._dispatch = dispatcher
        self._stats = dispatcher.stats
        self._close = close
        #: Peers that have not answered their challenge yet, by descriptor.
        self._pending: dict[int, Peer] = {}
        self._refusals_unreported = 0
        self._refusal_last = ""
        self._refusal_reported_at = -REPORT_INTERVAL

    def admit(self, sock: socket.socket, address: Any) -> Peer | None:
        """Return the peer of a new TCP connection, challenged; None if it is closed already."""
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                sock.close()
                return None
        peer = Peer(sock, self._frame_limit)
        peer.where = _where(address)
        return peer if self._challenge(peer) else None

    @property
    def challenged(self) -> bool:
        """Whether a peer has still to answer its challenge (then select() wakes each second)."""
        return bool(self._pending)

    def forget(self, peer: Peer) -> None:
        """Stop waiting for ``peer``'s answer: the loop closed it."""
        self._pending.pop(peer.fd, None)

    def _challenge(self, peer: Peer) -> bool:
        """Send a new TCP peer its nonce; False if it could not even be sent.

        Over TLS the nonce goes once the handshake is done (see ``handshake``);
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
        self._pending[peer.fd] = peer
        return True

    def handshake(self, peer: Peer) -> bool:
        """Advance a TLS handshake; True once it is done and the nonce is sent."""
        try:
            peer.sock.do_handshake()  # type: ignore[attr-defined]
            peer.handshaking = False
            assert peer.nonce is not None
            peer.sock.send(peer.nonce)
        except OSError as exc:
            if would_block(exc):
                return False
            self.refuse(peer, f"TLS handshake failed: {exc}")
            return False
        return True

    def check_answer(self, peer: Peer, data: bytes) -> bytes | None:
        """Take the answer from a challenged peer's first bytes; return what follows it.

        ``b""``: the answer is not complete yet; None: the peer was refused or is gone.
        """
        assert peer.nonce is not None
        needed = _auth.ANSWER_SIZE - len(peer.answer)
        peer.answer += data[:needed]
        if len(peer.answer) < _auth.ANSWER_SIZE:
            return b""
        if not _auth.check(self._token, peer.nonce, peer.answer):
            self.refuse(peer, "wrong token")
            return None
        peer.nonce, peer.answer = None, b""
        self._pending.pop(peer.fd, None)
        try:
            peer.sock.send(_auth.ACCEPTED)  # one byte into an idle socket: never partial
        except OSError:
            self._close(peer)
            return None
        return data[needed:]

    def expire_challenges(self) -> None:
        """Refuse the peers whose deadline to answer has passed."""
        now = time.monotonic()
        for peer in list(self._pending.values()):
            if now > peer.deadline:
                self.refuse(peer, f"no answer to the challenge in {_auth.ANSWER_TIMEOUT:.0f} s")

    def refuse(self, peer: Peer, why: str) -> None:
        """Close a peer that did not prove the token, and count it."""
        self._close(peer)
        self._refused(peer.where, why)

    def _refused(self, where: str, why: str) -> None:
        """Count a refused TCP connection; write the first, summarise the others."""
        self._stats.refused += 1
        now = time.monotonic()
        if not self._refusals_unreported and now - self._refusal_reported_at >= REPORT_INTERVAL:
            self._refusal_reported_at = now
            self._dispatch.report(
                logging.WARNING,
                f"refused a TCP connection from {where}: {why} (the next refusals are "
                f"counted and summarised at most once a minute)",
            )
            return
        self._refusals_unreported += 1
        self._refusal_last = f"{where}: {why}"

    def due(self) -> list[float]:
        """Return when the next summary of refusals is due (a timer of the loop's), if any."""
        if self._refusals_unreported:
            return [self._refusal_reported_at + REPORT_INTERVAL]
        return []

    def summarise_if_due(self, now: float) -> None:
        """Write the summary of the refusals not written yet once its interval is over."""
        if self._refusals_unreported and now >= self._refusal_reported_at + REPORT_INTERVAL:
            self.report_refusals()

    def report_refusals(self) -> None:
        """Write the summary of the refusals not written yet, if any."""
        count = self._refusals_unreported
        if not count:
            return
        now = time.monotonic()
        self._dispatch.report(
            logging.WARNING,
            f"refused {count:,} more TCP connections in the last "
            f"{now - self._refusal_reported_at:.0f} s (the last from {self._refusal_last}); "
            f"{self._stats.refused:,} refused since the writer started",
        )
        self._refusals_unreported = 0
        self._refusal_reported_at = now
