"""logfunnel: logging from many processes that just works.

Call ``install()`` once in the main process; every record from every process
(fork, spawn and forkserver children, subprocesses, pool workers) then lands
once, whole and in order, in sinks that a single writer owns.
"""

from logfunnel import _fork
from logfunnel._bootstrap import worker_init
from logfunnel._handler import FunnelHandler
from logfunnel._install import Funnel, current, install
from logfunnel._sinks import JsonFormatter, LineFormatter

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

_fork.register()
