"""What-if patches: candidate src/ changes, applied at run time to measure them end to end.

Nothing here is part of logfunnel.  ``_one.py --patch NAME[,NAME]`` applies these in
the parent of a ``logfunnel-thread`` run after ``install()`` (forked workers inherit
them), so the gain of a proposed change can be measured before anyone edits src/.
Each patch mirrors a recommendation in the benchmark report:

* ``batchflush``: the file sink writes without flushing per record; the writer
  flushes once after each read batch (``Writer._read``) and at every barrier.
* ``asctime``: the sink's formatter caches ``formatTime`` per second of ``created``.
* ``sndbuf``: each worker's socket gets a 4 MiB send buffer (``SO_SNDBUF``).

(A ``decode`` patch, a fast path of ``decode_record`` for a common record, is
gone: since protocol 2 the real ``decode_record`` checks the types with one set
lookup and copies the site and thread fields with ``dict.update``, and it is
faster than that fast path adapted to the new layout.)
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from logfunnel._core import connection as _connection
from logfunnel._core import writer as _writer


class _BatchFileHandler(logging.FileHandler):
    """A FileHandler whose emit leaves flushing to the writer loop."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


def _file_connections() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def batchflush() -> None:
    handlers = _file_connections()
    for h in handlers:
        h.__class__ = _BatchFileHandler
    original = _writer.Writer._read

    def read_then_flush(self: _writer.Writer, peer: Any, budget: int | None = None) -> None:
        original(self, peer, budget)
        for h in handlers:
            h.flush()

    _writer.Writer._read = read_then_flush  # type: ignore[method-assign]


def asctime() -> None:
    for h in _file_connections():
        fmt = h.formatter
        if fmt is None:
            continue
        cache: dict[int, str] = {}
        original = fmt.formatTime

        def format_time(record: logging.LogRecord, datefmt: str | None = None,
                        fmt: logging.Formatter = fmt, cache: dict[int, str] = cache,
                        original: Any = original) -> str:
            if datefmt:
                return str(original(record, datefmt))
            second = int(record.created)
            text = cache.get(second)
            if text is None:
                cache.clear()  # one entry: records arrive roughly in time order
                text = cache[second] = time.strftime(fmt.default_time_format,
                                                     fmt.converter(record.created))
            return (fmt.default_msec_format or "%s,%03d") % (text, record.msecs)

        fmt.formatTime = format_time  # type: ignore[method-assign]


def sndbuf() -> None:
    original = _connection.connect

    def connect(address: str, timeout: float = 5.0) -> socket.socket:
        sock = original(address, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        return sock

    _connection.connect = connect


PATCHES = {"batchflush": batchflush, "asctime": asctime, "sndbuf": sndbuf}


def apply(names: str) -> None:
    for name in filter(None, names.split(",")):
        PATCHES[name]()
