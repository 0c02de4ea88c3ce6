"""Options every process attached to a funnel shares, and how they travel in the environment."""

from __future__ import annotations

import json
import logging
import os

# A NamedTuple, not a dataclass: this module is imported at every interpreter
# start-up that joins a funnel, and dataclasses costs ~10 ms (it imports inspect).
from typing import Any, Final, Literal, NamedTuple

from logfunnel._wire import DEFAULT_FRAME_LIMIT

#: The writer's address, ``unix:/path`` or ``tcp:host:port``; its presence makes
#: a new interpreter attach itself (see ``logfunnel-hook.pth``).
ENV_ADDRESS: Final = "LOGFUNNEL_ADDRESS"
#: JSON: the options below, for processes that attach through the environment.
ENV_OPTIONS: Final = "LOGFUNNEL_OPTIONS"
#: JSON: ``{"levels": {logger name: level}, "disable": level}`` of the installing
#: process, refreshed whenever a level changes there.
ENV_LEVELS: Final = "LOGFUNNEL_LEVELS"
#: For ``tls:`` addresses: the CA certificate(s) to verify the writer with
#: (default: the system's trusted CAs).
ENV_TLS_CA: Final = "LOGFUNNEL_TLS_CA"
#: The shared secret a TCP peer must prove it knows.
ENV_TOKEN: Final = "LOGFUNNEL_TOKEN"  # noqa: S105 - the variable's name, not a secret

OnFull = Literal["block", "drop"]


class Options(NamedTuple):
    """How a process sends records: limits, backpressure policy and fallback."""

    #: Largest frame payload in bytes; longer text is cut with a marker.
    frame_limit: int = DEFAULT_FRAME_LIMIT
    #: ``"block"``: a logging call waits while the writer is behind (lossless).
    #: ``"drop"``: it waits at most ``full_timeout`` seconds, then drops the
    #: record and counts it; the count reaches the sinks once flow resumes.
    on_full: OnFull = "block"
    full_timeout: float = 0.1
    #: Where records go while the writer cannot be reached: ``None`` for
    #: standard error, or the path of a file to append to.
    fallback: str | None = None
    #: Set by ``install(host="process")`` with its own sinks (``file=``,
    #: ``json=``, ``console=``): the sinks' format, ``{"fmt": ..., "datefmt":
    #: ..., "json": bool}``.  Each process then renders the lines of its plain
    #: records itself and sends the text (see ``_handler.Connection``).
    render: dict[str, Any] | None = None

    def to_env(self) -> str:
        """Return these options as the JSON kept in ``LOGFUNNEL_OPTIONS``."""
        return json.dumps(self._asdict(), separators=(",", ":"))

    @classmethod
    def from_env(cls, text: str | None) -> Options:
        """Parse ``LOGFUNNEL_OPTIONS``; unknown or malformed entries fall back to defaults."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(**{k: v for k, v in raw.items() if k in cls._fields})
        except TypeError:
            return cls()


def validate_options(options: Options) -> None:
    """Raise ``ValueError`` saying what to change if ``options`` cannot work."""
    if not isinstance(options.frame_limit, int) or options.frame_limit < 4096:
        msg = f"frame_limit={options.frame_limit!r}: give a whole number of bytes >= 4096"
        raise ValueError(msg)
    if options.on_full not in ("block", "drop"):
        msg = f"on_full={options.on_full!r}: use 'block' (lossless, the default) or 'drop'"
        raise ValueError(msg)
    if not isinstance(options.full_timeout, (int, float)) or options.full_timeout < 0:
        msg = f"full_timeout={options.full_timeout!r}: give a number of seconds >= 0"
        raise ValueError(msg)
    if options.fallback is not None:
        directory = os.path.dirname(os.path.abspath(options.fallback))
        if not os.path.isdir(directory):
            msg = f"fallback={options.fallback!r}: directory {directory!r} does not exist"
            raise ValueError(msg)


def level_snapshot() -> dict[str, Any]:
    """Return the levels of this process's loggers, as ``LOGFUNNEL_LEVELS`` carries them."""
    # loggerDict also holds PlaceHolder objects for names no one asked for yet;
    # only real loggers with a level of their own matter.
    levels = {"": logging.root.level}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level:
            levels[name] = logger.level
    return {"levels": levels, "disable": logging.root.manager.disable}


def apply_levels(text: str | None) -> None:
    """Set this process's logger levels from ``LOGFUNNEL_LEVELS`` text."""
    if not text:
        return
    try:
        snapshot = json.loads(text)
    except ValueError:
        return
    apply_level_snapshot(snapshot)


def apply_level_snapshot(snapshot: Any) -> None:
    """Set this process's logger levels from a ``level_snapshot()`` dict."""
    try:
        levels = snapshot["levels"]
        disable = int(snapshot.get("disable", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return
    if not isinstance(levels, dict):
        return
    for name, level in levels.items():
        if isinstance(name, str) and isinstance(level, int):
            logging.getLogger(name or None).setLevel(level)
    if disable != logging.root.manager.disable:
        logging.disable(disable)


def parse_level(level: int | str, what: str = "level") -> int:
    """Return a level number for ``level``, or raise ``ValueError`` naming the choices."""
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
