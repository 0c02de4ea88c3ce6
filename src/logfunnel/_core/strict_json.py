"""What a JSON line can hold: the schema's types, and strict JSON of any record.

``formatters.JsonFormatter`` builds each line's object from a record; this
module makes sure it is what docs/json-schema.json says, whatever a filter or
an ``extra=`` left on the record: the schema's fields of their types
(``SCHEMA_TYPES``), context fields as str keys and scalars (``context_json``),
extras strict JSON can hold (``plain_json``: no NaN or Infinity), all as
the codec would send them (``_plain``).

Who owns what: ``_HOST``, this process's host name, looked up once (a forked
child's is the same); nothing else here holds state.
"""

from __future__ import annotations

import json
import math
import socket
from typing import Any, Final

from logfunnel._core import plain as _plain

# The schema's fields of a record that come from LogRecord attributes, and the
# types a line may hold for them (docs/json-schema.json): a value of any other type (a
# filter's doing) is converted as the codec converts it (``_plain.coerce``).
SCHEMA_TYPES: Final[tuple[tuple[str, tuple[type, ...]], ...]] = (
    ("level", (str,)),  # levelname
    ("logger", (str,)),  # name
    ("process", (int, _plain.NONE)),
    ("process_name", (str, _plain.NONE)),  # processName
    ("thread_name", (str, _plain.NONE)),  # threadName
    ("module", (str,)),
    ("line", (int,)),  # lineno
    ("function", (str, _plain.NONE)),  # funcName
)
# The values a context field may hold in a line: what ``context()`` takes.
CONTEXT_TYPES: Final = (str, int, float, bool, _plain.NONE)


def in_int64(value: int) -> bool:
    """Tell whether an int is one msgpack and the schema hold (64 bits, signed or not)."""
    return _plain.INT64_MIN <= value <= _plain.UINT64_MAX


def context_json(fields: dict[Any, Any]) -> dict[str, Any]:
    """Return a record's context fields as the schema holds them: str keys, scalar values.

    ``context()`` only takes such fields; anything else came from a filter
    or an ``extra=`` named like the attribute, and becomes its safe repr.
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = key if type(key) is str else _plain.safe_repr(key, 200)
        kind = type(value)
        if kind is float and not math.isfinite(value):
            out[name] = repr(value)
        elif kind not in CONTEXT_TYPES or (kind is int and not in_int64(value)):
            out[name] = _plain.safe_repr(value, 1000)
        else:
            out[name] = value
    return out


_HOST: list[str] = []  # this process's host name, once looked up


def host() -> str:
    """Return this machine's host name, looked up once per process."""
    if not _HOST:
        try:
            name = socket.gethostname()
        except OSError:
            name = ""
        _HOST.append(_plain.valid_text(name))
    return _HOST[0]


def dumps(out: dict[str, Any]) -> str:
    """Return ``out`` as strict JSON on one line; what JSON cannot hold becomes its safe repr."""
    return json.dumps(out, ensure_ascii=False, allow_nan=False, default=_plain.safe_repr)


def plain_json(out: dict[str, Any]) -> dict[str, Any]:
    """Return ``out`` with its ``extra`` made of string keys and values strict JSON can hold.

    The schema's own fields are already of their types; each extra becomes
    what the codec sends (``_plain.plain``), with NaN and infinities as strings.
    """
    extra = out.get("extra")
    if not isinstance(extra, dict):
        return out
    fixed = dict(out)
    fixed["extra"] = {
        (k if type(k) is str else _plain.safe_repr(k, 200)): finite(_plain.plain(v))
        for k, v in extra.items()
    }
    return fixed


def finite(value: Any) -> Any:
    """Replace NaN and infinities, which strict JSON cannot hold, by their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value
