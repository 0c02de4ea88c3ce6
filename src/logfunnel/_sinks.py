"""Sinks: the handlers ``install()`` builds from its options, and how lines reach them."""

from __future__ import annotations

import logging
import logging.config
import logging.handlers
import os
import threading
from typing import Any, Final

from logfunnel._formatters import DEFAULT_FORMAT, JsonFormatter, LineFormatter
from logfunnel._options import parse_level

__all__ = ["DEFAULT_FORMAT", "FileSink", "JsonFormatter", "LineFormatter", "RotatingFileSink"]


class FileSink(logging.FileHandler):
    """A ``FileHandler`` whose writes from the writer loop are flushed once per batch.

    ``StreamHandler.emit`` flushes after every record: one ``write()`` system
    call each.  Records the writer loop hands over (on its thread,
    ``batch_thread``) are only buffered; the loop flushes after each batch it
    handled, at every barrier and at shutdown, so a burst costs one system
    call.  A record logged by any other thread (the installing program's own
    threads, in a thread host) is written and flushed at once, as by
    ``FileHandler``, and takes the loop's buffered lines with it, in order.
    """

    #: The writer loop's thread (``threading.get_ident()``), set by the loop.
    batch_thread: int | None = None

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
        if threading.get_ident() != self.batch_thread:
            self.flush()


class RotatingFileSink(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that knows its file's size instead of asking for it.

    The stdlib's ``shouldRollover`` checks the path twice (two ``stat`` calls),
    formats the record a second time and seeks to the end, for every record.
    The writer is the file's only writer, so the size is counted as lines are
    written (and read once from the file when it is opened).  Flushed once per
    batch on the writer loop's thread, as ``FileSink``.
    """

    #: The writer loop's thread (``threading.get_ident()``), set by the loop.
    batch_thread: int | None = None
    _size = -1

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
        """Rotate, and start counting the new file from zero."""
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
        self._pending_size = len(line) if line.isascii() else len(line.encode())
        if self.shouldRollover(None):
            self.doRollover()
        if self.stream is None:
            self.stream = self._open()
        self.stream.write(line)
        self._size += self._pending_size
        if threading.get_ident() != self.batch_thread:
            self.flush()

    _pending_size = 0


#: The handlers ``write_line`` can write a rendered line through.
LINE_SINKS: Final = (FileSink, RotatingFileSink, logging.StreamHandler)


def write_line(handler: logging.Handler, text: str) -> None:
    """Write ``text``, a line rendered with ``handler``'s formatter, as its ``emit`` would.

    Takes the handler's lock as ``Handler.handle`` does; a failure goes to
    ``handler.handleError`` with a record holding the text, as a failing
    ``emit`` would.
    """
    handler.acquire()
    try:
        if isinstance(handler, (FileSink, RotatingFileSink)):
            handler.write_line(text)
        else:
            stream: Any = handler.stream  # type: ignore[attr-defined]
            stream.write(text + handler.terminator)  # type: ignore[attr-defined]
            handler.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logging.makeLogRecord({"msg": text}))
    finally:
        handler.release()


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
