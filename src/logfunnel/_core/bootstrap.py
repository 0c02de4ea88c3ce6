"""How a process joins a funnel: from the environment, at start-up or by ``worker_init``.

``install()`` publishes the writer's address in ``LOGFUNNEL_ADDRESS``.  Every
interpreter started while it is set (multiprocessing's spawn and forkserver
children, ``subprocess`` Python children, joblib/loky workers) inherits it,
and ``logfunnel-hook.pth`` arms ``_hook``, which calls
``join_from_environment()`` once ``logging`` is imported: the process takes
the installing process's logger levels (``_levels``) and its records start
reaching the funnel (``_route``), without a handler being added anywhere.
Forked children need none of this: they inherit the attachment, and
``_fork`` renews it.
"""

from __future__ import annotations

import os

from logfunnel._core import context as _context
from logfunnel._core import fork as _fork
from logfunnel._core import handler as _handler
from logfunnel._core import levels as _levels
from logfunnel._core import route as _route
from logfunnel._core import rundir as _rundir
from logfunnel._core import state as _state
from logfunnel._core.options import (
    ENV_ADDRESS,
    ENV_CONNECT,
    ENV_OPTIONS,
    Options,
    every_record_from_env,
)


def join_from_environment() -> bool:
    """Attach this process to the funnel named in the environment; return True if attached.

    Called by the start-up hook, so it must never raise: a problem is reported
    on standard error in one line and the interpreter starts as usual.
    """
    address = os.environ.get(ENV_ADDRESS)
    options = os.environ.get(ENV_OPTIONS)
    if not address:
        # A program pointed at a collector without calling install(): every record
        # goes there, as to install()'s own sinks.
        address = _collector_address(os.environ.get(ENV_CONNECT, ""))
        if address is None:
            return False
        options = Options(every_record=True).to_env()
    try:
        if _handler.attached_address() != address:
            _handler.attach_from_environment(address, options)
            _levels.join(_rundir.levels_path(address))
        _route.enable(_handler.send, every_record=every_record_from_env(options))
        _context.join_from_environment()  # the fields of the block that started this process
        _fork.register()
        _rundir.register_stacks(address)
    except Exception as exc:  # a start-up hook must never stop an interpreter
        import sys  # noqa: PLC0415

        print(f"logfunnel: could not join the funnel at {address}: {exc!r}", file=sys.stderr)
        return False
    return True


def worker_init() -> None:
    """Attach this process to the parent's funnel; for ``Pool(initializer=worker_init)``.

    Never required -- children attach by themselves -- but harmless, and it
    makes the wiring explicit.  Raises ``RuntimeError`` if there is no funnel
    to join (``install()`` was not called before the pool was created).
    """
    if _handler.attached_address() is None and not join_from_environment():
        if _state.funnel is not None:
            return  # the installing process itself
        msg = "no funnel to join: call logfunnel.install() before creating the pool"
        raise RuntimeError(msg)


def _collector_address(url: str) -> str | None:
    """Return ``tcp:HOST:PORT`` for ``LOGFUNNEL_CONNECT=tcp://HOST:PORT`` (or tls://), else None."""
    kind, _, where = url.partition("://")
    host, _, port = where.rpartition(":")
    if kind not in ("tcp", "tls") or not host or not port.isdigit():
        if url:
            import sys  # noqa: PLC0415

            print(f"logfunnel: LOGFUNNEL_CONNECT={url!r}: give tcp://HOST:PORT", file=sys.stderr)
        return None
    return f"{kind}:{host}:{port}"
