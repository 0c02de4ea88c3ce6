"""The formatters of logfunnel's sinks: text lines and JSON lines.

Kept apart from the sinks so a process that renders its own lines (a writer
process's peers, see ``_handler.Connection``) imports only this, not
``logging.handlers`` and ``logging.config``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from typing import Any, Final

from logfunnel._core import options as _options
from logfunnel._core import plain as _plain
from logfunnel._core.plain import STANDARD_ATTRS

# Longest text a sink writes for one record: the codec's per-field limit at
# the default frame size, so a record is cut the same way in every process.
_TEXT_LIMIT: Final = _options.field_limit(_options.DEFAULT_FRAME_LIMIT)
_MARKER_ROOM: Final = _plain.MARKER_ROOM

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

    With a plain ``%``-style format (no ``defaults``), ``format`` does what
    ``Formatter.format`` does in one method, and renders the time of each
    second once: the writer formats every record of every process, so its
    per-call overhead is the funnel's throughput.
    """

    continuation: Final = "\n  | "
    # (second, its text): one tuple, so threads never see a torn pair.
    _time_cache: tuple[int, str] = (-1, "")

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        """Create the formatter, as ``logging.Formatter`` takes its arguments."""
        super().__init__(fmt, datefmt, style, validate, **kwargs)
        cls = type(self)
        self._fast = (
            type(self._style) is logging.PercentStyle
            and not getattr(self._style, "_defaults", None)
            and cls.formatMessage is LineFormatter.formatMessage
            and cls.usesTime is logging.Formatter.usesTime
            and cls.formatTime is LineFormatter.formatTime
        )
        self._uses_time = self.usesTime()
        self._simple_time = (
            not datefmt
            and self.converter is time.localtime
            and bool(self.default_msec_format)
            and cls.formatTime is LineFormatter.formatTime
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """Format the time as ``Formatter`` does, rendering each second once."""
        if datefmt or self.converter is not time.localtime or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        return self._asctime(record)

    def _asctime(self, record: logging.LogRecord) -> str:
        """Return ``formatTime(record)`` for the default formats, rendering each second once."""
        second = int(record.created)
        cached_second, text = self._time_cache
        if second != cached_second:
            text = time.strftime(self.default_time_format, time.localtime(record.created))
            self._time_cache = (second, text)
        return self.default_msec_format % (text, record.msecs)  # type: ignore[operator]

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        """Format the line, the message cut as the codec cuts it (once)."""
        record.message = _cut_once(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; indent every line after the first.

        A record that cannot be formatted (a ``%`` mismatch, a ``__str__`` that
        raises) still gives a line, with the message degraded as the codec
        does it (``_plain.get_message``); text longer than the codec's field
        limit is cut with the same marker.
        """
        try:
            text = self._format_fast(record) if self._fast else super().format(record)
        except Exception:
            saved = record.msg, record.args
            record.msg, record.args = _plain.get_message(record), None
            try:
                text = super().format(record)
            except Exception:
                text = f"{record.levelname} {record.name}: {record.msg}"
            finally:
                record.msg, record.args = saved
        if "\n" in text or "\r" in text:
            text = one_line(text)
        return text

    def _format_fast(self, record: logging.LogRecord) -> str:
        """``Formatter.format`` for a %-style format, its method calls inlined."""
        attrs = record.__dict__
        msg = attrs["msg"]
        # A record from another process arrives with its message formatted
        # (args None): nothing to merge, and getMessage would only copy it.
        if attrs["args"] is None and type(msg) is str and type(record) is logging.LogRecord:
            message = msg
        else:
            message = record.getMessage()
        if len(message) > _TEXT_LIMIT + _MARKER_ROOM:
            message = _plain.cut(message, _TEXT_LIMIT)
        attrs["message"] = message
        if self._uses_time:
            if self._simple_time:
                attrs["asctime"] = self._asctime(record)
            else:
                attrs["asctime"] = self.formatTime(record, self.datefmt)
        text: str = self._style._fmt % attrs
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if text[-1:] != "\n":
                text += "\n"
            text += record.exc_text
        if record.stack_info:
            if text[-1:] != "\n":
                text += "\n"
            text += self.formatStack(record.stack_info)
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
            "message": _cut_once(_plain.get_message(record)),
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
            text = _dumps(out)
        except Exception:
            # Circular or deep extras, NaN and infinities (strict JSON has none),
            # keys JSON has no form for (tuples, bytes, ints too long to convert),
            # containers whose items() raises: extras as the codec sends them,
            # non-finite floats as strings.
            out = _plain_json(out)
            text = _dumps(out)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates: written as escaped text ("\\udcff"), as the
                # codec sends them, not as JSON escapes a reader would decode back.
                text = _dumps(_plain.sanitize(_plain_json(out)))
        return text


def _dumps(out: dict[str, Any]) -> str:
    """Return ``out`` as strict JSON on one line; what JSON cannot hold becomes its safe repr."""
    return json.dumps(out, ensure_ascii=False, allow_nan=False, default=_plain.safe_repr)


def _plain_json(out: dict[Any, Any]) -> dict[str, Any]:
    """Return ``out`` with string keys and values strict JSON can hold.

    Texts of the record's own keys stay whole; everything else becomes what
    the codec sends (``_plain.plain``), with NaN and infinities as strings.
    """
    return {
        (k if type(k) is str else _plain.safe_repr(k, 200)): (
            v if type(v) is str and k in _RECORD_KEYS else _finite(_plain.plain(v))
        )
        for k, v in out.items()
    }


#: The keys JsonFormatter writes for the record itself (the rest are extras).
_RECORD_KEYS: Final = frozenset(
    (
        "time",
        "level",
        "logger",
        "message",
        "process",
        "process_name",
        "thread_name",
        "module",
        "line",
        "function",
        "exc_text",
        "stack_info",
        "task_name",
    )
)


def one_line(text: str) -> str:
    """Indent every line of ``text`` after the first with ``LineFormatter.continuation``."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", LineFormatter.continuation)


def continued(text: str) -> str:
    """Return ``text`` with every line after the first starting with the continuation prefix.

    For lines rendered in another process: what ``one_line`` made of a
    record stays as it is, and a line break anywhere else cannot start what
    a reader would take for a record of its own.
    """
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    prefix = LineFormatter.continuation[1:]
    return "\n".join([parts[0], *(p if p.startswith(prefix) else prefix + p for p in parts[1:])])


def _cut_once(text: str) -> str:
    """Cut text longer than the codec's limit; text the codec already cut stays as it is."""
    if len(text) <= _TEXT_LIMIT + _MARKER_ROOM:
        return text
    return _plain.cut(text, _TEXT_LIMIT)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities, which strict JSON cannot hold, by their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
