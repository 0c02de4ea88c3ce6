"""The context fields where the route reads them: ``CURRENT``, and ``attach`` onto a record.

The fields of the ``logfunnel.context()`` blocks a thread or task is in live
in a ``ContextVar`` (``CURRENT``, a dict or None): nested blocks merge (the
inner value wins), every thread and asyncio task sees its own, leaving a block
restores what was there.  The route (``route._call_handlers``, which every
record of an attached process goes through, before the program's own
handlers) reads it once per record; when it holds fields, ``attach`` sets
each as an attribute the record does not already have, and ``CONTEXT_ATTR``
to the dict itself.  So ``%(job)s`` works in any formatter, the fields travel
as extras on the wire, and the JSON formatter puts them under ``"context"``.
Not a ``logging`` record factory: ``setLogRecordFactory`` is one global slot
that programs use themselves (a factory set after ours would silently drop the
context, ours after theirs would have to chain), while the route is already
there.

Apart from ``context``, which enters and leaves the blocks and carries them to
other processes: the route needs only what is here, and ``context`` needs the
route (it makes the route run in a process that enters a block), so this
module is what both import and the dependency runs one way,
``context -> route -> fields``.

Who owns what: ``CURRENT`` is per thread and task (contextvars), set only by
``context``; ``in_use`` is process-wide, set once by ``context`` and read by
``route.disable``.  A forked child keeps it as it is (its ``callHandlers`` is
the parent's, fields and all).  Imports ``contextvars`` only: every process
that joins a funnel imports this module at start-up.
"""

from __future__ import annotations

import contextvars

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import logging
    from typing import Final

    Fields = dict[str, "str | int | float | bool | None"]

#: The fields of the blocks the current thread or task is in, or None outside any.
CURRENT: Final[contextvars.ContextVar[Fields | None]] = contextvars.ContextVar(
    "logfunnel_context", default=None
)
#: The record attribute holding the dict of context fields (JSON's ``"context"``).
CONTEXT_ATTR: Final = "logfunnel_context"
#: True once a block was entered here: the route stays, even after ``shutdown()``.
in_use = False


def attach(record: logging.LogRecord, fields: Fields) -> None:
    """Add ``fields`` to ``record``: each one it lacks, and ``CONTEXT_ATTR`` (called by the route).

    A record that already has ``CONTEXT_ATTR`` (handled twice, or made in
    another process) keeps what it has; an attribute the record already has
    (an ``extra=`` of the same name) is never overwritten.
    """
    attrs = record.__dict__
    if CONTEXT_ATTR in attrs:
        return
    for key, value in fields.items():
        if key not in attrs:
            attrs[key] = value
    attrs[CONTEXT_ATTR] = fields
