"""What a record becomes on the wire: its rendered line, or the record itself.

Owned by one ``Connection`` (it holds the connection's encoder, whose site and
thread definitions belong to that connection's stream).

With ``Options.render`` set, the writer's sinks are install()'s own, with a
formatter this process can build too: a plain record (no traceback, stack or
extras) is rendered here and travels as text (a LINE frame), so the writer
only writes it.  Anything else travels as a record, and the writer formats
it, as always.

In adopt mode (``install()`` with no sink) ``Options.render`` may instead
name the stock formatter of the installer's own handlers (``"adopt"``): a
record without traceback or stack is rendered with it here and travels as a
RENDERED frame, the record and its line (``adopt_render``).
"""

from __future__ import annotations

import logging

from logfunnel._core import wire as _wire
from logfunnel._core.fields import CONTEXT_ATTR
from logfunnel._core.options import Options, field_limit
from logfunnel._core.plain import BASE_LEN, STANDARD_ATTRS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from logfunnel._core import adopt_render as _adopt_render


class Framer:
    """Make the frames of one record, for one connection's encoder."""

    __slots__ = ("_adopt", "_encoder", "_line_limit", "_render")

    def __init__(self, encoder: _wire.Encoder, options: Options) -> None:
        """Encode with ``encoder``, rendering lines as ``options.render`` says."""
        self._encoder = encoder
        self._render = _renderer(options.render)
        #: Adopt mode: the installer's stock formatter, whose lines go with their records.
        self._adopt = _adopt_formatter(options.render)
        # A rendered line longer than a record's message may be travels as a
        # record instead, so it is cut exactly as the record path cuts it.
        self._line_limit = field_limit(options.frame_limit)

    def frames(self, record: logging.LogRecord) -> bytes:
        """Return what to send for ``record``: its rendered line, or the record itself."""
        render = self._render
        attrs = record.__dict__
        adopt = self._adopt
        if (
            adopt is not None
            and attrs.get("exc_info") is None
            and attrs.get("exc_text") is None
            and attrs.get("stack_info") is None
        ):
            # Extras travel in the record; the formatter shows none of them
            # (adopt_render._SAFE_FIELDS), so the line is the same with or without.
            try:
                message = record.getMessage()
                text = adopt.render(record, message)
            except Exception:  # getMessage() raising: the record path says what went wrong
                return self._encoder.record(record)
            if len(text) > self._line_limit:
                return self._encoder.record(record)
            frame = self._encoder.rendered(record, text, message)
            return frame if frame is not None else self._encoder.record(record, text, message)
        if (
            render is not None
            and attrs.get("exc_info") is None
            and attrs.get("exc_text") is None
            and attrs.get("stack_info") is None
            # More attributes than a fresh record's: a formatter's `message` and
            # `asctime`, or extras.
            and (
                len(attrs) - ("message" in attrs) - ("asctime" in attrs) <= BASE_LEN
                or _only_context(attrs)
            )
        ):
            try:
                text = render.format(record)
            except Exception:  # the formatters degrade rather than raise; just in case
                return self._encoder.record(record)
            if len(text) <= self._line_limit:
                return self._encoder.line(text)
        return self._encoder.record(record)


def _only_context(attrs: dict[str, Any]) -> bool:
    """Tell whether a record's attributes beyond the standard ones are its context's alone.

    ``logfunnel.context()`` fields are plain values checked when the block was
    entered, so the line this process renders is the one the writer would
    (both formatters show them the same way); an ``extra=`` value is not, and
    travels in the record, where the codec makes it plain.  A field an
    ``extra=`` of the same name kept from the context is an extra.
    """
    fields = attrs.get(CONTEXT_ATTR)
    if fields is None:
        return all(key in STANDARD_ATTRS for key in attrs)
    return all(
        key in STANDARD_ATTRS
        or key == CONTEXT_ATTR
        or (key in fields and attrs[key] is fields[key])
        for key in attrs
    )


def _renderer(spec: Any) -> logging.Formatter | None:
    """Build the formatter ``Options.render`` names, or None if there is none (or it is odd)."""
    if not isinstance(spec, dict) or "adopt" in spec:
        return None
    # Only processes that render lines need the formatters.
    from logfunnel._core import formatters as _formatters  # noqa: PLC0415

    try:
        if spec.get("json") is True:
            return _formatters.JsonFormatter()
        fmt, datefmt = spec.get("fmt"), spec.get("datefmt")
        if isinstance(fmt, str) and (datefmt is None or isinstance(datefmt, str)):
            return _formatters.LineFormatter(fmt, datefmt)
    except ValueError:
        pass
    return None


def _adopt_formatter(spec: Any) -> _adopt_render.Renderer | None:
    """Build the installer's stock formatter ``Options.render["adopt"]`` names, if any."""
    if not isinstance(spec, dict) or "adopt" not in spec:
        return None
    from logfunnel._core import adopt_render as _adopt_render  # noqa: PLC0415

    formatter = _adopt_render.formatter_for(_adopt_render.spec_from_option(spec))
    return _adopt_render.Renderer(formatter) if formatter is not None else None
