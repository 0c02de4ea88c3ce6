"""The file sink, and how lines reach its file.

Who owns what: a ``FileSink`` owns its file and is used by the writer's
thread (and, in a thread host, the program's threads, under the handler's
lock).  ``build.build_handlers`` makes the sinks from ``FileOptions``; the
caller owns them (the installing ``Funnel``, or a writer process).  The rotating sink
is ``rotating.RotatingFileSink``, which delegates to strategies of their own
modules: ``rotation`` (when, and which name), ``retention`` (what to delete),
``compress`` (gzip in a worker thread).
"""

from __future__ import annotations

import contextlib
import locale
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from logfunnel._core.formatters import DEFAULT_FORMAT, JsonFormatter, LineFormatter
from logfunnel._core.sink import LineSink, LinesLostError
from logfunnel.sinks.options import FileOptions

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_FORMAT",
    "FileOptions",
    "FileSink",
    "JsonFormatter",
    "LineFormatter",
    "LinesLostError",
]

#: A file sink's pending lines are written once they reach this many bytes,
#: even in the middle of a batch of the writer loop (bounds its memory).
_BATCH_BYTES: Final = 64 * 1024
# What a block of lines (``write_lines``) holds: the only file a block is written to as it is.
_UTF8_LF: Final = ("utf-8", "\n")


class LineFile:
    """The stream of a file sink: whole lines straight to a file descriptor, no hidden buffer.

    ``io.TextIOWrapper`` over a ``BufferedWriter`` keeps bytes whose
    ``write()`` failed (ENOSPC) and writes them later, maybe cut in the
    middle of a line, so nobody can tell which records a full disk cost.
    Here ``write()`` only keeps the encoded line; ``flush()`` writes the batch
    with ``os.write`` and knows, line by line, what reached the file.  When a
    write fails, the part of a line that did land is cut off again
    (``ftruncate``: this sink is the file's only writer) and the lines not
    written are dropped and counted (``LinesLostError``): a full disk costs whole
    records, each counted once, and never tears a line.  Nothing is kept for
    a later retry, and the object has no finaliser: a forked child's copy of
    a batch can never reach the file.
    """

    __slots__ = ("_blocks", "_flags", "_lines", "encoding", "errors", "fd", "name", "pending")

    def __init__(self, path: str, mode: str, encoding: str | None, errors: str | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_TRUNC if mode.startswith("w") else os.O_APPEND
        self.fd = os.open(path, flags, 0o666)
        self._flags = flags & ~os.O_TRUNC
        self.name = path
        if encoding is None or encoding == "locale":  # what open() would pick
            encoding = locale.getpreferredencoding(False)
        self.encoding = encoding
        self.errors = errors or "strict"
        self._lines: list[bytes] = []
        #: Entries of ``_lines`` that hold several lines (``write_lines``) -> how many.
        self._blocks: dict[int, int] = {}
        #: Bytes waiting for ``flush()``.
        self.pending = 0

    @property
    def closed(self) -> bool:
        """Return True once ``close()`` ran."""
        return self.fd < 0

    def fileno(self) -> int:
        """Return the file descriptor (the fork sanitizer points it at /dev/null)."""
        return self.fd

    def write(self, text: str) -> int:
        """Keep one line (its terminator included) for the next ``flush()``."""
        if self.fd < 0:
            raise ValueError("I/O operation on closed file.")
        data = text.encode(self.encoding, self.errors)
        self._lines.append(data)
        self.pending += len(data)
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        """Keep one line already encoded."""
        if self.fd < 0:
            raise ValueError("I/O operation on closed file.")
        self._lines.append(data)
        self.pending += len(data)

    def write_lines(self, data: bytes, count: int) -> None:
        """Keep ``count`` lines already encoded, each ending in a line feed, as one block."""
        if self.fd < 0:
            raise ValueError("I/O operation on closed file.")
        if count != 1:
            self._blocks[len(self._lines)] = count
        self._lines.append(data)
        self.pending += len(data)

    def flush(self) -> int:
        """Write the kept lines; return how many.  Raise ``LinesLostError`` if some could not be."""
        lines, blocks = self._lines, self._blocks
        if not lines or self.fd < 0:
            return 0
        self._lines, self._blocks, self.pending = [], {}, 0
        count = len(lines) + sum(blocks.values()) - len(blocks)
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            whole = ended = 0
            for index, line in enumerate(lines):
                if ended + len(line) > done:
                    if index in blocks:  # of a block, the lines that landed whole did
                        landed = line.rfind(b"\n", 0, done - ended) + 1
                        whole += line.count(b"\n", 0, landed)
                        ended += landed
                    break
                ended += len(line)
                whole += blocks.get(index, 1)
            torn = done - ended
            if torn:  # the start of a line landed: take it back, no torn line stays
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - torn)
            raise LinesLostError(exc, count - whole, whole, len(data) - ended) from exc
        return count

    def moved(self) -> bool:
        """Tell whether the path now names another file, or none (``WatchedFileHandler``'s test)."""
        try:
            now = os.stat(self.name)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def reopen(self) -> None:
        """Open the path again (creating it) and write there from now on, kept lines included."""
        fd = os.open(self.name, self._flags, 0o666)
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        """Close the file; lines not flushed yet are dropped (the handler flushes first)."""
        fd, self.fd = self.fd, -1
        self._lines, self._blocks, self.pending = [], {}, 0
        if fd >= 0:
            os.close(fd)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        """Close the descriptor of a file nobody closed; never write what it kept."""
        # getattr: an __init__ whose open() failed (EMFILE) never set it.
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            try:  # noqa: SIM105 - contextlib may be gone when this runs at exit
                _close(fd)
            except OSError:
                pass


def _open_lines(handler: logging.FileHandler) -> Any:
    """Open ``handler``'s file as a ``LineFile`` (text modes ``a`` and ``w``; others as stock)."""
    if handler.mode not in ("a", "w"):
        return logging.FileHandler._open(handler)  # the stock stream
    return LineFile(handler.baseFilename, handler.mode, handler.encoding, handler.errors)


def _flush_lines(handler: FileSink) -> None:
    """Flush ``handler``'s stream, counting in ``handler.landed`` the records that reached the file.

    Lines a full disk refused go to ``handler.handleError``, once per failed
    flush; the writer's ``_SinkWatch`` reads ``LinesLostError.records`` off the
    exception, so its count is of records, not of failed calls.
    """
    handler.acquire()
    try:
        stream = handler.stream
        if not isinstance(stream, LineFile):  # another mode (stock stream), or closed
            if stream is not None:
                stream.flush()
            return
        try:
            handler.landed += stream.flush()
        except LinesLostError as exc:
            handler.landed += exc.written
            handler.lines_lost(exc)
            handler.handleError(
                logging.makeLogRecord({"msg": f"{exc.records} records not written: {exc}"})
            )
    finally:
        handler.release()


class FileSink(LineSink, logging.FileHandler):
    """A ``FileHandler`` whose writes from the writer loop are flushed once per batch.

    ``StreamHandler.emit`` flushes after every record: one ``write()`` system
    call each.  Records the writer loop hands over (on its thread,
    ``batch_thread``) are only buffered; the loop flushes after each batch it
    handled, at every barrier and at shutdown, so a burst costs one system
    call.  A record logged by any other thread (the installing program's own
    threads, in a thread host) is written and flushed at once, as by
    ``FileHandler``, and takes the loop's buffered lines with it, in order.
    """

    def _open(self) -> Any:
        """Open the file as a ``LineFile``: whole lines, and a true count of those lost."""
        return _open_lines(self)

    #: ``watch=True``: reopen the file when it was moved or removed (logrotate).
    watch = False
    #: How often, at most, a flush compares the path with the open file (seconds).
    watch_interval = 1.0
    _watched_at = 0.0

    def flush(self) -> None:
        """Write the lines kept so far; lines a full disk refuses go to ``handleError``, counted."""
        if self.watch:
            self._reopen_if_moved()
        _flush_lines(self)

    def _reopen_if_moved(self) -> None:
        """Reopen a moved or removed file, checked at most once per ``watch_interval``.

        Once per flush, not per record (``WatchedFileHandler`` stats twice per
        record): a flush writes a whole batch of the writer loop.  And at most
        once a second, so neither a busy loop (a batch a millisecond) nor a
        program thread's records (flushed one by one) pay a ``stat`` each.
        Lines written in that second land in the moved file, whole: nothing is
        lost unless something deletes the moved file within the second
        (logrotate's ``delaycompress`` leaves it until its next run).
        """
        now = time.monotonic()
        if now - self._watched_at < self.watch_interval:
            return
        self._watched_at = now
        self.acquire()
        try:
            stream = self.stream
            if isinstance(stream, LineFile) and stream.moved():
                stream.reopen()  # the kept lines go to the new file: they are newer
        except OSError as exc:
            print(f"logfunnel: cannot reopen {self.baseFilename}: {exc}", file=sys.stderr)
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``; on the writer loop's thread, leave the flush to the loop."""
        try:
            self.write_line(self.format(record))
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, text: str) -> None:
        """Write a line rendered with this sink's formatter (here or in another process)."""
        stream = self.stream
        if stream is None:  # delay=True, or closed: open (or not) as FileHandler.emit does
            if self.mode == "w" and self._closed:  # type: ignore[attr-defined]
                return
            stream = self.stream = self._open()
        stream.write(text + self.terminator)
        # Another thread's line goes out at once; the loop's when its batch is full.
        if (
            threading.get_ident() != self.batch_thread
            or getattr(stream, "pending", 0) >= _BATCH_BYTES
        ):
            self.flush()


    def write_lines(self, data: bytes, count: int) -> bool:
        """Keep a block of lines as one (see ``LineSink.write_lines``); False: line by line."""
        stream = self.stream
        if not isinstance(stream, LineFile) or (stream.encoding, self.terminator) != _UTF8_LF:
            return False  # not open yet, or not the bytes write_line would write
        stream.write_lines(data, count)
        if threading.get_ident() != self.batch_thread or stream.pending >= _BATCH_BYTES:
            self.flush()
        return True
