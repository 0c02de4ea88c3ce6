"""The loggers records of a name start at, in adopt mode: found, never created.

The writer hands a record from another process to the installer's logger
tree as if it had been logged there (``dispatch.Dispatcher``), which starts at
the logger of the record's name.  ``logging.getLogger`` would make one for
every name a peer sends; ``Names`` reads the tree instead.

Who owns what: one ``Names`` per ``Dispatcher``, used by the writer thread
only; it holds no logger the tree does not hold.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["Names"]

# Record names resolved to the logger whose handlers get them (Names).
_NAME_CACHE_SIZE: Final = 4096


class Names:
    """The loggers records of a name start at, found without creating a logger per name.

    ``logging.getLogger(name)`` would create a logger (and keep it forever)
    for every name a peer sends: unbounded memory, and every barrier that
    walks the tree slower.  This reads the tree and never changes it.
    """

    def __init__(self) -> None:
        #: Record names with no logger of their own -> the logger a logger of
        #: that name would have as parent.
        self._parents: dict[str, logging.Logger] = {}
        self._valid_for: tuple[object, int] = (None, -1)  # the loggerDict they are valid for

    def logger_for(self, name: str) -> tuple[logging.Logger, bool]:
        """Return the logger a record of ``name`` starts at, and whether it is ``name``'s own.

        A name with no logger here behaves as a new, empty logger would: its
        records go to the handlers of the logger that would be its parent
        (``Manager._fixupParents``: the nearest dotted prefix that is a
        ``Logger``, not a ``PlaceHolder``) and up from there.

        Those parents are cached (at most ``_NAME_CACHE_SIZE`` names) only
        while the tree has as many entries as when they were found: a logger
        created later for the name or a prefix between it and its parent adds
        an entry, so it wins from the next record on.  A path through a
        ``PlaceHolder`` is never cached (a logger made there replaces the
        entry without adding one).  Handlers are read from the loggers at each
        record, so a handler added later is used at once.
        """
        root = logging.root
        if not name or name == root.name:
            return root, True
        loggers = root.manager.loggerDict
        found = loggers.get(name)
        if isinstance(found, logging.Logger):
            return found, True
        valid_for = (loggers, len(loggers))
        names = self._parents
        if self._valid_for[0] is not loggers or self._valid_for[1] != valid_for[1]:
            names.clear()
            self._valid_for = valid_for
        parent = names.get(name)
        if parent is not None and (parent is root or loggers.get(parent.name) is parent):
            return parent, False
        parent = root
        cacheable = found is None
        i = name.rfind(".")
        while i > 0:
            entry = loggers.get(name[:i])
            if entry is not None:
                if isinstance(entry, logging.Logger):
                    parent = entry
                    break
                cacheable = False
            i = name.rfind(".", 0, i - 1)  # as Manager._fixupParents
        if cacheable:
            if len(names) >= _NAME_CACHE_SIZE:
                del names[next(iter(names))]  # the oldest entry
            names[name] = parent
        return parent, False
