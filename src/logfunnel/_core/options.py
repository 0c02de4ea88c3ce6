"""Options every process attached to a funnel shares, and the environment variables that carry them.

Who owns what: nothing here is mutable state.  ``install()`` builds one
``Options`` and publishes it in ``LOGFUNNEL_OPTIONS``; every process that joins
reads its own copy.  This module is imported by every interpreter that joins a
funnel, before its program runs, so it imports nothing that ``logging`` does
not already bring (no ``typing``, no ``json``).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final, Literal

    OnFull = Literal["block", "drop"]

#: The writer's address, ``unix:/path`` or ``tcp:host:port``; its presence makes
#: a new interpreter attach itself (see ``logfunnel-hook.pth``).
ENV_ADDRESS: Final = "LOGFUNNEL_ADDRESS"
#: JSON: the options below, for processes that attach through the environment.
ENV_OPTIONS: Final = "LOGFUNNEL_OPTIONS"
#: ``PID:FINGERPRINT`` of the process that installed the funnel and of its
#: ``install()`` arguments: a child calling ``install()`` with the same ones joins.
ENV_INSTALLER: Final = "LOGFUNNEL_INSTALLER"
#: For ``tls:`` addresses: the CA certificate(s) to verify the writer with
#: (default: the system's trusted CAs).
ENV_TLS_CA: Final = "LOGFUNNEL_TLS_CA"
#: ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` of a collector (``logfunnel serve``) that
#: a program which does not call ``install()`` sends every record to, with ENV_TOKEN.
ENV_CONNECT: Final = "LOGFUNNEL_CONNECT"
#: The shared secret a TCP peer must prove it knows.
ENV_TOKEN: Final = "LOGFUNNEL_TOKEN"  # noqa: S105 - the variable's name, not a secret

#: Largest frame payload in bytes, unless ``install(frame_limit=)`` says otherwise.
DEFAULT_FRAME_LIMIT: Final = 4 * 1024 * 1024


def field_limit(frame_limit: int) -> int:
    """Return the longest text (characters) of one record field for ``frame_limit``.

    Three text fields (message, traceback, stack) of at most 4 UTF-8 bytes a
    character each must fit in one frame together with the rest; the encoder
    cuts there, and so do the formatters and the line renderer, so a record
    is cut the same way whichever path it takes.
    """
    return max(256, frame_limit // 16)

_FIELDS: Final = ("frame_limit", "on_full", "full_timeout", "fallback", "render", "every_record")


class Options:
    """How a process sends records: limits, backpressure policy, fallback and routing.

    A plain class with ``__slots__`` rather than a dataclass or a NamedTuple:
    it is built in every joining interpreter, and ``dataclasses`` (``inspect``)
    and ``typing`` cost several milliseconds of start-up there.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        frame_limit: int = DEFAULT_FRAME_LIMIT,
        on_full: OnFull = "block",
        full_timeout: float = 0.1,
        fallback: str | None = None,
        render: dict[str, Any] | None = None,
        every_record: bool = False,
    ) -> None:
        """Hold the options; ``install()`` checks them (``check_options``)."""
        #: Largest frame payload in bytes; longer text is cut with a marker.
        self.frame_limit = frame_limit
        #: ``"block"``: a logging call waits while the writer is behind (lossless).
        #: ``"drop"``: it waits at most ``full_timeout`` seconds, then drops the
        #: record and counts it; the count reaches the sinks once flow resumes.
        self.on_full: OnFull = on_full
        self.full_timeout = full_timeout
        #: Where records go while the writer cannot be reached: ``None`` for
        #: standard error, or the path of a file to append to.
        self.fallback = fallback
        #: Set by ``install(host="process")`` with its own sinks: the sinks'
        #: format, ``{"fmt": ..., "datefmt": ..., "json": bool}``.  Each process
        #: then renders its plain records' lines itself and sends the text.
        self.render = render
        #: True when the funnel's sinks are install()'s own (``file=``, ``json=``,
        #: ``console=``, ``config=``): every record of every process goes to
        #: them, besides that process's own handlers.  False (adopt mode): a
        #: process's record goes to the funnel only if no handler of its own
        #: took it (see ``_route``).
        self.every_record = every_record

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied."""
        values = {name: getattr(self, name) for name in _FIELDS}
        values.update(changes)
        return Options(**values)

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a dict."""
        return {name: getattr(self, name) for name in _FIELDS}

    def __eq__(self, other: object) -> bool:
        """Compare field by field."""
        return isinstance(other, Options) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable fields: render is a dict

    def __repr__(self) -> str:
        """Show the fields."""
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Options({inner})"

    def to_env(self) -> str:
        """Return these options as ``LOGFUNNEL_OPTIONS`` carries them (see ``encode_env``)."""
        return encode_env(self.as_dict())

    @classmethod
    def from_env(cls, text: str | None) -> Options:
        """Parse ``LOGFUNNEL_OPTIONS``; unknown or malformed entries fall back to defaults."""
        if not text:
            return cls()
        try:
            values = decode_env(text)
        except ValueError:
            return cls()
        try:
            return cls(**{k: v for k, v in values.items() if k in _FIELDS})
        except TypeError:
            return cls()


# LOGFUNNEL_OPTIONS is read by every process when it first connects, and json costs
# ~1 ms to import there: the options travel as NAME=T:VALUE items separated by
# \x1f, T one of n (None), b, i, f, s (str, with \ and \x1f escaped as \\ and \u);
# a dict field as NAME.KEY items.
_SEP: Final = "\x1f"


def encode_env(values: dict[str, Any]) -> str:
    """Return ``values`` in the environment's form (LOGFUNNEL_OPTIONS, LOGFUNNEL_CONTEXT)."""
    items: list[str] = []
    for name, value in values.items():
        if isinstance(value, dict):
            items += [_encode_item(f"{name}.{k}", v) for k, v in value.items()]
        else:
            items.append(_encode_item(name, value))
    return _SEP.join(items)


def _encode_item(name: str, value: Any) -> str:
    if value is None:
        return f"{name}=n:"
    if isinstance(value, bool):
        return f"{name}=b:{int(value)}"
    if isinstance(value, int):
        return f"{name}=i:{value}"
    if isinstance(value, float):
        return f"{name}=f:{value!r}"
    text = str(value).replace("\\", "\\\\").replace(_SEP, "\\u")
    # Lone surrogates cannot go into the environment: escaped, as the codec does.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{name}=s:{text}"


def decode_env(text: str) -> dict[str, Any]:
    """Parse the environment's form; ``ValueError`` if it is malformed."""
    values: dict[str, Any] = {}
    for item in text.split(_SEP):
        name, equals, typed = item.partition("=")
        kind, colon, raw = typed.partition(":")
        if not equals or not colon:
            raise ValueError(item)
        value: Any
        if kind == "n":
            value = None
        elif kind == "b":
            value = raw == "1"
        elif kind == "i":
            value = int(raw)
        elif kind == "f":
            value = float(raw)
        elif kind == "s":
            value = _unescape(raw)
        else:
            raise ValueError(item)
        field, dot, key = name.partition(".")
        if dot:
            values.setdefault(field, {})[key] = value
        else:
            values[name] = value
    return values


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out, chars = [], iter(raw)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            out.append(_SEP if escaped == "u" else escaped)
        else:
            out.append(char)
    return "".join(out)


def every_record_from_env(text: str | None) -> bool:
    """Tell from ``LOGFUNNEL_OPTIONS`` text whether the funnel takes every record."""
    return bool(text) and f"{_SEP}every_record=b:1" in f"{_SEP}{text}"


def check_options(options: Options) -> None:
    """Raise ``ValueError`` saying what to change if ``options`` cannot work."""
    frame_limit = options.frame_limit
    if isinstance(frame_limit, bool) or not isinstance(frame_limit, int) or frame_limit < 4096:
        msg = f"frame_limit={frame_limit!r}: give a whole number of bytes >= 4096"
        raise ValueError(msg)
    if options.on_full not in ("block", "drop"):
        msg = f"on_full={options.on_full!r}: use 'block' (lossless, the default) or 'drop'"
        raise ValueError(msg)
    timeout = options.full_timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout < float("inf")
    ):
        msg = f"full_timeout={timeout!r}: give a number of seconds >= 0 that is finite, e.g. 0.1"
        raise ValueError(msg)
    if options.fallback is not None:
        path = os.path.abspath(options.fallback)
        directory = os.path.dirname(path)
        if os.path.isdir(path):
            msg = f"fallback={options.fallback!r} is a directory: give the path of a file"
            raise ValueError(msg)
        if not os.path.isdir(directory):
            msg = f"fallback={options.fallback!r}: directory {directory!r} does not exist"
            raise ValueError(msg)


def parse_level(level: int | str, what: str = "level") -> int:
    """Return a level number for ``level``, or raise ``ValueError`` naming the choices."""
    import logging  # noqa: PLC0415 - this module must not import logging itself

    if isinstance(level, bool):
        pass  # bool is an int subclass, and never meant as a level
    elif isinstance(level, int):
        return level
    elif isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if isinstance(number, int):
            return number
    choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
    msg = f"{what}={level!r} is not a logging level: use {choices}"
    raise ValueError(msg)
