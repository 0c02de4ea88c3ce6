"""The syslog exporter: records to rsyslog, syslog-ng or any RFC 5424 collector, off the loop.

``install(syslog="tcp://host:port" | "udp://..." | "tls://...")`` adds a
``SyslogSink`` to the writer's sinks.  The writer calls it as any
``logging.Handler``; it turns the record into an RFC 5424 message
(``rfc5424``), frames it for its transport and hands the bytes to a bounded
queue.  Its own thread (``_Sender``) sends them: over TCP octet-counted (RFC
6587 §3.4.1), over TLS the same (RFC 5425 §4.3), over UDP one datagram each
(RFC 5426 §3.1).

Exporters never hold back the files.  ``emit`` never touches a socket and
never waits: when the queue is full (the collector is down, slow or
refusing) the record is dropped and counted (``exported_dropped``), and it
goes to ``handleError``, which the writer's ``SinkWatch`` replaces: the
first drop of an episode is said once on stderr, the drops are counted in
``Stats.unwritten`` (and ``Stats.exported_dropped``), and once the queue
takes records again the writer puts one WARNING record into every sink
("... writes again: resumed after N failed records").  Memory is bounded by
``queue_size`` messages and ``queue_bytes`` octets.

Who owns what: the caller that built a ``SyslogSink`` owns it (the installing
``Funnel`` in a thread host, the writer process in a process host) and
closes it.  The thread calling ``emit`` (under the handler's lock) only
encodes and appends to ``_queue``; the sender thread, started by the
constructor, owns the socket: it connects, sends, detects a collector that
went away, reconnects with a growing back-off and sleeps on ``_ready`` when
there is nothing to send.  ``_ready``'s lock guards ``_queue``, its byte count
and the flags.  ``close()`` waits up to ``drain_timeout`` for the queue to be
sent, then stops the thread; what is left is counted and said on stderr.  In a
forked child the object is inert: the sender thread is not there, and the
child never calls its parent's sinks.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import urllib.parse
from typing import TYPE_CHECKING, Final

from logfunnel._core.sink import Exporter, wait_sent
from logfunnel.sinks import rfc5424 as _rfc
from logfunnel.sinks.syslog_sender import SEND_TIMEOUT, Sender

if TYPE_CHECKING:
    import ssl

__all__ = ["ExportQueueFullError", "SyslogSink", "parse_url"]

#: RFC 5426 §3.2: a receiver SHOULD take datagrams of 2048 octets; longer ones are cut.
UDP_LIMIT: Final = 2048
#: The longest message over TCP or TLS (rsyslog's and syslog-ng's limits are settable).
STREAM_LIMIT: Final = 64 * 1024
DEFAULT_PORTS: Final = {"tcp": 514, "udp": 514, "tls": 6514}  # RFC 5426 §3.3, RFC 5425 §4.1


class ExportQueueFullError(OSError):
    """A record the syslog sink dropped: its queue was full (what ``handleError`` gets)."""


def parse_url(url: str) -> tuple[str, str, int]:
    """Return ``(transport, host, port)`` of ``tcp://``, ``udp://`` or ``tls://HOST[:PORT]``.

    Raises ``ValueError`` saying what to write instead.
    """
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = -1
    if (
        parts is None
        or parts.scheme not in DEFAULT_PORTS
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
    ):
        msg = (
            f"syslog={url!r}: give tcp://HOST:PORT (RFC 6587 octet counting), "
            f"udp://HOST:PORT or tls://HOST:PORT (RFC 5425), e.g. tcp://127.0.0.1:514"
        )
        raise ValueError(msg)
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


class SyslogSink(Exporter):
    """A handler that exports records as RFC 5424 messages, sent by a thread of its own."""

    def __init__(
        self,
        url: str,
        *,
        facility: str | int = "user",
        app_name: str | None = None,
        ca_file: str | None = None,
        queue_size: int = 10_000,
        queue_bytes: int = 16 * 1024 * 1024,
        drain_timeout: float = 2.0,
        level: int = logging.NOTSET,
    ) -> None:
        """Send to ``url``; see ``install(syslog=...)`` for the options.

        ``ca_file``: the CA certificates (PEM) a ``tls://`` collector is verified
        against (default: the system's).  ``queue_size``/``queue_bytes``: what
        may wait for the sender before records are dropped.
        """
        super().__init__(level)
        self.transport, self.host, self.port = parse_url(url)
        self.url = url
        code = facility if isinstance(facility, int) else _rfc.FACILITIES.get(facility, -1)
        if isinstance(code, bool) or not 0 <= code <= 23:
            msg = f"syslog_facility={facility!r}: give one of {', '.join(_rfc.FACILITIES)}"
            raise ValueError(msg)
        self._tls: ssl.SSLContext | None = None
        #: What a TLS stream raises when only part of a record came (none for TCP).
        self._want_read: tuple[type[OSError], ...] = ()
        if self.transport == "tls":
            import ssl  # noqa: PLC0415 - only a TLS exporter pays for importing ssl

            try:
                self._tls = ssl.create_default_context(cafile=ca_file)
            except (ssl.SSLError, OSError) as exc:
                msg = f"syslog_ca={ca_file!r}: not a PEM file of CA certificates ({exc})"
                raise ValueError(msg) from None
            self._want_read = (ssl.SSLWantReadError,)
        self._rfc = _rfc.Rfc5424(
            facility=code,
            app_name=app_name or program_name(),
            limit=UDP_LIMIT if self.transport == "udp" else STREAM_LIMIT,
        )
        self._stream = self.transport != "udp"
        self.queue_size, self.queue_bytes = queue_size, queue_bytes
        self.drain_timeout = drain_timeout
        self._ready = threading.Condition(threading.Lock())
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._closing = False
        self._sending = False  # the sender holds messages it took from the queue
        self._in_flight = 0  # how many: still counted in _queued_bytes until sent
        self._idle = False  # the sender waits for a record
        #: Records dropped: the queue was full, or not sent by ``close()``.
        self.exported_dropped = 0
        #: Messages the sender handed to the kernel.
        self.sent = 0
        #: Why the collector cannot be reached now (None: connected, or not tried).
        self.down: str | None = None
        self._pid = os.getpid()
        self._sender = threading.Thread(
            target=Sender(self).run, name=f"logfunnel-syslog {url}", daemon=True
        )
        self._sender.start()

    def __repr__(self) -> str:
        """Name the collector (the writer's reports say it)."""
        return f"<SyslogSink {self.url}>"

    def emit(self, record: logging.LogRecord) -> None:
        """Encode ``record`` and queue it for the sender; drop and count it if the queue is full."""
        try:
            data = self._rfc.encode(record)
            if self._stream:
                data = _rfc.octet_counted(data)
        except Exception:
            self.handleError(record)
            return
        with self._ready:
            if self._closing:  # closed: nobody sends any more
                self.exported_dropped += 1
                return
            # The bound counts what the sender holds too: a batch it takes and
            # puts back (a failed send) never makes room for a record.
            if len(self._queue) + self._in_flight < self.queue_size and (
                self._queued_bytes + len(data) <= self.queue_bytes or not self._queue
            ):
                self._queue.append(data)
                self._queued_bytes += len(data)
                self.landed += 1
                if self._idle:  # the sender sleeps until told (a notify costs when nobody waits)
                    self._ready.notify_all()
                return
            self.exported_dropped += 1
            why = self.down or "it takes them more slowly than records come"
        try:
            _full(
                f"queue full ({self.queue_size:,} messages or {self.queue_bytes:,} bytes): the "
                f"collector at {self.url}: {why}; records are dropped and counted"
            )
        except ExportQueueFullError:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Say a dropped record once per episode on stderr (the writer's watch replaces this)."""
        if isinstance(sys.exc_info()[1], ExportQueueFullError):
            if self.exported_dropped == 1 or self.exported_dropped % 100_000 == 0:
                print(f"logfunnel: {self!r}: {sys.exc_info()[1]}", file=sys.stderr)
            return
        super().handleError(record)

    def pending(self) -> int:
        """Return how many messages wait to be sent (queued, or taken by the sender)."""
        with self._ready:
            return len(self._queue) + (1 if self._sending else 0)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything queued was sent; True if it was.

        Never called by the writer loop (it must not wait for a collector).
        """
        return wait_sent(self._ready, self._sender, self._pending, timeout)

    def _pending(self) -> bool:
        return bool(self._queue or self._sending)

    def close(self) -> None:
        """Send what is queued (waiting at most ``drain_timeout``), then stop the sender."""
        if os.getpid() != self._pid:  # a forked child's copy: no sender thread here
            super().close()
            return
        self.drain(self.drain_timeout)
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        # A send under way ends within its socket timeout; the sender then stops.
        self._sender.join(SEND_TIMEOUT + 1.0)
        with self._ready:
            left = len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            self.exported_dropped += left
        if left:
            print(
                f"logfunnel: {self!r}: {left:,} records not sent at shutdown "
                f"(within {self.drain_timeout} s): {self.down or 'the collector was slow'}; "
                f"{self.exported_dropped:,} dropped in all",
                file=sys.stderr,
            )
        super().close()


def _full(message: str) -> None:
    """Raise the error ``handleError`` reads off ``sys.exc_info()`` (as logging's handlers do)."""
    raise ExportQueueFullError(message)


def program_name() -> str:
    """Return the APP-NAME default: the program's script or module name, else ``python``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name: str = spec.name
        return name.removesuffix(".__main__")
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-") else ""
    return os.path.basename(argv0) or "python"


def from_plain(options: dict[str, object] | None) -> list[logging.Handler]:
    """Build the sink ``Settings.syslog_options()`` describes (none for None)."""
    if options is None:
        return []
    url, facility = options.get("url"), options.get("facility", "user")
    app_name, ca_file = options.get("app_name"), options.get("ca_file")
    if (
        not isinstance(url, str)
        or not isinstance(facility, (str, int))
        or not isinstance(app_name, (str, type(None)))
        or not isinstance(ca_file, (str, type(None)))
    ):
        msg = f"syslog sink options {options!r}: not the plain values Settings gives"
        raise ValueError(msg)  # noqa: TRY004 - a ValueError is what a bad option raises
    return [SyslogSink(url, facility=facility, app_name=app_name, ca_file=ca_file)]
