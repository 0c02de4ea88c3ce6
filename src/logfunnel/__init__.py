"""logfunnel: logging from many processes that just works.

Call ``install()`` once in the main process; every record from every process
(fork, spawn and forkserver children, subprocesses, pool workers) then lands
once, whole and in order, in sinks that a single writer owns, and every
process's own logging configuration keeps working as it did.

General layout, in the order a record travels:

* ``_core/``: the record's path, self-contained -- ``route`` (every attached
  process's ``Logger.callHandlers`` also delivers to the funnel, adding the
  ``context()`` fields that ``fields`` keeps), ``handler`` and ``connection``
  (the process's one connection, its backpressure and fallback), the codec
  (``plain``, ``encoder``, ``frame_reader``, ``protocol``, reached through
  ``wire``; no pickle), the writer (``listeners``, ``gate``, ``peers``,
  ``dispatch``, ``calls``, tied by ``writer``'s loop; ``sink`` is what it
  asks of a sink), joining (``hook``, ``bootstrap``, ``fork``, ``levels``,
  ``rundir``, ``options``), and
  ``state``: all process-wide mutable state, with the one after-fork reset;
* ``sinks/``: the sinks ``install()`` builds (files and their rotation, the
  console, the syslog and OTLP exporters);
* ``_hosts``: the writer in a thread of the installer, or in an interpreter of
  its own (``_writer_process``: what that interpreter runs); ``_settings``:
  ``install()``'s typed options and their checks;
  ``_funnel``: ``install()`` and ``current()``; ``_running``: the ``Funnel``
  and the steps that start it; ``_snapshot``;
* ``_shared``: one writer per file across unrelated processes; ``_remote``
  and ``_serve``: sending to a collector on another host, and the collector;
* ``integrations/``: pytest, Celery, Dask, each importing its engine lazily;
* ``diagnose/``: stacks, the hang watchdog, ``repro``, ``demo``, ``report``; ``cli``.

Every interpreter that joins a funnel imports this package, so nothing here is
imported until it is used.

PYTEST_DONT_REWRITE: the pytest plugin's entry point (``integrations``) makes
pytest mark this package for assertion rewriting and warn when it was imported
before pytest configured -- which it always is under ``logfunnel run -m pytest``
and in every interpreter the start-up hook joined (an error under
``filterwarnings = error``).  This marker is pytest's way to say: no rewriting,
no warning.
"""

__all__ = [
    "Funnel",
    "FunnelHandler",
    "JsonFormatter",
    "LineFormatter",
    "Stats",
    "carry",
    "context",
    "current",
    "install",
    "worker_init",
]

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from logfunnel._core.bootstrap import worker_init
    from logfunnel._core.context import carry, context
    from logfunnel._core.dispatch import Stats
    from logfunnel._core.formatters import JsonFormatter, LineFormatter
    from logfunnel._core.handler import FunnelHandler
    from logfunnel._funnel import current, install
    from logfunnel._running import Funnel
del TYPE_CHECKING

_LAZY = {
    "Funnel": "logfunnel._running",
    "current": "logfunnel._funnel",
    "install": "logfunnel._funnel",
    "FunnelHandler": "logfunnel._core.handler",
    "Stats": "logfunnel._core.dispatch",
    "worker_init": "logfunnel._core.bootstrap",
    "carry": "logfunnel._core.context",
    "context": "logfunnel._core.context",
    "JsonFormatter": "logfunnel._core.formatters",
    "LineFormatter": "logfunnel._core.formatters",
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
