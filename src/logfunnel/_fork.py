"""What happens in a forked child: fresh connection, writer descriptors closed, handlers sanitised.

``fork()`` copies a process's memory but only the thread that called it.  A
lock another thread held at that instant stays held in the child forever,
because the thread that would release it does not exist there.  ``logging``
itself re-creates its module lock and every ``Handler.lock`` in the child
(since Python 3.8), but not what a handler points to: a ``queue.Queue``'s
mutex (the seed program's hang), a buffered file's internal lock and
half-written buffer, a socket shared with the parent.

We do not try to take every such lock around ``fork()`` so that the child
inherits them free: CPython did that for handler locks in 3.7.1 and reverted
it (bpo-36533), because taking locks in a fixed order at fork time deadlocks
against threads that take them in another order.  Instead the child never
touches anything the parent's threads may have been using:

* its connection to the writer is dropped unused and a new one opened on first
  use (``_handler.after_fork_in_child``);
* a thread host's writer descriptors are closed (``Funnel.after_fork_in_child``);
* every handler inherited on every logger is set aside and replaced by one
  ``FunnelHandler`` per logger, at the lowest level the replaced handlers had
  (``sanitize_handlers``).  The writer hands the child's records to the
  installing process's handlers -- the very objects the child inherited copies
  of -- so output is the same as if the child had logged in the parent, and the
  child's copies of queues, streams and locks are never used.  A stand-in
  stands for the inherited configuration only: if the child then adds a
  handler of its own to that logger, the child's choice wins and the stand-in
  stays silent, so no record is written twice.

The hook runs in the child right after ``fork()`` returns there, before any of
the child's own code, with only one thread alive: it takes no lock that a
parent thread could have held (the locks it uses are created afresh first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Final

from logfunnel import _handler, _stacks
from logfunnel._options import apply_level_snapshot

# How long a forked child waits for the writer to tell it the current levels;
# past that it keeps the levels it inherited.  A writer that is gone answers at
# once (connection refused); one that is behind answers after its backlog, so
# the bound is generous: 2 s was seen to expire on a loaded 2-core machine.
_LEVELS_TIMEOUT: Final = 10.0

# Handlers set aside in this process.  They are kept alive *forever*: their
# streams may hold a parent thread's half-flushed buffer, and on 3.10-3.13 a
# BufferedWriter's internal lock is not re-created after fork, so finalising
# one at exit could write a parent's bytes a second time, or hang on the lock.
_set_aside: list[logging.Handler] = []
_incref: Any = None


def _keep_forever(obj: object) -> None:
    """Add a reference the interpreter does not know of, so ``obj`` is never finalised."""
    global _incref  # noqa: PLW0603 - ctypes is imported on first use only (start-up cost)
    if _incref is None:
        import ctypes  # noqa: PLC0415

        _incref = ctypes.pythonapi.Py_IncRef
        _incref.argtypes = [ctypes.py_object]
        _incref.restype = None
    _incref(obj)


def _loggers() -> list[logging.Logger]:
    manager = logging.root.manager
    return [
        logging.root,
        *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]


def sanitize_handlers() -> int:
    """Set aside every handler inherited from the parent; return how many were.

    Handlers on loggers are replaced by one ``FunnelHandler`` per logger, at the
    lowest level the replaced ones had.  Handlers on no logger (a
    ``QueueListener``'s targets, ``logging.lastResort``) are set aside too: the
    thread that used them in the parent may have been mid-write at the fork,
    and ``logging.shutdown()`` at this child's exit would flush them.
    """
    aside_ids: set[int] = set()
    for logger in _loggers():
        handlers = logger.handlers
        if not handlers or all(type(h) is _handler.FunnelHandler for h in handlers):
            continue
        level = min(h.level for h in handlers)
        for handler in handlers:
            if type(handler) is not _handler.FunnelHandler and id(handler) not in aside_ids:
                _set_aside_handler(handler)
                aside_ids.add(id(handler))
        logger.handlers = [_handler.FunnelHandler(level, stand_in_for=logger)]
    # logging.shutdown() at exit flushes and closes every handler in
    # _handlerList (weak references to every handler ever created here).
    handler_list = vars(logging)["_handlerList"]  # private, so not in typeshed
    kept = []
    for ref in handler_list:
        handler = ref()
        if handler is None or type(handler) is _handler.FunnelHandler:
            kept.append(ref)
        elif id(handler) not in aside_ids:
            _set_aside_handler(handler)
            aside_ids.add(id(handler))
    handler_list[:] = kept
    return len(aside_ids)


def _set_aside_handler(handler: logging.Handler) -> None:
    _set_aside.append(handler)
    # A module list is cleared during interpreter finalisation; an extra
    # reference the interpreter does not know of is not, so the object (and
    # its stream's buffer) is never finalised in this process.
    _keep_forever(handler)
    stream = getattr(handler, "stream", None)
    if isinstance(handler, logging.FileHandler) and stream is not None:
        # Point the child's copy of a sink's file descriptor at /dev/null: a
        # buffer inherited mid-write can then never reach the file twice.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def _after_fork_in_child() -> None:
    _handler.after_fork_in_child()
    # Through sys.modules: a process that only joined a funnel never imports
    # _install (it would cost every new interpreter its start-up time).
    install_module = sys.modules.get("logfunnel._install")
    funnel = install_module.current() if install_module is not None else None
    parent_installed = funnel is not None and funnel._owner_pid == os.getppid()
    if funnel is not None:
        funnel.after_fork_in_child()
    if _handler.attached_address() is None:
        return
    sanitize_handlers()
    _stacks.register(_handler.attached_address())
    if not parent_installed:
        # The parent got its levels when it started (a forkserver, or a child
        # with a pool of its own): a setLevel in the installing process since
        # then only the writer knows of.  Ask before any of our code logs.
        connection = _handler.current_connection()
        if connection is not None:
            snapshot = _handler.request_levels(connection, _LEVELS_TIMEOUT)
            if snapshot is not None:
                apply_level_snapshot(snapshot)


_registered = False


def register() -> None:
    """Install the at-fork hook once per interpreter."""
    global _registered  # noqa: PLW0603 - registration happens once
    if not _registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _registered = True
