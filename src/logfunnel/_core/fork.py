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
  stand-in ``FunnelHandler`` per logger (``sanitize_handlers``), so
  ``logger.handlers`` looks as it did in the parent and ``basicConfig()`` or
  "add a handler if there is none" behave as they would without logfunnel.
  Stand-ins deliver nothing and do not count as the child's own handlers: the
  route (``_route``) sends the child's records to the writer, which hands
  them to the installing process's handlers -- the very objects the child
  inherited copies of -- so output is as if the child had logged in the
  parent, and the child's copies of queues, streams and locks are never used.
  A handler the child adds itself is its own configuration, and works as
  without logfunnel;
* the queues inherited ``QueueHandler``s feed get fresh locks, for the
  program's own exit hooks (``_renew_queue_locks``);
* a child forked by a process that joined through the environment (a
  forkserver's) takes the installer's level changes since (``_levels``).

The hook runs in the child right after ``fork()`` returns there, before any of
the child's own code, with only one thread alive: it takes no lock that a
parent thread could have held (the locks it uses are created afresh first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from logfunnel._core import handler as _handler
from logfunnel._core import levels as _levels
from logfunnel._core import route as _route
from logfunnel._core import rundir as _rundir
from logfunnel._core import state as _state

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

def _keep_forever(obj: object) -> None:
    """Add a reference the interpreter does not know of, so ``obj`` is never finalised."""
    if _state.incref is None:
        import ctypes  # noqa: PLC0415

        _state.incref = ctypes.pythonapi.Py_IncRef
        _state.incref.argtypes = [ctypes.py_object]
        _state.incref.restype = None
    if obj is not None:
        _state.incref(obj)


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
    _state.set_aside.append(handler)
    _renew_queue_locks(handler)
    stream = getattr(handler, "stream", None)
    if _finalising_could_write(stream):
        # A module list is cleared during interpreter finalisation; an extra
        # reference the interpreter does not know of is not, so the object (and
        # its stream's buffer) is never finalised in this process.
        _keep_forever(handler)
    if isinstance(handler, logging.FileHandler) and stream is not None:
        # Point the child's copy of a sink's file descriptor at /dev/null: a
        # buffer inherited mid-write can then never reach the file twice.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def _finalising_could_write(stream: object) -> bool:
    """Tell whether finalising ``stream`` in this child could flush a parent's buffer.

    Only an ``io`` object has a buffer and a finaliser that flushes it; the
    standard streams are flushed at exit with or without us, and logfunnel's
    own file sinks write through a ``LineFile``, which has neither.  Deciding
    this spares most children the 2 ms ``ctypes`` import of ``_keep_forever``.
    """
    io = sys.modules.get("io")
    if stream is None or io is None or not isinstance(stream, io.IOBase):
        return False
    return stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def prepare_in_installer() -> None:
    """Import what a forked child may need, so each child does not import it again.

    A child inherits the installer's modules: ``ctypes`` imported here once
    costs a forked child nothing, where importing it there costs ~2 ms each.
    """
    if any(_finalising_could_write(getattr(ref(), "stream", None)) for ref in _handler_refs()):
        _keep_forever(None)
    # The sending side is imported at a process's first record.  In the installer
    # that may be on any of the program's threads, and a fork() while that thread
    # is inside the import leaves the child a half-initialised module whose import
    # lock nobody will ever release: the child's first record would wait on it
    # forever (seen: tests/test_fork_storm.py, process host, 2 runs in 6).  Imported
    # here, before install() returns, every forked child finds them complete.
    from logfunnel._core import connection, formatters  # noqa: F401, PLC0415


def _handler_refs() -> list[Any]:
    return list(vars(logging)["_handlerList"])  # private, so not in typeshed


def _renew_queue_locks(handler: logging.Handler) -> None:
    """Give a ``queue.Queue`` that an inherited ``QueueHandler`` feeds locks of its own.

    The child never uses the handler again, but the program's own code may
    still reach its queue: the cookbook's ``atexit.register(listener.stop)``
    puts a sentinel on it when the child exits.  A parent's thread may have
    held the queue's mutex at the instant of ``fork()`` (the seed's hang), and
    nothing in the child would ever release it.  The queue's contents are the
    parent's, and stay as they are.
    """
    queue_module = sys.modules.get("queue")
    queue = getattr(handler, "queue", None)
    if queue_module is None or not isinstance(queue, queue_module.Queue):
        return
    mutex = threading.Lock()
    queue.mutex = mutex
    queue.not_empty = threading.Condition(mutex)
    queue.not_full = threading.Condition(mutex)
    queue.all_tasks_done = threading.Condition(mutex)


def _after_fork_in_child() -> None:
    _state.reset_after_fork()
    address = _handler.attached_address()
    if address is None:
        return
    sanitize_handlers()
    # The installer may deliver to sinks in its own process; a child sends.
    _route.rebind(_handler.send)
    _rundir.register_stacks(address)
    _levels.refresh_after_fork(_rundir.levels_path(address))


def register() -> None:
    """Install the at-fork hook once per interpreter."""
    if not _state.at_fork_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _state.at_fork_registered = True
