"""The rotating file sink: a ``FileSink`` that rotates by size, time or both.

Who owns what: a ``RotatingFileSink`` owns its file, its rotated files (those
its ``Naming`` matches), and its ``Compressor`` (a worker thread).  It is used
by the writer's thread, and in a thread host also by the program's threads
under the handler's lock; the compressor's thread only compresses and applies
retention.  What to do is asked of strategies: ``rotation`` (when, which
name), ``retention`` (what to delete), ``compress`` (gzip off the loop).  This
module wires them to the write path: lines are counted as they are written and
the clock is compared with the period's end, never a ``stat`` per record.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from logfunnel._core.sink import LinesLostError
from logfunnel.sinks import compress as _compress
from logfunnel.sinks import retention as _retention
from logfunnel.sinks import rotation as _rotation
from logfunnel.sinks.files import _BATCH_BYTES, FileSink, LineFile
from logfunnel.sinks.options import FileOptions

__all__ = ["RotatingFileSink"]


class RotatingFileSink(FileSink):
    """A file sink that rotates by size, by time or both; keeps, expires and compresses.

    The stdlib's ``RotatingFileHandler.shouldRollover`` stats the path twice,
    formats the record again and seeks, for every record.  The writer is the
    file's only writer, so here the size is counted as lines are written (read
    once when the file is opened) and the time is compared with the end of the
    current period (``rotation.Schedule``): no system call per record.  A
    rotation flushes what is kept (it belongs to the old file), renames the
    file (``rotation.Naming``, never over an existing name), opens a new one,
    hands the old one to the compressor and applies retention.
    """

    def __init__(
        self, path: str, options: FileOptions, *, now: Callable[[], float] = time.time
    ) -> None:
        """Rotate ``path`` as ``options`` say; ``now`` is the clock (tests pass their own)."""
        base = os.path.abspath(path)
        self.max_bytes = options.size_limit
        self.schedule = (
            _rotation.Schedule(options.when, options.interval, utc=options.utc, now=now)
            if options.when is not None
            else None
        )
        self.naming: _rotation.Naming = (
            _rotation.TimeNaming(base, self.schedule)
            if self.schedule is not None
            else _rotation.ChainNaming(base)
        )
        self.retention = _retention.Retention(options.backups, options.max_age)
        self.compressor = (
            _compress.Compressor(self._expire) if options.compress == "gzip" else None
        )
        self._now = now
        self._size = 0
        self._period_start: float | None = None
        self._rollover_at = float("inf")
        super().__init__(base, encoding="utf-8", errors="backslashreplace", delay=True)
        self._start()

    def _start(self) -> None:
        """Finish what a crash left, find the file's period, rotate if it is over, expire."""
        if self.compressor is not None:
            for path in _compress.recover(_rotation.list_rotated(self.naming)):
                self.compressor.submit(path)
        now = self._now()
        try:
            stat: os.stat_result | None = os.stat(self.baseFilename)
        except FileNotFoundError:
            stat = None
        if self.schedule is not None:
            # concurrent-log-handler #81 (rollover never starts when the program
            # restarts often) and #79 (backups named 1969-12-31): the period is
            # that of the file's last record, not of this start.
            written = stat.st_mtime if stat is not None and stat.st_size > 0 else now
            self._period_start, self._rollover_at = self.schedule.period(written)
        self.stream = self._open()
        self._size = os.fstat(self.stream.fileno()).st_size
        if now >= self._rollover_at:  # its period ended while no writer ran
            self._rotate()
        else:
            self._expire()

    def write_line(self, text: str) -> None:
        """Write a line rendered with this sink's formatter, rotating first if it is time."""
        line = text + self.terminator
        data = None
        if line.isascii():
            size = len(line)
        else:  # encoded once, as the file will hold it (lone surrogates escaped, never raising)
            data = line.encode(self.encoding or "utf-8", self.errors or "strict")
            size = len(data)
        if (self.max_bytes and self._size > 0 and self._size + size >= self.max_bytes) or (
            self.schedule is not None and self._now() >= self._rollover_at
        ):
            self._rotate()
        stream = self.stream
        if stream is None:
            stream = self.stream = self._open()
        if data is not None and isinstance(stream, LineFile):
            stream.write_bytes(data)
        else:
            stream.write(line)
        self._size += size
        # Another thread's line goes out at once; the loop's when its batch is full.
        if (
            threading.get_ident() != self.batch_thread
            or getattr(stream, "pending", 0) >= _BATCH_BYTES
        ):
            self.flush()

    def write_lines(self, data: bytes, count: int) -> bool:
        """Keep a block of lines as one, unless it would rotate: then False, line by line.

        The block is written at one instant of the clock: a period that ends
        while it is written starts with the next block, or the next line.
        """
        size = len(data)
        if (self.max_bytes and self._size + size >= self.max_bytes) or (
            self.schedule is not None and self._now() >= self._rollover_at
        ):
            return False
        self._size += size  # first: a flush that fails in there counts its loss out
        try:
            written = super().write_lines(data, count)
        except Exception:
            self._size -= size
            raise
        if not written:
            self._size -= size
        return written

    def lines_lost(self, lost: LinesLostError) -> None:
        """Count out of the file's size what a full disk refused (``_flush_lines`` calls this)."""
        self._size = max(0, self._size - lost.lost_bytes)

    def _rotate(self) -> None:
        self.flush()  # closing a LineFile drops what it keeps: those lines are the old file's
        failed = False
        try:
            if self._size > 0:
                if self.compressor is not None and isinstance(
                    self.naming, _rotation.ChainNaming
                ):
                    self.compressor.wait_idle()  # the chain's names are about to shift
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None
                target = self.naming.target(self._period_start)
                if self.compressor is not None:
                    self.compressor.submit(target)
        except OSError as exc:  # the file stays, and is written on: nothing is lost
            failed = True
            print(f"logfunnel: cannot rotate {self.baseFilename}: {exc}", file=sys.stderr)
        finally:
            if self.schedule is not None:
                self._period_start, self._rollover_at = self.schedule.period(self._now())
            if self.stream is None:
                self.stream = self._open()
            self._size = 0 if failed else os.fstat(self.stream.fileno()).st_size
        self._expire()

    def _expire(self) -> None:
        """Apply retention (the writer's thread, or the compressor's after each file)."""
        busy = self.compressor.busy() if self.compressor is not None else ()
        _retention.apply(self.retention, self.naming, self._now(), busy)

    def close(self) -> None:
        """Close the file; let the compressor finish what it has (bounded), then stop it."""
        super().close()
        if self.compressor is not None:
            self.compressor.close(_COMPRESS_CLOSE_TIMEOUT)


#: ``close()`` waits this long for queued compressions; the rest is compressed at next start.
_COMPRESS_CLOSE_TIMEOUT: Final = 30.0
