"""What ``install()`` may change in the program's logging, kept so it can be put back exactly.

``install()`` is all-or-nothing and ``shutdown()`` undoes it: both restore a
``TreeSnapshot`` taken before anything was changed.  Who owns what: the
installing ``Funnel`` holds its snapshot; nothing else reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any


@dataclasses.dataclass
class _LoggerState:
    logger: logging.Logger
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool
    filters: list[Any]


@dataclasses.dataclass
class TreeSnapshot:
    """The handlers, level, propagation and filters of every logger, and ``logging.disable``."""

    loggers: list[_LoggerState]
    disable: int
    names: set[str]

    @classmethod
    def take(cls) -> TreeSnapshot:
        """Record the logger tree as it is now."""
        manager = logging.root.manager
        loggers: list[logging.Logger] = [logging.root]
        loggers += [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        return cls(
            loggers=[
                _LoggerState(
                    lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled, list(lg.filters)
                )
                for lg in loggers
            ],
            disable=manager.disable,
            names=set(manager.loggerDict),
        )

    def restore(self) -> None:
        """Put every logger back as it was, and close handlers that were added since.

        A handler that was on a logger before stays open; one that appeared
        since (a ``config=`` dictConfig's) is removed and closed.  Loggers
        created since keep existing (code may hold them) but lose what was
        added to them.
        """
        before = {id(h) for state in self.loggers for h in state.handlers}
        added: dict[int, logging.Handler] = {}
        manager = logging.root.manager
        for name, logger in list(manager.loggerDict.items()):
            if name not in self.names and isinstance(logger, logging.Logger):
                for handler in logger.handlers:
                    added.setdefault(id(handler), handler)
                logger.handlers = []
                logger.setLevel(logging.NOTSET)
                logger.propagate, logger.disabled, logger.filters = True, False, []
        for state in self.loggers:
            for handler in state.logger.handlers:
                if id(handler) not in before:
                    added.setdefault(id(handler), handler)
            logger = state.logger
            logger.handlers = list(state.handlers)
            logger.setLevel(state.level)
            logger.propagate, logger.disabled = state.propagate, state.disabled
            logger.filters = list(state.filters)
        if manager.disable != self.disable:
            logging.disable(self.disable)
        for handler in added.values():
            with contextlib.suppress(Exception):
                handler.flush()
                handler.close()
