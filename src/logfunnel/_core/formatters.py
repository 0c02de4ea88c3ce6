"""The formatters of logfunnel's sinks: text lines and JSON lines.

Kept apart from the sinks so a process that renders its own lines (a writer
process's peers, see ``framing.Framer``) imports only this, not
``logging.handlers`` and ``logging.config``.

Who owns what: each formatter is its sink's (or the rendering connection's)
and holds only the text of the second it last rendered; what a JSON line may
hold, and the host name, are ``strict_json``'s.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Final

from logfunnel._core import options as _options
from logfunnel._core import plain as _plain
from logfunnel._core.fields import CONTEXT_ATTR
from logfunnel._core.plain import STANDARD_ATTRS
from logfunnel._core.strict_json import (
    SCHEMA_TYPES,
    context_json,
    dumps,
    host,
    in_int64,
    plain_json,
)

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

    A field the format names that a record lacks (``%(job)s`` for a field of
    ``logfunnel.context()``, outside any block) is rendered as ``MISSING``
    (``-``), in every style, instead of making the line degrade.  With a
    numeric conversion (``%(shard)d``) a ``-`` cannot be rendered, so such a
    record degrades as a bad record does: name context fields with ``%(...)s``.

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
            text = self._format_fast(record) if self._fast else self._format_slow(record)
        except Exception:
            saved = record.msg, record.args
            record.msg, record.args = _plain.get_message(record), None
            try:
                text = self._format_slow(record)
            except Exception:
                text = f"{record.levelname} {record.name}: {record.msg}"
            finally:
                record.msg, record.args = saved
        if "\n" in text or "\r" in text:
            text = one_line(text)
        return text

    def _format_slow(self, record: logging.LogRecord) -> str:
        """``Formatter.format``, with ``MISSING`` for each field the record lacks."""
        try:
            return super().format(record)
        except Exception as exc:
            key = _missing_key(exc)
            if key is None:
                raise
            error: Exception = exc
        # A copy, so the record itself never gets attributes it did not have.
        copy = logging.makeLogRecord(record.__dict__)
        for _ in range(_MAX_MISSING):
            if key is None or key in copy.__dict__:
                raise error
            copy.__dict__[key] = MISSING
            try:
                return super().format(copy)
            except Exception as exc:
                key, error = _missing_key(exc), exc
        raise error

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
        try:
            text: str = self._style._fmt % attrs
        except KeyError:  # a field the record lacks (a context field outside its block)
            text = self._style._fmt % _OrMissing(attrs)
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


#: What a text line shows for a field its format names and the record lacks.
MISSING: Final = "-"
# Most fields a format names that one record may lack.
_MAX_MISSING: Final = 64


class _OrMissing:
    """A record's attributes for ``%``-formatting, with ``MISSING`` for those it lacks."""

    __slots__ = ("_attrs",)

    def __init__(self, attrs: dict[str, Any]) -> None:
        self._attrs = attrs

    def __getitem__(self, key: str) -> Any:
        try:
            return self._attrs[key]
        except KeyError:
            return MISSING


def _missing_key(exc: BaseException) -> str | None:
    """Return the field a format named and a record lacked, if that is what ``exc`` says."""
    if not isinstance(exc, KeyError):
        # Formatter.format raises ValueError("Formatting field not found ...") from it.
        cause = exc.__context__ if isinstance(exc, ValueError) else None
        if not isinstance(cause, KeyError):
            return None
        exc = cause
    key = exc.args[0] if len(exc.args) == 1 else None
    return key if type(key) is str else None


#: The version of the JSON lines schema (docs/json-schema.md): every line's ``"v"``.
#: Raised when a field changes meaning or is removed; adding an optional field keeps it.
SCHEMA_VERSION: Final = 1

_UTC: Final = dt.timezone.utc
_EPOCH: Final = dt.datetime.fromtimestamp(0, tz=_UTC)


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object on one line (JSON lines), schema version 1.

    The schema is documented in docs/json-schema.md and given as a JSON Schema
    in docs/json-schema.json.  Keys, always: ``v`` (``SCHEMA_VERSION``),
    ``time`` (ISO 8601, UTC, microseconds and offset:
    ``2026-12-02T01:57:00.123456+00:00``), ``level``, ``logger``, ``message``,
    ``process``, ``process_name``, ``thread_name``, ``module``, ``line``,
    ``function``, ``host``; when there is one: ``task`` (the asyncio task's
    name), ``exc`` (the traceback as text), ``stack`` (``stack_info`` as text),
    ``context`` (the fields of the ``logfunnel.context()`` blocks it was
    logged in), ``extra`` (every ``extra=`` attribute, under its own name).
    An extra is never put beside the schema's keys, so ``extra={"time": ...}``
    or ``extra={"v": ...}`` cannot overwrite one.

    Every line is strict JSON (RFC 8259: no NaN or Infinity) of valid UTF-8,
    whatever the record holds: what JSON cannot hold becomes what the codec
    sends for it (``_plain``).  Newlines and control characters are escaped
    by JSON itself, so a record is always exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        attrs = record.__dict__
        try:
            created = dt.datetime.fromtimestamp(record.created, tz=_UTC)
        except Exception:  # a filter's odd `created` (NaN, out of range, not a number)
            created = _EPOCH
        out: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "time": created.isoformat(timespec="microseconds"),
            "level": attrs.get("levelname"),
            "logger": attrs.get("name"),
            "message": _cut_once(_plain.get_message(record)),
            "process": attrs.get("process"),
            "process_name": attrs.get("processName"),
            "thread_name": attrs.get("threadName"),
            "module": attrs.get("module"),
            "line": attrs.get("lineno"),
            "function": attrs.get("funcName"),
            "host": host(),
        }
        for key, types in SCHEMA_TYPES:
            value = out[key]
            if type(value) not in types or (type(value) is int and not in_int64(value)):
                out[key] = _plain.coerce(value, types)
        task = attrs.get("taskName")
        if task:
            out["task"] = _plain.as_str(task)
        exc_text = attrs.get("exc_text")
        if not exc_text and attrs.get("exc_info"):
            try:
                exc_text = self.formatException(attrs["exc_info"])
            except Exception:  # a traceback that cannot be rendered: as the codec says it
                exc_text = _plain.exception_text(record)
        if exc_text:
            out["exc"] = _cut_once(_plain.as_str(exc_text))
        stack = attrs.get("stack_info")
        if stack:
            out["stack"] = _cut_once(_plain.as_str(stack))
        extra = {key: value for key, value in attrs.items() if key not in STANDARD_ATTRS}
        if extra:
            fields = extra.pop(CONTEXT_ATTR, None)
            if type(fields) is dict and fields:
                out["context"] = context_json(fields)
                for key, value in fields.items():
                    # The context's own copies of its fields; an extra of the same
                    # name but another value stays (extras are never overwritten).
                    if key in extra and type(extra[key]) is type(value) and extra[key] == value:
                        del extra[key]
            elif fields is not None:  # not a context's dict: an extra like any other
                extra[CONTEXT_ATTR] = fields
        if extra:
            out["extra"] = extra
        try:
            text = dumps(out)
        except Exception:
            # Circular or deep extras, NaN and infinities (strict JSON has none),
            # keys JSON has no form for (tuples, bytes, ints too long to convert),
            # containers whose items() raises: extras as the codec sends them,
            # non-finite floats as strings.
            out = plain_json(out)
            text = dumps(out)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates: written as escaped text ("\\udcff"), as the
                # codec sends them, not as JSON escapes a reader would decode back.
                text = dumps(_plain.sanitize(plain_json(out)))
        return text


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
