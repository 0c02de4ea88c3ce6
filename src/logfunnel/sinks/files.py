"""Sinks: the handlers ``install()`` builds from its options, and how lines reach them."""

from __future__ import annotations

import contextlib
import locale
import logging
import logging.config
import logging.handlers
import os
import threading
from typing import TYPE_CHECKING, Any, Final

from logfunnel._core.formatters import DEFAULT_FORMAT, JsonFormatter, LineFormatter
from logfunnel._core.options import parse_level
from logfunnel._core.sink import LineSink, LinesLostError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_FORMAT",
    "FileSink",
    "JsonFormatter",
    "LineFormatter",
    "LinesLostError",
    "RotatingFileSink",
]

#: A file sink's pending lines are written once they reach this many bytes,
#: even in the middle of a batch of the writer loop (bounds its memory).
_BATCH_BYTES: Final = 64 * 1024


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

    __slots__ = ("_lines", "encoding", "errors", "fd", "name", "pending")

    def __init__(self, path: str, mode: str, encoding: str | None, errors: str | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_TRUNC if mode.startswith("w") else os.O_APPEND
        self.fd = os.open(path, flags, 0o666)
        self.name = path
        if encoding is None or encoding == "locale":  # what open() would pick
            encoding = locale.getpreferredencoding(False)
        self.encoding = encoding
        self.errors = errors or "strict"
        self._lines: list[bytes] = []
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

    def flush(self) -> int:
        """Write the kept lines; return how many.  Raise ``LinesLostError`` if some could not be."""
        lines = self._lines
        if not lines or self.fd < 0:
            return 0
        self._lines, self.pending = [], 0
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            whole = ended = 0
            for line in lines:
                if ended + len(line) > done:
                    break
                ended += len(line)
                whole += 1
            torn = done - ended
            if torn:  # the start of a line landed: take it back, no torn line stays
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - torn)
            raise LinesLostError(exc, len(lines) - whole, whole, len(data) - ended) from exc
        return len(lines)

    def close(self) -> None:
        """Close the file; lines not flushed yet are dropped (the handler flushes first)."""
        fd, self.fd = self.fd, -1
        self._lines, self.pending = [], 0
        if fd >= 0:
            os.close(fd)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        """Close the descriptor of a file nobody closed; never write what it kept."""
        fd, self.fd = self.fd, -1
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


def _flush_lines(handler: FileSink | RotatingFileSink) -> None:
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

    def flush(self) -> None:
        """Write the lines kept so far; lines a full disk refuses go to ``handleError``, counted."""
        _flush_lines(self)

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


class RotatingFileSink(LineSink, logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that knows its file's size instead of asking for it.

    The stdlib's ``shouldRollover`` checks the path twice (two ``stat`` calls),
    formats the record a second time and seeks to the end, for every record.
    The writer is the file's only writer, so the size is counted as lines are
    written (and read once from the file when it is opened).  Flushed once per
    batch on the writer loop's thread, as ``FileSink``.
    """

    _size = -1

    def _open(self) -> Any:
        """Open the file as a ``LineFile``, as ``FileSink`` does."""
        return _open_lines(self)

    def flush(self) -> None:
        """Write the lines kept so far, as ``FileSink.flush``."""
        _flush_lines(self)

    def lines_lost(self, lost: LinesLostError) -> None:
        """Count out of the file's size what a full disk refused (``_flush_lines`` calls this)."""
        if self._size >= 0:
            self._size -= lost.lost_bytes

    def shouldRollover(self, record: logging.LogRecord | None) -> int:  # noqa: N802, ARG002 - stdlib
        """Return 1 if writing ``record`` would take the file past ``maxBytes``."""
        if self.maxBytes <= 0:
            return 0
        if self.stream is None:  # delay=True, or just rotated
            self.stream = self._open()
        if self._size < 0:
            self._size = os.path.getsize(self.baseFilename)
        return int(self._size > 0 and self._size + self._pending_size >= self.maxBytes)

    def doRollover(self) -> None:  # noqa: N802 - stdlib name
        """Write what is kept for the old file, rotate, and start counting the new one from zero."""
        self.flush()  # closing a LineFile drops what it keeps
        super().doRollover()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Format once, rotate if needed, write; on the loop's thread, leave the flush to it."""
        try:
            self.write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, text: str) -> None:
        """Write a line rendered with this sink's formatter, rotating first if it would not fit."""
        line = text + self.terminator
        data = None
        if line.isascii():
            self._pending_size = len(line)
        else:  # encoded once, as the file will hold it (lone surrogates escaped, never raising)
            data = line.encode(self.encoding or "utf-8", self.errors or "strict")
            self._pending_size = len(data)
        if self.shouldRollover(None):
            self.doRollover()
        if self.stream is None:
            self.stream = self._open()
        stream = self.stream
        if data is not None and isinstance(stream, LineFile):
            stream.write_bytes(data)
        else:
            stream.write(line)
        self._size += self._pending_size
        # Another thread's line goes out at once; the loop's when its batch is full.
        if (
            threading.get_ident() != self.batch_thread
            or getattr(stream, "pending", 0) >= _BATCH_BYTES
        ):
            self.flush()

    _pending_size = 0


def build_handlers(spec: dict[str, Any]) -> list[logging.Handler]:
    """Build the handlers ``install(file=..., json=..., console=...)`` asks for.

    Raises ``ValueError`` or ``OSError`` with a message that says what to change.
    """
    handlers: list[logging.Handler] = []
    formatter: logging.Formatter
    if spec.get("json"):
        formatter = JsonFormatter()
    else:
        try:
            formatter = LineFormatter(spec.get("fmt") or DEFAULT_FORMAT, spec.get("datefmt"))
        except ValueError as exc:
            msg = f"fmt={spec.get('fmt')!r} is not a valid %-style format: {exc}"
            raise ValueError(msg) from None
    path = spec.get("file")
    if path:
        path = os.path.abspath(path)
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            msg = f"file={spec['file']!r}: directory {directory!r} does not exist; create it first"
            raise ValueError(msg)
        if not os.access(directory, os.W_OK):
            msg = f"file={spec['file']!r}: directory {directory!r} is not writable"
            raise ValueError(msg)
        max_bytes = int(spec.get("max_bytes") or 0)
        backups = int(spec.get("backups") or 0)
        file_handler: logging.Handler
        if max_bytes:
            file_handler = RotatingFileSink(
                path,
                maxBytes=max_bytes,
                backupCount=backups,
                encoding="utf-8",
                errors="backslashreplace",  # lone surrogates stay visible, never raise
            )
        else:
            file_handler = FileSink(path, encoding="utf-8", errors="backslashreplace")
        handlers.append(file_handler)
    if spec.get("console") or not path:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
    return handlers


def validate_spec(spec: dict[str, Any]) -> None:
    """Check sink options without opening anything; raise ``ValueError`` saying what to change."""
    max_bytes, backups = spec.get("max_bytes") or 0, spec.get("backups") or 0
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes={max_bytes!r}: give a size in bytes >= 0 (0: never rotate)")
    if not isinstance(backups, int) or backups < 0:
        raise ValueError(f"backups={backups!r}: give a number of rotated files to keep, >= 0")
    if backups and not max_bytes:
        raise ValueError(f"backups={backups} needs max_bytes: rotation happens at that size")
    if max_bytes and not spec.get("file"):
        raise ValueError("max_bytes needs file=: only a file sink rotates")
    if spec.get("level") is not None:
        parse_level(spec["level"])
    config = spec.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValueError(
            f"config must be a logging.config.dictConfig dict, not {type(config).__name__}"
        )
    if config is not None and (spec.get("file") or spec.get("json") or spec.get("fmt")):
        raise ValueError("give either config= or file=/fmt=/json=, not both")


def configure_writer_process(spec: dict[str, Any]) -> list[logging.Handler] | None:
    """Set up a writer process from ``install()``'s options; return its sinks, if it builds them.

    With ``config=`` the writer process's logger tree is configured with
    ``dictConfig`` and the writer hands records to that tree (None is
    returned).  Otherwise the handlers ``build_handlers`` makes are returned,
    for ``Writer(sinks=...)``; they are put on no logger.
    """
    if spec.get("config") is None:
        return build_handlers(spec)
    # Levels are applied where records are made (the installing process and
    # every child): the writer passes on all it gets unless the configuration
    # itself sets levels.
    logging.getLogger().setLevel(logging.NOTSET)
    logging.config.dictConfig(spec["config"])
    return None
