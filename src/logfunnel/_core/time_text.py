"""A program's ``Formatter`` renders each second's time text once while the writer uses it.

``logging.Formatter.formatTime`` calls ``localtime`` and ``strftime`` for every
record, though its text changes once a second: in adopt mode, where the
writer thread formats every process's records with the program's own
formatters, py-spy of ``benchmarks/_one.py --system logfunnel-adopt`` (2
workers) put 15% of the writer's samples there.  ``TimeText`` becomes the
formatter's ``formatTime`` (on the instance, as ``calls.SinkWatch`` becomes a
handler's ``handleError``) and keeps the last second's text.

The text is the stdlib's to the byte: ``strftime``'s result depends only on
the converted time, which for ``time.localtime`` and ``time.gmtime`` depends
only on the whole second (both floor a non-negative time) and on the time
zone (``time.tzname``, which ``time.tzset()`` replaces, is part of the key);
the milliseconds are added per record, as the stdlib adds them.  Any other
converter, or a negative or NaN time, goes to the stdlib's own code.  The
cache is one tuple, replaced whole, so the program's threads may share it.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class TimeText:
    """A formatter's ``formatTime`` that renders each second once (see the module)."""

    __slots__ = ("_last", "formatter")

    def __init__(self, formatter: logging.Formatter) -> None:
        """Become ``formatter.formatTime``."""
        self.formatter = formatter
        # (second, time format, converter, time.tzname, strftime's text)
        self._last: tuple[Any, ...] = (None, None, None, None, "")
        formatter.formatTime = self  # type: ignore[method-assign]

    @staticmethod
    def fits(formatter: logging.Formatter | None) -> bool:
        """Tell whether ``formatter`` formats time with the stdlib's own code."""
        return (
            formatter is not None
            and type(formatter).formatTime is logging.Formatter.formatTime
            and "formatTime" not in vars(formatter)
        )

    def __call__(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        formatter = self.formatter
        converter = formatter.converter
        created = record.created
        if not created >= 0 or (converter is not time.localtime and converter is not time.gmtime):
            return logging.Formatter.formatTime(formatter, record, datefmt)
        pattern = datefmt or formatter.default_time_format
        second, zone = int(created), time.tzname
        last = self._last
        # Identity, not equality: a pattern or zone that is another object only
        # costs one strftime more.
        if last[0] == second and last[1] is pattern and last[2] is converter and last[3] is zone:
            text: str = last[4]
        else:
            text = time.strftime(pattern, converter(created))
            self._last = (second, pattern, converter, zone, text)
        if datefmt:
            return text
        msec_format = formatter.default_msec_format
        return msec_format % (text, record.msecs) if msec_format else text

    def restore(self) -> None:
        """Give the formatter its class's ``formatTime`` back."""
        if vars(self.formatter).get("formatTime") is self:
            del self.formatter.formatTime
