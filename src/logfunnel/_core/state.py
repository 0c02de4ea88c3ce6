"""Every piece of logfunnel's process-wide mutable state, in one place.

Nothing else in the package keeps state for the whole process: a module that
must remember something across calls keeps it here, under the name of what
it is, and says so.  What a forked child must forget is therefore one function,
``reset_after_fork()``, which ``fork`` runs first in every child.

Who writes what:

* the attachment -- ``address``, ``options`` / ``options_text``,
  ``connection``, ``attach_lock``, ``no_funnel_fallback``: ``handler``;
* the route -- ``deliver``, ``every_record``: ``route``;
* the installer's funnel -- ``funnel``, ``install_lock``: ``logfunnel._funnel``
  (through ``FunnelState``, so the core never imports it);
* handlers the fork sanitizer set aside, kept alive forever -- ``set_aside``,
  ``incref``; ``at_fork_registered``: ``fork``;
* the stack file ``SIGUSR2`` dumps into -- ``stack_file``: ``rundir``;
* the installer's levels this process applied -- ``levels_applied``: ``levels``;
* whether this process said why it does not share a file's writer --
  ``shared_file_warned``: ``logfunnel._shared`` (its ``claim.warn``).

This module imports only ``threading`` and ``options``: it is on every joining
interpreter's start-up path.
"""

from __future__ import annotations

import threading

from logfunnel._core.options import Options

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import IO, Any, Protocol

    from logfunnel._core.connection import Connection
    from logfunnel._core.fallback import Fallback

    class FunnelState(Protocol):
        """What the core asks of the installer's ``Funnel`` (``logfunnel._funnel``)."""

        def after_fork_in_child(self) -> None:
            """Close the writer's descriptors a forked child inherited."""


# -- the attachment (handler) -----------------------------------------------------------
address: str | None = None
options: Options | None = Options()
# LOGFUNNEL_OPTIONS as the start-up hook found it: parsed when the connection is
# made, so that a process that never logs never parses it.
options_text: str | None = None
connection: Connection | None = None
attach_lock = threading.RLock()  # re-entrant: a signal handler may log while it is held
no_funnel_fallback: Fallback | None = None

# -- the route (route) ------------------------------------------------------------------
deliver: Callable[[logging.LogRecord], None] | None = None
every_record = False

# -- the installer's funnel (logfunnel._funnel) ------------------------------------------
funnel: FunnelState | None = None
install_lock = threading.Lock()

# -- the fork sanitizer (fork) ----------------------------------------------------------
# Handlers set aside in this process.  They are kept alive *forever*: their
# streams may hold a parent thread's half-flushed buffer, and on 3.10-3.13 a
# BufferedWriter's internal lock is not re-created after fork, so finalising
# one at exit could write a parent's bytes a second time, or hang on the lock.
set_aside: list[logging.Handler] = []
incref: Any = None  # ctypes.pythonapi.Py_IncRef, imported on first use (start-up cost)
at_fork_registered = False

# -- diagnosis (rundir) -----------------------------------------------------------------
stack_file: IO[bytes] | None = None

# -- levels (levels) --------------------------------------------------------------------
#: The levels this process took from the installer: {name: level}, and "D" for disable.
levels_applied: dict[str, int] | None = None

# -- one writer per file (logfunnel._shared) ---------------------------------------------
#: True once this process said on stderr why it does not share (or follow) a file's writer.
shared_file_warned = False


def reset_after_fork() -> None:
    """In a forked child, before anything else: forget what belonged to the parent's threads.

    A parent's thread may have held either lock at the instant of ``fork()``:
    both are made anew.  The inherited connection is dropped unused --
    ``close()`` releases only this process's descriptor, so the parent's
    connection and any frame it is half-way through stay intact -- and the
    child opens its own on first use.  An inherited thread host's writer
    descriptors are closed by the funnel itself.  What the parent said on
    standard error is the parent's: a child that calls ``install(file=F)``
    itself and cannot share F's writer says so for its own part.
    """
    global attach_lock, install_lock, connection, shared_file_warned  # noqa: PLW0603 - the state
    attach_lock = threading.RLock()
    install_lock = threading.Lock()
    shared_file_warned = False
    inherited, connection = connection, None
    if inherited is not None:
        inherited.close()
    if funnel is not None:
        funnel.after_fork_in_child()
