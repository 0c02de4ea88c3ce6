"""Sinks: the handlers ``install()`` builds from its options, and the JSON lines formatter."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import logging.handlers
import math
import os
import time
from typing import Any, Final

from logfunnel import _wire
from logfunnel._options import parse_level
from logfunnel._wire import STANDARD_ATTRS

# Longest text a sink writes for one record: the codec's per-field limit at
# the default frame size, so a record is cut the same way in every process.
_TEXT_LIMIT: Final = _wire.DEFAULT_FRAME_LIMIT // 16
# Room for the codec's "... [logfunnel: N of M characters cut]" marker.
_MARKER_ROOM: Final = 200

#: The line format of file sinks when ``fmt`` is not given.
DEFAULT_FORMAT: Final = (
    "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(name)s: %(message)s"
)


class LineFormatter(logging.Formatter):
    """A ``logging.Formatter`` that keeps every record on lines of its own.

    A message, traceback or stack with newlines in it is written with each
    continuation line indented by ``"  | "``, so a reader can always tell
    where one record ends and the next begins: a line that does not start
    with that prefix starts a record.
    """

    continuation: Final = "\n  | "
    # (second, its text): one tuple, so threads never see a torn pair.
    _time_cache: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """Format the time as ``Formatter`` does, rendering each second once."""
        if datefmt or self.converter is not time.localtime or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._time_cache
        if second != cached_second:
            text = time.strftime(self.default_time_format, time.localtime(record.created))
            self._time_cache = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        """Format the line, the message cut as the codec cuts it (once)."""
        record.message = _cut_once(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; indent every line after the first.

        A record that cannot be formatted (a ``%`` mismatch, a ``__str__`` that
        raises) still gives a line, with the message degraded as the codec
        does it (``_wire.get_message``); text longer than the codec's field
        limit is cut with the same marker.
        """
        try:
            text = super().format(record)
        except Exception:
            saved = record.msg, record.args
            record.msg, record.args = _wire.get_message(record), None
            try:
                text = super().format(record)
            except Exception:
                text = f"{record.levelname} {record.name}: {record.msg}"
            finally:
                record.msg, record.args = saved
        if "\n" in text or "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", self.continuation)
        return text


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object on one line (JSON lines).

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``process``, ``process_name``, ``thread_name``, ``module``, ``line``,
    ``function``; ``exc_text`` and ``stack_info`` when present; then every
    ``extra=`` attribute.  Newlines and control characters are escaped by
    JSON itself, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        created = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
        out: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _cut_once(_wire.get_message(record)),
            "process": record.process,
            "process_name": record.processName,
            "thread_name": record.threadName,
            "module": record.module,
            "line": record.lineno,
            "function": record.funcName,
        }
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            out["exc_text"] = exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        task = getattr(record, "taskName", None)
        if task:
            out["task_name"] = task
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS and key not in out:
                out[key] = value
        try:
            text = json.dumps(out, ensure_ascii=False, allow_nan=False, default=_wire.safe_repr)
        except (ValueError, TypeError, RecursionError):
            # Circular or deep extras, NaN and infinities (strict JSON has none):
            # extras as the codec sends them, non-finite floats as strings.
            out = {k: _finite(_wire.plain(v)) for k, v in out.items()}
            text = json.dumps(out, ensure_ascii=False, allow_nan=False, default=_wire.safe_repr)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates: written as escaped text ("\\udcff"), as the
                # codec sends them, not as JSON escapes a reader would decode back.
                out = _wire.sanitize(out)
                text = json.dumps(out, ensure_ascii=False, default=_wire.safe_repr)
        return text


def _cut_once(text: str) -> str:
    """Cut text longer than the codec's limit; text the codec already cut stays as it is."""
    if len(text) <= _TEXT_LIMIT + _MARKER_ROOM:
        return text
    return _wire.cut(text, _TEXT_LIMIT)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities, which strict JSON cannot hold, by their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class FileSink(logging.FileHandler):
    """A ``FileHandler`` that the writer may flush once per batch of records.

    ``StreamHandler.emit`` flushes after every record: one ``write()`` system
    call each.  In a writer process, where the writer loop is this sink's only
    user, ``batched`` is set and the loop flushes after each batch it handled
    (and at every barrier and at shutdown), so a burst of records costs one
    system call.  Elsewhere it behaves exactly like ``FileHandler``.
    """

    batched = False
    _emitting = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``; with ``batched``, leave the flush to the writer."""
        self._emitting = True
        try:
            super().emit(record)
        finally:
            self._emitting = False

    def flush(self) -> None:
        """Flush, unless called by ``emit`` itself on a batched sink."""
        if not (self.batched and self._emitting):
            super().flush()


class RotatingFileSink(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` that knows its file's size instead of asking for it.

    The stdlib's ``shouldRollover`` checks the path twice (two ``stat`` calls),
    formats the record a second time and seeks to the end, for every record.
    The writer is the file's only writer, so the size is counted as lines are
    written (and read once from the file when it is opened).  Batched flushing
    as in ``FileSink``.
    """

    batched = False
    _emitting = False
    _size = -1

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802, ARG002 - stdlib
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
        """Format once, rotate if needed, write; with ``batched``, leave the flush to the writer."""
        try:
            message = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending_size = len(message) if message.isascii() else len(message.encode())
        self._emitting = True
        try:
            if self.shouldRollover(record):
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(message)
            self._size += self._pending_size
            if not self.batched:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
        finally:
            self._emitting = False

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


def configure_writer_process(spec: dict[str, Any]) -> None:
    """Build the sinks of a writer process from ``install()``'s options."""
    root = logging.getLogger()
    # Levels are applied where records are made (the installing process and,
    # through LOGFUNNEL_LEVELS, every child): the writer passes on all it gets
    # unless the configuration itself sets levels.
    root.setLevel(logging.NOTSET)
    if spec.get("config") is not None:
        logging.config.dictConfig(spec["config"])
    else:
        for handler in build_handlers(spec):
            # The writer loop is this process's only user of its sinks: it
            # flushes them once per batch (Writer.flush_batched).
            if isinstance(handler, (FileSink, RotatingFileSink)):
                handler.batched = True
            root.addHandler(handler)
