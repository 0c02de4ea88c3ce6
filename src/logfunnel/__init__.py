"""logfunnel: logging from many processes that just works.

Call ``install()`` once in the main process; every record from every process
(fork, spawn and forkserver children, subprocesses, pool workers) then lands
once, whole and in order, in sinks that a single writer owns, and every
process's own logging configuration keeps working as it did.

General layout, in the order a record travels:

* ``_route``: every attached process's ``Logger.callHandlers`` also delivers
  the record to the funnel -- no handler of the program's is added or taken;
* ``_handler`` and ``_connection``: the process's one connection to the
  writer, its backpressure and fallback;
* the codec (no pickle): ``_plain`` (any value made plain), ``_wire`` (the
  encoder and the frame reader), ``_protocol`` (the wire format, and frames
  decoded into records);
* the writer, in the order a record meets it: ``_listeners`` (accepting) and
  ``_gate`` (TLS, the token challenge), ``_peers`` (each connection read and
  cut into frames), ``_dispatch`` (records and lines to the sinks or the
  logger tree) and ``_calls`` (each handler call guarded); ``_writer``: the
  one loop that ties them and owns every sink; ``_hosts``: a thread of the
  installer, or an interpreter of its own; ``_sinks``, ``_formatters``;
* joining: ``_hook`` and ``_bootstrap`` (new interpreters, when they import
  ``logging``), ``_fork`` (forked children), ``_levels`` (levels through a
  file), ``_rundir`` (the private directory);
* ``_install``, ``_settings``, ``_snapshot``, ``_options``: ``install()`` and
  what it checks, changes and puts back;
* diagnosis: ``_stacks``, ``_repro``, ``_demo``, ``cli``.

Every interpreter that joins a funnel imports this package, so nothing here is
imported until it is used.
"""

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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from logfunnel._bootstrap import worker_init
    from logfunnel._formatters import JsonFormatter, LineFormatter
    from logfunnel._handler import FunnelHandler
    from logfunnel._install import Funnel, current, install
del TYPE_CHECKING

_LAZY = {
    "Funnel": "logfunnel._install",
    "current": "logfunnel._install",
    "install": "logfunnel._install",
    "FunnelHandler": "logfunnel._handler",
    "worker_init": "logfunnel._bootstrap",
    "JsonFormatter": "logfunnel._formatters",
    "LineFormatter": "logfunnel._formatters",
}


def __getattr__(name: str) -> object:
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
