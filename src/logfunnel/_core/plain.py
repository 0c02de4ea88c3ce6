"""Making any value plain: what a record's texts and extras become before they travel.

Every function here takes whatever a program (or a filter) left on a record
and returns plain values -- str, int, float, bool, bytes, None, lists and dicts
of those, within fixed size bounds -- and none of them can raise for an
``Exception`` a user's object raises.  The rules they apply are items 1, 2, 4,
5 (for a ``repr``) and 6 of the list in ``_wire``'s docstring, which says in
what order the encoder applies them; the wire format itself is in
``_protocol``.

Who owns what: nothing here holds state.  The functions are shared by the
encoder (``_wire.Encoder``), the sending side (``_connection``: the fallback's
message, whether a record has extras) and the installer's own formatters
(``_formatters``), so a record rendered where it is logged shows exactly what
the same record shows after crossing the wire.

Imports ``logging`` and ``math`` only: making a value plain needs no codec, so
importing this module does not import msgpack.
"""

from __future__ import annotations

import logging
import math

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

# Every attribute a stock LogRecord has, plus those Formatter.format adds:
# anything else in record.__dict__ came through `extra=` (or a filter).
STANDARD_ATTRS: Final = frozenset(
    (*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName", "exc_info", "args")
)
#: Attributes every LogRecord has, so ``len(record.__dict__)`` above this means ``extra=``.
BASE_LEN: Final = len(logging.makeLogRecord({}).__dict__)

#: The types a value may have to travel as it is (containers aside).
PLAIN_LEAVES: Final = (str, int, float, bool, bytes, type(None))
NONE: Final = type(None)
#: The ints msgpack encodes; any other int travels as its text.
INT64_MIN: Final = -(2**63)
UINT64_MAX: Final = 2**64 - 1
_MAX_DEPTH: Final = 8
_MAX_ITEMS: Final = 1000
_REPR_LIMIT: Final = 10_000
_REPR_DEPTH: Final = 50
#: What all the extras of one record may hold together: a value counts 1, and a string
#: or bytes value 1 more for every 64 characters (bytes).
EXTRA_BUDGET: Final = 100_000
#: What an ``extra=`` value past ``EXTRA_BUDGET`` becomes.
EXTRA_CUT_MARKER: Final = "[logfunnel: cut, the extras of this record are too large]"


def safe_repr(value: object, limit: int = _REPR_LIMIT) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, or a marker if ``repr`` raises.

    Never raises (for an ``Exception``).  Strings, bytes and built-in
    containers are rendered within the limit, so their ``repr`` never costs
    more memory than the limit (a list that holds one big string a thousand
    times would otherwise have a huge ``repr``).  An int with more digits than
    ``str()`` converts (``sys.get_int_max_str_digits()``) becomes
    ``<int with N digits>``.
    """
    try:
        kind = type(value)
        if kind is str or kind is bytes or kind is bytearray:
            size = len(value)  # type: ignore[arg-type]
            if size > limit:
                head = repr(value[:limit])  # type: ignore[index]
                unit = "characters" if kind is str else "bytes"
                return f"{head}... [logfunnel: {size - limit:,} of {size:,} {unit} cut]"
            text = repr(value)
        elif kind is int:
            text = int_text(value)  # type: ignore[arg-type]
        elif kind in _CONTAINER_OPEN:
            return _BoundedRepr(limit).render(value)
        else:
            text = repr(value)
            if type(text) is not str:  # a str subclass: its own len() and slicing may lie
                text = str.__str__(text)
    except Exception as exc:  # a __repr__ that raises must not stop the record
        return _unrepresentable(value, exc)
    return cut(text, limit)


def _unrepresentable(value: object, exc: BaseException) -> str:
    """Return ``<unrepresentable T: ExcType>`` for a value whose ``repr`` raised ``exc``."""
    try:
        name, error = type(value).__qualname__, type(exc).__name__
    except Exception:  # a metaclass whose __qualname__ raises
        return "<unrepresentable object>"
    if type(name) is not str or type(error) is not str:
        return "<unrepresentable object>"
    return f"<unrepresentable {name}: {error}>"


#: Above this many bits an int's digits are estimated, not counted: counting
#: them exactly needs a power of ten as large as the int.
_EXACT_DIGITS_BITS: Final = 1 << 18


def int_text(value: int) -> str:
    """Return ``str(value)``, or ``<int with N digits>`` when it has too many digits to convert.

    ``str()`` of an int over ``sys.get_int_max_str_digits()`` digits (4,300 by
    default) raises ``ValueError``; converting it anyway would cost time
    quadratic in its size.
    """
    try:
        return int.__repr__(value)
    except ValueError:
        return _long_int(value)


def _long_int(value: int) -> str:
    """Return ``<int with N digits>`` (``<negative int ...>``) without converting ``value``."""
    magnitude = -value if value < 0 else value
    sign = "negative " if value < 0 else ""
    bits = magnitude.bit_length()
    # The digits of 2 ** (bits - 1), as a float computes them: right, or one off.
    digits = int((bits - 1) * _LOG10_2) + 1
    if bits > _EXACT_DIGITS_BITS:
        return f"<{sign}int with about {digits:,} digits>"
    if magnitude < 10 ** (digits - 1):
        digits -= 1
    elif magnitude >= 10**digits:
        digits += 1
    return f"<{sign}int with {digits:,} digits>"


_LOG10_2: Final = math.log10(2)


_CONTAINER_OPEN: Final[dict[type, str]] = {
    list: "[",
    tuple: "(",
    dict: "{",
    set: "{",
    frozenset: "frozenset({",
}
_CONTAINER_CLOSE: Final[dict[type, str]] = {
    list: "]",
    tuple: ")",
    dict: "}",
    set: "}",
    frozenset: "})",
}


class _ReprFullError(Exception):
    """The bounded repr reached its limit."""


class _BoundedRepr:
    """``repr()`` of built-in containers that stops once ``limit`` characters are built."""

    __slots__ = ("_active", "_left", "_limit", "_parts")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._left = limit
        self._parts: list[str] = []
        self._active: set[int] = set()

    def render(self, value: object) -> str:
        try:
            self._add_value(value, 0)
        except _ReprFullError:
            text = "".join(self._parts)[: self._limit]
            return f"{text}... [logfunnel: repr cut at {self._limit:,} characters]"
        return "".join(self._parts)

    def _add(self, text: str) -> None:
        self._parts.append(text)
        self._left -= len(text)
        if self._left < 0:
            raise _ReprFullError

    def _add_value(self, value: Any, depth: int) -> None:
        kind = type(value)
        if kind not in _CONTAINER_OPEN:
            if (kind is str or kind is bytes or kind is bytearray) and len(value) > self._left:
                self._add(_repr_head(value, self._left + 1))
            else:
                self._add(safe_repr(value, self._left + 1))
            return
        if id(value) in self._active or depth >= _REPR_DEPTH:
            self._add("[...]" if kind is list else "{...}" if kind is dict else "(...)")
            return
        if not value and (kind is set or kind is frozenset):
            self._add(f"{kind.__name__}()")
            return
        self._active.add(id(value))
        self._add(_CONTAINER_OPEN[kind])
        if kind is dict:
            for index, (key, item) in enumerate(value.items()):
                if index:
                    self._add(", ")
                self._add_value(key, depth + 1)
                self._add(": ")
                self._add_value(item, depth + 1)
        else:
            for index, item in enumerate(value):
                if index:
                    self._add(", ")
                self._add_value(item, depth + 1)
            if kind is tuple and len(value) == 1:
                self._add(",")
        self._add(_CONTAINER_CLOSE[kind])
        self._active.discard(id(value))


def _repr_head(value: Any, size: int) -> str:
    """Return the ``repr`` of ``value[:size]``, quoted as ``repr(value)`` quotes it.

    ``repr`` picks double quotes when a string holds ``'`` but no ``"``: a head
    cut before the first ``'`` would otherwise be quoted differently from the
    whole, and not be a prefix of its ``repr``.
    """
    head = value[:size]
    text = repr(head)
    quote = b"'" if type(value) is not str else "'"
    other = b'"' if type(value) is not str else '"'
    whole_double = quote in value and other not in value
    head_double = quote in head and other not in head
    if whole_double == head_double:
        return text
    start = text.index(text[-2 if type(value) is bytearray else -1])
    end = len(text) - (2 if type(value) is bytearray else 1)
    body = text[start + 1 : end]
    if whole_double:  # the head has no ' and no ": only the quotes change
        return f'{text[:start]}"{body}"{text[end + 1 :]}'
    # The whole is single-quoted and escapes ', the head was double-quoted and did not.
    return f"{text[:start]}'{body.replace(chr(39), chr(92) + chr(39))}'{text[end + 1 :]}"


#: Room for ``cut``'s marker after a text cut at its limit: a text at most this much
#: longer than a limit may be one already cut, and is not cut again.
MARKER_ROOM: Final = 100


def cut(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, ending with a marker that says how much was cut."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}... [logfunnel: {dropped:,} of {len(text):,} characters cut]"


def plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Convert an ``extra=`` value to something msgpack encodes, or its ``repr()``.

    ``budget`` (a one-item list, shared by the calls for one record) caps the
    items and characters produced; past it every value becomes ``EXTRA_CUT_MARKER``.
    """
    if budget is None:
        budget = [EXTRA_BUDGET]
    if budget[0] <= 0:
        return EXTRA_CUT_MARKER
    kind = type(value)
    if kind in PLAIN_LEAVES:
        if kind is int and not INT64_MIN <= value <= UINT64_MAX:
            value = int_text(value)
        elif (kind is str or kind is bytes) and len(value) > _REPR_LIMIT:
            value = safe_repr(value, _REPR_LIMIT) if kind is bytes else cut(value, _REPR_LIMIT)
        budget[0] -= 1 + (len(value) >> 6 if type(value) in (str, bytes) else 0)
        return value
    if depth < _MAX_DEPTH:
        if kind is list or kind is tuple:
            if len(value) <= _MAX_ITEMS:
                budget[0] -= 1
                return [plain(item, depth + 1, budget) for item in value]
        elif kind is dict and len(value) <= _MAX_ITEMS:
            budget[0] -= 1
            return {
                (k if type(k) is str else safe_repr(k, 200)): plain(v, depth + 1, budget)
                for k, v in value.items()
            }
    text = safe_repr(value)
    budget[0] -= 1 + (len(text) >> 6)
    return text


def get_message(record: logging.LogRecord) -> str:
    """Return ``record.getMessage()``, or a readable account of why it could not be formatted."""
    try:
        message = record.getMessage()
    except Exception as exc:
        return (
            f"<unformattable message: {type(exc).__name__}: {safe_repr(exc, 500)}> "
            f"msg={safe_repr(record.msg, 2000)} args={safe_repr(record.args, 2000)}"
        )
    if type(message) is not str:  # a str subclass whose __str__ returned one
        return safe_repr(message)
    return message


def exception_text(record: logging.LogRecord) -> str | None:
    """Return the record's traceback as text, formatting ``exc_info`` if needed."""
    try:
        if record.exc_text:
            return as_str(record.exc_text)
        if not record.exc_info:
            return None
        return logging.Formatter().formatException(record.exc_info)
    except Exception as exc:  # a traceback that cannot be rendered still tells its type
        info = record.exc_info
        value = info[1] if isinstance(info, tuple) and len(info) == 3 else info
        return f"<traceback could not be formatted: {type(exc).__name__}> {safe_repr(value, 2000)}"


def as_str(value: object) -> str:
    """Return ``value`` as an exact ``str`` (``str()`` of it, or its safe repr if that fails)."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    try:
        text = str(value)
    except Exception:
        return safe_repr(value)
    return text if type(text) is str else safe_repr(value)


def record_extras(record: logging.LogRecord) -> dict[str, Any] | None:
    """Return the plain form of every attribute ``extra=`` (or a filter) added, or None."""
    budget = [EXTRA_BUDGET]
    extra = {
        (k if type(k) is str else safe_repr(k, 200)): plain(v, 0, budget)
        for k, v in record.__dict__.items()
        if k not in STANDARD_ATTRS
    }
    return extra or None


def has_no_extras(record: logging.LogRecord) -> bool:
    """Return True if ``record`` carries no attribute beyond the standard ones."""
    return all(key in STANDARD_ATTRS for key in record.__dict__)


def valid_text(text: str) -> str:
    """Return ``text`` with lone surrogates backslash-escaped (as ``sanitize`` does)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return str(sanitize(text))
    return text


def sanitize(value: Any) -> Any:
    """Re-encode every string so that msgpack's strict UTF-8 encoder accepts it."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    if isinstance(value, dict):
        return {sanitize(k): sanitize(v) for k, v in value.items()}
    return value


def coerce(value: Any, types: tuple[type, ...]) -> Any:
    """Convert one standard field to a value of ``types`` (item 7 of ``_wire``'s list).

    A float that is not finite becomes 0.0; an int outside 64 bits its text
    where a string is allowed, else None where that is allowed, else 0.
    """
    if type(value) in types:
        if type(value) is float and not math.isfinite(value):
            return 0.0
        if type(value) is int and not INT64_MIN <= value <= UINT64_MAX:
            return int_text(value) if str in types else (None if NONE in types else 0)
        return value
    if value is None and NONE in types:
        return None
    if str in types:
        return "" if value is None else as_str(value)
    number: Any
    try:
        number = float(value) if float in types else int(value)
    except Exception:
        number = 0
    return coerce(number, types)
