"""logfunnel: logging from many processes that just works.

Call ``install()`` once in the main process; every record from every process
(fork, spawn and forkserver children, subprocesses, pool workers) then lands
once, whole and in order, in sinks that a single writer owns.
"""

import typing as _typing

from logfunnel import _fork
from logfunnel._bootstrap import worker_init
from logfunnel._handler import FunnelHandler

if _typing.TYPE_CHECKING:
    from logfunnel._formatters import JsonFormatter, LineFormatter
    from logfunnel._install import Funnel, current, install

__all__ = [
    "Funnel",
    "FunnelHandler",
    "JsonFormatter",
    "LineFormatter",
    "current",
    "install",
    "worker_init",
]

__version__ = "0.1.0"

# Every interpreter that joins a funnel imports this package at start-up (the
# .pth hook): the writer, install() and the sinks are imported on first use.
_LAZY = {
    "Funnel": "logfunnel._install",
    "current": "logfunnel._install",
    "install": "logfunnel._install",
    "JsonFormatter": "logfunnel._formatters",
    "LineFormatter": "logfunnel._formatters",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'logfunnel' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


_fork.register()
