"""How a record reaches the funnel without occupying a single handler of the program's.

A process's own logging configuration must work exactly as without logfunnel,
and most of it looks at handlers: ``basicConfig()`` does nothing when the root
already has one, frameworks replace the root's handlers (Celery's
``worker_hijack_root_logger``), libraries add a ``StreamHandler`` when a logger
has none, pytest puts its capture handlers in.  A ``FunnelHandler`` on the
root would be seen, counted and removed by all of them.  So the funnel is not
a handler.  ``Logger.callHandlers`` -- the one call every record that passed
a logger's level and filters goes through -- is replaced, once per process,
by this module's copy of it, which also delivers the record::

    logger.info(...) -> Logger.handle (level, filters) -> callHandlers (this copy):
        0. the fields of the ``logfunnel.context()`` blocks it was logged in
           become attributes it lacks (``_fields.attach``); on 3.10 and 3.11
           the running asyncio task's name becomes ``taskName``
        1. the process's own handlers, called exactly as the stdlib calls them
        2. the funnel (``_state.deliver``), when
             - its sinks are install()'s own (``every_record``): always;
             - adopt mode: when no handler of the process's own met the record
               (a ``NullHandler`` or an inherited stand-in is not one);
             - a ``FunnelHandler`` added by hand met it at its level
        3. ``logging.lastResort`` only if nothing at all took the record

The copy is the stdlib's (identical from 3.10 to 3.13) plus steps 2 and 3's
condition, so a process that is not attached behaves exactly as without it.

The funnel counts as a handler where ``logging`` itself looks for one to pick
a fallback: ``logging.lastResort`` (step 3), and the implicit ``basicConfig()``
that ``logging.info()`` and its siblings run when the root has no handler.
That one would give an attached child a stderr handler of its own at its
first ``logging.info()``, and the record would stay there instead of reaching
the funnel (the article's program, under spawn).  So while a process
delivers, that implicit call -- and only it: a ``basicConfig()`` the program
calls itself works as always -- does nothing.

Who owns what: ``_state.deliver`` and ``_state.every_record`` are this process's; they are
set by ``enable()`` (the start-up hook, the at-fork hook, ``install()``) and
cleared by ``disable()`` (``Funnel.shutdown()``).
"""

from __future__ import annotations

import logging
import sys

from logfunnel._core import fields as _fields
from logfunnel._core import state as _state
from logfunnel._core.handler import FunnelHandler

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Deliver = Callable[[logging.LogRecord], None]

_stdlib_call_handlers = logging.Logger.callHandlers
_stdlib_basic_config = logging.basicConfig
# The module-level functions whose first use configures the root implicitly.
_IMPLICIT_CALLERS = frozenset(
    f.__code__
    for f in (logging.critical, logging.error, logging.warning, logging.info, logging.debug,
              logging.log)
)


# LogRecord.taskName (the asyncio task's name) is 3.12's; before that the route
# names the task itself, once asyncio is imported (a dict lookup per record until then).
_TASK_BY_HAND = "taskName" not in logging.makeLogRecord({}).__dict__


def _add_task_name(record: logging.LogRecord) -> None:
    """Set ``record.taskName`` as 3.12's ``LogRecord`` does, if a task is running (3.10, 3.11)."""
    asyncio: Any = sys.modules["asyncio"]
    try:
        loop = asyncio._get_running_loop()
        task = None if loop is None else asyncio.current_task(loop)
    except Exception:  # a half-imported or replaced asyncio: no task name, never an error
        return
    if task is not None and "taskName" not in record.__dict__:
        record.__dict__["taskName"] = task.get_name()


# The fields of the logfunnel.context() blocks this thread or task is in (None
# outside any): one C call per record, bound once (structlog #297, #425).
_context_fields = _fields.CURRENT.get


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    """Pass a record to all relevant handlers, and to the funnel (see the module doc)."""
    fields = _context_fields()
    if fields is not None:  # before every handler: the program's own see the fields too
        _fields.attach(record, fields)
    if _TASK_BY_HAND and "asyncio" in sys.modules:
        _add_task_name(record)
    c: logging.Logger | None = self
    found = 0
    own = False
    asked = False
    while c:
        for hdlr in c.handlers:
            found += 1
            if isinstance(hdlr, FunnelHandler):
                # One delivery per record, however many FunnelHandlers it meets.
                if (
                    not asked
                    and hdlr.stand_in_for is None
                    and record.levelno >= hdlr.level
                    and (not hdlr.filters or hdlr.filter(record))
                ):
                    asked = True
                continue
            if not own and not isinstance(hdlr, logging.NullHandler):
                own = True
            if record.levelno >= hdlr.level:
                hdlr.handle(record)
        c = c.parent if c.propagate else None
    deliver = _state.deliver
    if deliver is not None and (asked or _state.every_record or not own):
        deliver(record)
    elif found == 0:
        last = logging.lastResort
        if last:
            if record.levelno >= last.level:
                last.handle(record)
        elif logging.raiseExceptions and not self.manager.emittedNoHandlerWarning:
            sys.stderr.write(f'No handlers could be found for logger "{self.name}"\n')
            self.manager.emittedNoHandlerWarning = True


_call_handlers.__doc__ = _stdlib_call_handlers.__doc__


def _basic_config(**kwargs: Any) -> None:
    """``logging.basicConfig``, except the implicit call of ``logging.info()`` and friends."""
    if not kwargs and _state.deliver is not None and sys._getframe(1).f_code in _IMPLICIT_CALLERS:
        return  # the funnel takes this process's records: no stderr handler of logging's own
    _stdlib_basic_config(**kwargs)


_basic_config.__doc__ = _stdlib_basic_config.__doc__
# It stands for logging.basicConfig (which logging.__all__ lists as its own).
_basic_config.__module__, _basic_config.__qualname__ = "logging", "basicConfig"
_basic_config.__wrapped__ = _stdlib_basic_config  # type: ignore[attr-defined]


def enable(deliver: Deliver, *, every_record: bool) -> None:
    """Deliver this process's records with ``deliver`` from now on.

    ``deliver`` must never raise: it is called inside the program's logging calls.
    """
    _state.deliver, _state.every_record = deliver, every_record
    if logging.Logger.callHandlers is not _call_handlers:
        logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]
    if logging.basicConfig is _stdlib_basic_config:
        logging.basicConfig = _basic_config


def rebind(deliver: Deliver) -> None:
    """In a forked child: deliver with ``deliver``, keeping the parent's routing rule.

    A parent that delivers nothing (an adopt-mode installer) has children that
    deliver in adopt mode; one with install()'s own sinks, children that
    deliver every record.
    """
    enable(deliver, every_record=_state.every_record if _state.deliver is not None else False)


def _call_handlers_with_context(self: logging.Logger, record: logging.LogRecord) -> None:
    """``callHandlers`` of a process that delivers nothing: context fields, then the stdlib's."""
    fields = _context_fields()
    if fields is not None:
        _fields.attach(record, fields)
    _stdlib_call_handlers(self, record)


_call_handlers_with_context.__doc__ = _stdlib_call_handlers.__doc__


def keep_for_context() -> None:
    """Add ``context()`` fields to records of a process that does not deliver.

    A process that enters a ``logfunnel.context()`` block without a funnel
    (or an adopt-mode installer, whose own records are not delivered) gets
    the stdlib's ``callHandlers`` preceded by ``_fields.attach``: the fields
    on its records, and nothing else changed (a ``FunnelHandler`` there still
    falls back to standard error by itself).
    """
    if logging.Logger.callHandlers is _stdlib_call_handlers:
        logging.Logger.callHandlers = _call_handlers_with_context  # type: ignore[method-assign]


def disable() -> None:
    """Stop delivering: ``callHandlers`` is the stdlib's again (with context fields, if used)."""
    _state.deliver = None
    if logging.Logger.callHandlers is _call_handlers:
        logging.Logger.callHandlers = (  # type: ignore[method-assign]
            _call_handlers_with_context if _fields.in_use else _stdlib_call_handlers
        )
    if logging.basicConfig is _basic_config:
        logging.basicConfig = _stdlib_basic_config


def enabled() -> bool:
    """Tell whether this process delivers to a funnel."""
    return _state.deliver is not None
