"""The writer's listening sockets: accepting every connection, and backing off when it cannot.

The writer listens on a Unix socket, and on TCP when remote processes may
join (``listen="tcp:..."``).  When a listener is readable the loop takes every
pending connection (``accept``): a Unix one is a ``_gate.Peer`` at once, a TCP
one goes through the gate first (TLS, the challenge).

``accept()`` failing for want of descriptors or memory (EMFILE, ENFILE,
ENOBUFS, ENOMEM ...) leaves the connection in the backlog, so the listener
stays readable: selecting it again at once would spin.  The listener is left
out of ``select`` for a pause growing from ``ACCEPT_PAUSE_MIN`` to
``ACCEPT_PAUSE_MAX``, reported once per episode (at most once per
``_gate.REPORT_INTERVAL``) and once more when accepting works again;
connections already accepted are served meanwhile, new ones wait in the
backlog.  A connection closed frees a descriptor, so it ends every pause.

At the final drain the listeners are shut for everyone (a writer process's
supervisor holds them too) after, or before, taking what they queued.

Who owns what: one ``Listeners`` per ``Writer``, used only by the writer
thread.  It owns the listening sockets and their pauses, and registers and
unregisters the listeners (tagged ``LISTENER`` and ``TCP_LISTENER``) in the
loop's selector; the loop owns the selector and every accepted connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Final

from logfunnel._core.dispatch import Dispatcher
from logfunnel._core.gate import REPORT_INTERVAL, Gate, Peer

#: Selector tags of the listeners (compared with ``is``).
LISTENER: Final = "listener"
TCP_LISTENER: Final = "tcp listener"
# accept() failing with these leaves the connection in the backlog, so the
# listener stays readable: selecting it again at once would spin.  The writer
# stops selecting it for a pause that doubles from ACCEPT_PAUSE_MIN to
# ACCEPT_PAUSE_MAX, and accepts again when a timer in select's timeout ends.
ACCEPT_PAUSE_MIN: Final = 0.010
ACCEPT_PAUSE_MAX: Final = 1.0
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


class Pause:
    """A listener left out of ``select`` after ``accept()`` failed (EMFILE and the like)."""

    __slots__ = ("delay", "failures", "reported", "since", "until")

    def __init__(self, now: float, *, reported: bool) -> None:
        self.since = now
        self.failures = 1
        self.delay = ACCEPT_PAUSE_MIN
        self.until = now + self.delay
        #: Whether the start of this episode was written (then its end is too).
        self.reported = reported


class Listeners:
    """The Unix listener and the TCP one (if any): accepting, pausing, shutting."""

    def __init__(
        self,
        listener: socket.socket,
        tcp_listener: socket.socket | None,
        selector: selectors.BaseSelector,
        frame_limit: int,
        gate: Gate,
        dispatcher: Dispatcher,
    ) -> None:
        """Take over both listeners; a TCP connection is let in through ``gate``."""
        self._sockets = {LISTENER: listener, TCP_LISTENER: tcp_listener}
        self._selector = selector
        self._frame_limit = frame_limit
        self._gate = gate
        self._dispatch = dispatcher
        #: Listeners left out of select() after accept() failed, by selector tag.
        self.paused: dict[str, Pause] = {}
        self._reported: dict[str, float] = {}  # when an episode was last written
        self._unreported: dict[str, int] = {}  # episodes not written since

    def get(self, tag: str) -> socket.socket | None:
        """Return the listener of ``tag``, or None (no TCP listener)."""
        return self._sockets[tag]

    def register(self, tag: str) -> None:
        """Make a listener non-blocking and select it (at the start of the loop)."""
        listener = self._sockets[tag]
        if listener is not None:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, tag)

    def accept(
        self, tag: str, serving: int, *, retry: bool = False, force: bool = False
    ) -> list[Peer]:
        """Accept every pending connection of a listener; return the peers let in.

        ``serving``: the connections the loop serves, for a report.  A paused
        listener (see ``_failed``) is only tried again when its timer ends
        (``retry``), or in the final drain (``force``).
        """
        peers: list[Peer] = []
        listener = self._sockets[tag]
        if listener is None or listener.fileno() == -1:  # closed by the final drain
            return peers
        pause = self.paused.get(tag)
        if pause is not None and not (retry or force):
            return peers
        remote = tag is TCP_LISTENER
        accepted = 0
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION_ERRORS:
                    continue  # that connection is gone; the next one may be fine
                self._failed(tag, listener, exc, accepted, serving + len(peers), force=force)
                return peers
            accepted += 1
            sock.setblocking(False)
            peer = self._gate.admit(sock, address) if remote else Peer(sock, self._frame_limit)
            if peer is not None:
                peers.append(peer)
        if pause is not None:  # the backlog is empty and nothing failed: it works again
            self._recovered(tag, listener, pause)
        return peers

    def _describe(self, tag: str, listener: socket.socket) -> str:
        if tag is LISTENER:
            return "the Unix socket"
        try:
            host, port = listener.getsockname()[:2]
        except OSError:
            return "the TCP listener"
        return f"the TCP listener {host}:{port}"

    def _failed(
        self,
        tag: str,
        listener: socket.socket,
        exc: OSError,
        accepted: int,
        serving: int,
        *,
        force: bool,
    ) -> None:
        """Pause a listener whose accept() failed (EMFILE, ENFILE, ENOBUFS, ENOMEM ...).

        It is left out of select() for a pause that doubles up to
        ``ACCEPT_PAUSE_MAX`` (back to the shortest when some connections were
        accepted meanwhile), reported once per episode (and at most once per
        ``REPORT_INTERVAL``), and tried again when the loop finds the pause over.
        """
        self._dispatch.stats.accept_failures += 1
        now = time.monotonic()
        pause = self.paused.get(tag)
        if pause is not None:
            pause.failures += 1
            pause.delay = ACCEPT_PAUSE_MIN if accepted else min(pause.delay * 2, ACCEPT_PAUSE_MAX)
            pause.until = now + pause.delay
            return
        if force:  # the final drain: it stops accepting anyway
            return
        report = now - self._reported.get(tag, -REPORT_INTERVAL) >= REPORT_INTERVAL
        self.paused[tag] = Pause(now, reported=report)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(listener)
        if not report:
            self._unreported[tag] = self._unreported.get(tag, 0) + 1
            return
        self._reported[tag] = now
        earlier = self._unreported.pop(tag, 0)
        note = f" ({earlier} more such episodes since the last report)" if earlier else ""
        self._dispatch.report(
            logging.WARNING,
            f"cannot accept connections on {self._describe(tag, listener)}: {exc}; "
            f"serving the {serving} it has, new ones wait in the backlog; trying "
            f"again after a pause growing to {ACCEPT_PAUSE_MAX:.0f} s{note}",
        )

    def _recovered(self, tag: str, listener: socket.socket, pause: Pause) -> None:
        del self.paused[tag]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.register(listener, selectors.EVENT_READ, tag)
        if pause.reported:
            self._dispatch.report(
                logging.WARNING,
                f"accepting connections on {self._describe(tag, listener)} again, "
                f"after {pause.failures} failed attempts in "
                f"{time.monotonic() - pause.since:.1f} s",
            )

    def due(self) -> list[float]:
        """Return when the paused listeners are to be tried again (timers of the loop's)."""
        return [pause.until for pause in self.paused.values()]

    def freed(self) -> None:
        """End every pause: a connection closed, so a descriptor is free and accept() may work."""
        for pause in self.paused.values():
            pause.until = 0.0

    def shut(self, tag: str, accept: Callable[[], None]) -> None:
        """Refuse new connections on a listener for everyone, ``accept`` what it queued, close it.

        shutdown(), not just close(): a writer process's supervisor holds
        this listening socket too, and it must refuse connections for
        everyone.  A Unix listener's queued connections can still be accepted
        after it (Linux); a TCP listener's cannot (EINVAL), and it drops its
        backlog on shutdown: those are taken first.
        """
        listener = self._sockets[tag]
        if listener is None:
            return
        remote = tag is TCP_LISTENER
        if remote:
            accept()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        if not remote:
            accept()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(listener)
        with contextlib.suppress(OSError):
            listener.close()

    def close(self) -> None:
        """Close both listeners (the loop's end, or a forked child forgetting the writer)."""
        for listener in self._sockets.values():
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.close()
