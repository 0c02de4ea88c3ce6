"""Adopt mode's lines, rendered where they are logged when the program's formatter is stock.

In adopt mode (``install()`` with no sink) the writer thread hands every
process's records to the program's own handlers.  Profiles of
``benchmarks/_one.py --system logfunnel-adopt`` put most of the writer's time
in rebuilding each record and in the program's ``FileHandler`` formatting it,
all on one thread.  When the installer's handler is a stock one
(``logging.FileHandler`` or ``logging.StreamHandler``) with a stock
``logging.Formatter``, every process can render that line itself, exactly as
the formatter would, and the writer only has to write it:

    installer, at install()   tree_spec(): the Spec of its handlers' formatter
          |                     -> Options.render {"adopt": [...]}, to every process
          v
    sender (framing.Framer)   a stock Formatter built from the Spec renders a
          |                     record without traceback or stack: a RENDERED
          |                     frame, the record's fields and the text
          v
    writer (dispatch)         Route.handlers(): the handlers the record would
                                reach now; when each is stock with a formatter
                                of the same Spec, the text goes to them as
                                their ``emit`` would write it; otherwise the
                                record is rebuilt and handled, as always.
                                Consecutive texts of one read for the same
                                handlers go as a run (``Dispatcher.frames``).

Why the text is the formatter's own: a stock ``Formatter`` with ``%`` style,
no defaults and only the fields in ``_SAFE_FIELDS`` reads nothing but record
attributes that travel unchanged (the message after ``getMessage()``, the
times, the site, the thread); its time text depends on the converter and
the two default formats, which the Spec carries.  What differs, on purpose:
the time zone is the sending process's, as it would be if that process wrote
the file itself.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Final

from logfunnel._core.time_text import TimeText

#: (fmt, datefmt, converter name, default_time_format, default_msec_format)
Spec = tuple[str, "str | None", str, "str | None", "str | None"]

# Record attributes that arrive at the writer as they were in the sender.  Not
# `msg` or `args` (the writer gets the merged message and None), nor extras.
_SAFE_FIELDS: Final = frozenset(
    (
        "name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
        "funcName", "created", "asctime", "msecs", "relativeCreated", "thread",
        "threadName", "process", "processName", "message", "taskName",
    )
)
_FIELD: Final = re.compile(r"%\(([^)]*)\)")
_CONVERTERS: Final = {"localtime": time.localtime, "gmtime": time.gmtime}
# Formatter methods an instance may override; formatTime only with the writer's TimeText.
_FORMATTER_METHODS: Final = ("format", "formatMessage", "usesTime", "formatException",
                             "formatStack", "formatTime")
_HANDLER_METHODS: Final = frozenset(("emit", "handle", "format", "filter"))
# Formatter fits remembered per writer (ids of live formatters; cleared past this).
_CACHE_SIZE: Final = 256


def spec_of(formatter: logging.Formatter | None) -> Spec | None:
    """Return what a sender needs to render ``formatter``'s lines, or None if it cannot."""
    if formatter is None:
        formatter = logging._defaultFormatter  # type: ignore[attr-defined]  # as Handler.format
    if type(formatter) is not logging.Formatter:
        return None
    style = formatter._style
    if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
        return None
    own = vars(formatter)
    for name in _FORMATTER_METHODS:
        if name in own and not (name == "formatTime" and isinstance(own[name], TimeText)):
            return None
    converter = next((k for k, v in _CONVERTERS.items() if formatter.converter is v), None)
    fmt, datefmt = style._fmt, formatter.datefmt
    time_format, msec_format = formatter.default_time_format, formatter.default_msec_format
    if (
        converter is None
        or type(fmt) is not str
        or not all(type(v) in (str, type(None)) for v in (datefmt, time_format, msec_format))
        or not set(_FIELD.findall(fmt)) <= _SAFE_FIELDS
    ):
        return None
    return (fmt, datefmt, converter, time_format, msec_format)


def handler_spec(handler: logging.Handler) -> Spec | None:
    """Return ``spec_of`` a handler's formatter when the handler is stock, else None."""
    kind = type(handler)
    if (
        (kind is logging.FileHandler or kind is logging.StreamHandler)
        and not handler.filters
        and not _HANDLER_METHODS & vars(handler).keys()
    ):
        return spec_of(handler.formatter)
    return None


def tree_spec() -> Spec | None:
    """Return the Spec of the first stock handler on the root logger, else on any logger."""
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            spec = handler_spec(handler)
            if spec is not None:
                return spec
    return None


#: The keys of ``Options.render`` in adopt mode, a Spec's items in order (the
#: environment carries a dict of plain values, not a list).
RENDER_KEYS: Final = ("fmt", "datefmt", "converter", "default_time_format", "default_msec_format")


def render_option(spec: Spec) -> dict[str, Any]:
    """Return ``Options.render`` for senders that render with ``spec``."""
    return {"adopt": True, **dict(zip(RENDER_KEYS, spec, strict=True))}


def spec_from_option(render: Any) -> Spec | None:
    """Return the Spec an ``Options.render`` names in adopt mode, or None."""
    if not isinstance(render, dict) or render.get("adopt") is not True:
        return None
    return tuple(render.get(key) for key in RENDER_KEYS)  # type: ignore[return-value]


def formatter_for(spec: Spec | None) -> logging.Formatter | None:
    """Build the stock formatter ``spec`` describes (None: no spec, or an odd one)."""
    if spec is None:
        return None
    fmt, datefmt, converter, time_format, msec_format = spec
    try:
        formatter = logging.Formatter(fmt, datefmt)
        formatter.converter = _CONVERTERS[converter]
        formatter.default_time_format = time_format  # type: ignore[assignment]
        formatter.default_msec_format = msec_format
    except (TypeError, ValueError, KeyError):
        return None
    if spec_of(formatter) != spec:
        return None
    TimeText(formatter)  # each second's time text once: the stdlib's text to the byte
    return formatter


class Renderer:
    """A stock formatter's ``format`` for a record with no traceback or stack, in one step.

    ``logging.Formatter.format`` sets ``message`` (from ``getMessage()``) and,
    when the format shows it, ``asctime``, then returns ``fmt % attributes``;
    the traceback and stack parts add nothing to such a record.  This does
    those three steps with what ``format`` looks up each time found once
    (2.2 us a record down to 1.3 us here) and the same text, on a copy of the
    attributes: the record leaves this process as it came, as it did before
    (two more attributes would make the encoder look for extras).
    """

    __slots__ = ("_datefmt", "_fmt", "_format_time", "_uses_time")

    def __init__(self, formatter: logging.Formatter) -> None:
        self._fmt: str = formatter._style._fmt
        self._uses_time = formatter.usesTime()
        self._format_time = formatter.formatTime
        self._datefmt = formatter.datefmt

    def render(self, record: logging.LogRecord, message: str) -> str:
        """Return ``record``'s line; ``message`` is its ``getMessage()``."""
        attrs = record.__dict__.copy()
        attrs["message"] = message
        if self._uses_time:
            attrs["asctime"] = self._format_time(record, self._datefmt)
        try:
            return self._fmt % attrs
        except KeyError as exc:  # as PercentStyle.format says it
            msg = f"Formatting field not found in record: {exc}"
            raise ValueError(msg) from None


class Route:
    """Find, in the writer, the handlers a rendered record may be written to as text."""

    __slots__ = ("_fits", "spec")

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        # id(handler) -> (handler, formatter, its style, fmt, datefmt, converter, fits)
        self._fits: dict[int, tuple[Any, ...]] = {}

    def handlers(
        self, logger: logging.Logger, own: bool, levelno: int
    ) -> list[logging.Handler] | None:
        """Return the handlers the record goes to (maybe none), or None: handle the record.

        The walk is ``Dispatcher._deliver``'s: the logger's own filters and
        ``disabled`` (a name with no logger here has neither), then each
        handler up the chain whose level the record reaches.  None when any
        of those is not stock with this Spec, or when there is no handler at
        all (``logging.lastResort`` takes the record then).
        """
        if own and (logger.disabled or logger.filters):
            return None
        found = 0
        chosen: list[logging.Handler] = []
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                found += 1
                if levelno >= handler.level:
                    if not self._fit(handler):
                        return None
                    chosen.append(handler)
            current = current.parent if current.propagate else None
        return chosen if found else None

    def _fit(self, handler: logging.Handler) -> bool:
        formatter = handler.formatter
        style = getattr(formatter, "_style", None)
        known = self._fits.get(id(handler))
        if (
            known is not None
            and known[0] is handler
            and known[1] is formatter
            and known[2] is style
            and known[3] is getattr(style, "_fmt", None)
            and known[4] is getattr(formatter, "datefmt", None)
            and known[5] is getattr(formatter, "converter", None)
            and not handler.filters
        ):
            fits = bool(known[6])
        else:
            fits = handler_spec(handler) == self.spec
            if handler.filters:  # filters come and go: not remembered
                return False
            if len(self._fits) >= _CACHE_SIZE:
                self._fits.clear()
            self._fits[id(handler)] = (
                handler, formatter, style, getattr(style, "_fmt", None),
                getattr(formatter, "datefmt", None), getattr(formatter, "converter", None), fits,
            )
        # A delayed FileHandler opens its file in emit(): its first record goes there.
        return fits and getattr(handler, "stream", None) is not None
