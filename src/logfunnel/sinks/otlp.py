"""OTLP/HTTP export: records as OpenTelemetry LogRecords, POSTed by a thread of the sink's own.

``install(otlp="http://collector:4318")`` adds an ``OtlpSink`` to the writer's
sinks.  The writer's loop only turns a record into a small tuple of plain
values and appends it to a bounded queue (``emit``): it never waits for the
collector.  The sink's sender thread takes up to ``batch_size`` records at a
time (or what came within ``flush_interval``), builds an
``ExportLogsServiceRequest`` (``opentelemetry-proto``; not the SDK), gzips it
and POSTs it to ``/v1/logs``.  A 429, 502, 503 or 504, or a collector that
cannot be reached, is retried with a back-off of 0.5 s doubling to 30 s
(``Retry-After`` honoured); the batch stays counted against the queue's bound
meanwhile, so memory stays bounded, and records that do not fit are dropped
and counted (``Stats.exported_dropped``, reported once by the writer).  A
collector that refuses a batch for good (another 4xx) costs that batch,
counted.  ``close()`` sends what is queued within ``drain_timeout``.

Who owns what: the queue and the counters belong to the sink, under its
``_ready`` condition; the HTTP connection belongs to the sender thread alone.

Attributes follow OpenTelemetry's semantic conventions where one exists
(``code.filepath``, ``code.lineno``, ``code.function``, ``thread.id``,
``thread.name``, ``process.pid``, ``exception.stacktrace``); ``logger.name``,
``process.name`` and ``logfunnel.stack`` are logfunnel's, and every extra is
an attribute of its own name.  The resource carries ``service.name`` (the
program's name) and ``host.name``.
"""

from __future__ import annotations

import collections
import gzip
import http.client
import logging
import os
import socket
import threading
import time
import urllib.parse
from typing import Any, Final

from logfunnel._core.plain import STANDARD_ATTRS, get_message, safe_repr
from logfunnel._core.sink import Exporter, wait_sent

__all__ = ["OtlpSink", "parse_endpoint", "severity_number"]

_BACKOFF_FIRST: Final = 0.5
_BACKOFF_MAX: Final = 30.0
_RETRY_STATUS: Final = frozenset({429, 502, 503, 504})
_TIMEOUT: Final = 10.0
#: Python's levels as OpenTelemetry SeverityNumber (logs data model: DEBUG 5, INFO 9,
#: WARN 13, ERROR 17, FATAL 21); a level between two takes the lower one's range.
_SEVERITIES: Final = (
    (logging.CRITICAL, 21),
    (logging.ERROR, 17),
    (logging.WARNING, 13),
    (logging.INFO, 9),
    (logging.DEBUG, 5),
    (1, 1),
)
_SKIPPED: Final = STANDARD_ATTRS | {"message", "asctime"}

#: One record as the sender needs it: (time ns, severity number, level name, body,
#: attributes), plain values only, taken in the writer's loop.
Item = tuple[int, int, str, str, list[tuple[str, Any]]]


def severity_number(levelno: int) -> int:
    """Return the OpenTelemetry SeverityNumber of a Python level (0: unspecified)."""
    for level, number in _SEVERITIES:
        if levelno >= level:
            return number
    return 0


def parse_endpoint(url: str) -> tuple[str, str, int, str]:
    """Return ``(scheme, host, port, path)`` of an OTLP/HTTP endpoint, or raise ``ValueError``."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = -1
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        msg = f"otlp={url!r}: give the collector's OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318"
        raise ValueError(msg)
    path = parts.path.rstrip("/") or ""
    path = path if path.endswith("/v1/logs") else path + "/v1/logs"
    return parts.scheme, parts.hostname, port or (4318 if parts.scheme == "http" else 443), path


class OtlpSink(Exporter):
    """A handler that exports records to an OTLP/HTTP collector from a thread of its own."""

    def __init__(
        self,
        url: str,
        *,
        service_name: str,
        queue_size: int = 20_000,
        batch_size: int = 512,
        flush_interval: float = 1.0,
        drain_timeout: float = 5.0,
        level: int = logging.NOTSET,
    ) -> None:
        """Export to ``url``; see the module doc for what is sent and when."""
        super().__init__(level)
        self.url = url
        self.scheme, self.host, self.port, self.path = parse_endpoint(url)
        self.service_name = service_name
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_interval, self.drain_timeout = flush_interval, drain_timeout
        self._ready = threading.Condition(threading.Lock())
        self._queue: collections.deque[Item] = collections.deque()
        self._in_flight = 0  # taken by the sender, still counted against the bound
        self._closing = False
        self._idle = False  # the sender waits for a first record
        #: A batch the collector refused for good, to be said by the next emit().
        self._refused: str | None = None
        #: Batches the collector accepted, and records in them.
        self.sent_batches = self.sent = 0
        #: Why the collector cannot take records now (None: it could last time).
        self.down: str | None = None
        self._pid = os.getpid()
        self._sender = threading.Thread(target=self._run, name=f"logfunnel-otlp {url}", daemon=True)
        self._sender.start()

    def __repr__(self) -> str:
        """Name the collector (the writer's reports say it)."""
        return f"<OtlpSink {self.url}>"

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for the sender as plain values; drop and count it when full."""
        try:
            item = _item(record)
        except Exception:
            self.handleError(record)
            return
        with self._ready:
            refused, self._refused = self._refused, None
            if not self._closing and len(self._queue) + self._in_flight < self.queue_size:
                self._queue.append(item)
                self.landed += 1
                if self._idle or len(self._queue) >= self.batch_size:
                    self._ready.notify_all()
                if refused is None:
                    return
            else:
                self.exported_dropped += 1
            why = self.down or "it takes them more slowly than records come"
        # Said here, on the writer's thread, where its watch reports it once per episode.
        message = refused or f"queue full ({self.queue_size:,} records): {self.url}: {why}"
        try:
            _full(message)
        except QueueFullError:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Say a dropped record once per 100,000 on stderr (the writer's watch replaces this)."""
        if self.exported_dropped == 1 or self.exported_dropped % 100_000 == 0:
            super().handleError(record)

    # -- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff, connection = _BACKOFF_FIRST, None
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._ready.wait()  # emit() wakes it
                self._idle = False
                if not self._queue:
                    return  # closing, and nothing is left
                # Gather a batch for at most flush_interval (a busy writer fills it sooner).
                deadline = time.monotonic() + self.flush_interval
                while len(self._queue) < self.batch_size and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                size = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                self._in_flight = len(batch)
            body = gzip.compress(self._request(batch), compresslevel=5)
            while True:
                connection, status, retry_after = self._post(connection, body)
                if status is not None and 200 <= status < 300:
                    outcome, backoff = "sent", _BACKOFF_FIRST
                    break
                if status is not None and status not in _RETRY_STATUS:
                    outcome = "refused"  # for good: another try would be refused too
                    break
                with self._ready:
                    if self._closing and time.monotonic() > self._close_deadline:
                        outcome = "unsent"
                        break
                    # The back-off between attempts; close() cuts it short.
                    self._ready.wait(max(backoff, retry_after))
                backoff = min(backoff * 2, _BACKOFF_MAX)
            with self._ready:
                self._in_flight = 0
                if outcome == "sent":
                    self.sent_batches += 1
                    self.sent += len(batch)
                    self.down = None
                else:
                    self.exported_dropped += len(batch)
                    if outcome == "refused":
                        self._refused = (
                            f"{len(batch):,} records refused by the collector at {self.url} "
                            f"({self.down}): dropped"
                        )
                self._ready.notify_all()

    _close_deadline = 0.0

    def _post(
        self, connection: http.client.HTTPConnection | None, body: bytes
    ) -> tuple[http.client.HTTPConnection | None, int | None, float]:
        """POST one batch; return the connection to keep, the status (None: none), Retry-After."""
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        try:
            if connection is None:
                https = self.scheme == "https"
                kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
                connection = kind(self.host, self.port, timeout=_TIMEOUT)
            connection.request("POST", self.path, body, headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            with self._ready:
                self.down = f"{type(exc).__name__}: {exc}"
            if connection is not None:
                connection.close()
            return None, None, 0.0
        if response.status >= 300:
            with self._ready:
                self.down = f"HTTP {response.status} {response.reason}"
        retry = response.getheader("Retry-After") or "0"
        return connection, response.status, float(retry) if retry.isdigit() else 0.0

    def _request(self, batch: list[Item]) -> bytes:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: PLC0415
        from opentelemetry.proto.logs.v1 import logs_pb2  # noqa: PLC0415
        from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: PLC0415

        records = [
            logs_pb2.LogRecord(
                time_unix_nano=ns,
                observed_time_unix_nano=ns,
                severity_number=number,  # type: ignore[arg-type] # an int of the enum
                severity_text=name,
                body=_value(body),
                attributes=_attributes(attributes),
            )
            for ns, number, name, body, attributes in batch
        ]
        resource = resource_pb2.Resource(attributes=_attributes(
            [("service.name", self.service_name), ("host.name", socket.gethostname())]
        ))  # fmt: skip
        scope = logs_pb2.ScopeLogs(log_records=records)
        request = logs_service_pb2.ExportLogsServiceRequest(
            resource_logs=[logs_pb2.ResourceLogs(resource=resource, scope_logs=[scope])]
        )
        data: bytes = request.SerializeToString()
        return data

    # -- shutdown -----------------------------------------------------------------------

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until everything queued was sent (or given up); True if sent."""
        return wait_sent(self._ready, self._sender, self._pending, timeout)

    def _pending(self) -> bool:
        return bool(self._queue or self._in_flight)

    def close(self) -> None:
        """Send what is queued (within ``drain_timeout``), then stop the sender; count the rest."""
        if os.getpid() != self._pid:  # a forked child's copy: no sender thread here
            super().close()
            return
        with self._ready:
            self._closing = True
            self._close_deadline = time.monotonic() + self.drain_timeout
            self._ready.notify_all()
        self._sender.join(self.drain_timeout + _TIMEOUT + 1.0)
        with self._ready:
            left = len(self._queue)
            self._queue.clear()
            self.exported_dropped += left
        super().close()


class QueueFullError(OSError):
    """A record the OTLP sink dropped: its queue was full (what ``handleError`` gets)."""


def _full(message: str) -> None:
    """Raise the error ``handleError`` reads off ``sys.exc_info()`` (as logging's handlers do)."""
    raise QueueFullError(message)


def _item(record: logging.LogRecord) -> Item:
    attributes: list[tuple[str, Any]] = [
        ("logger.name", record.name),
        ("code.filepath", record.pathname),
        ("code.lineno", record.lineno),
        ("code.function", record.funcName),
        ("thread.id", record.thread),
        ("thread.name", record.threadName),
        ("process.pid", record.process),
        ("process.name", record.processName),
    ]
    if record.exc_text:
        attributes.append(("exception.stacktrace", record.exc_text))
    if record.stack_info:
        attributes.append(("logfunnel.stack", record.stack_info))
    attributes += [(k, v) for k, v in record.__dict__.items() if k not in _SKIPPED]
    ns = int(record.created * 1e9)
    return ns, severity_number(record.levelno), record.levelname, get_message(record), attributes


def _attributes(pairs: list[tuple[str, Any]]) -> list[Any]:
    from opentelemetry.proto.common.v1 import common_pb2  # noqa: PLC0415

    return [common_pb2.KeyValue(key=str(k), value=_value(v)) for k, v in pairs if v is not None]


def _value(value: Any) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2  # noqa: PLC0415

    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    return common_pb2.AnyValue(string_value=safe_repr(value, 10_000))


def from_plain(options: dict[str, object]) -> list[logging.Handler]:
    """Build the sink ``Settings.exporters()["otlp"]`` describes."""
    url, service = options.get("url"), options.get("service_name")
    if not isinstance(url, str) or not isinstance(service, str):
        msg = f"OTLP sink options {options!r}: not the plain values Settings gives"
        raise ValueError(msg)  # noqa: TRY004 - a ValueError is what a bad option raises
    return [OtlpSink(url, service_name=service)]
