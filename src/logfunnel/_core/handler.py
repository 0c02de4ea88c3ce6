"""``FunnelHandler``, and the attachment: which funnel this process sends to, over which connection.

Who owns what: the attachment (``state.address``, ``state.options``,
``state.connection``) is this process's, and only this module writes it.
``attach()`` sets it (the start-up hook, the at-fork hook,
``install(host="process")``); in a forked child ``state.reset_after_fork()``
drops the inherited connection unused, so a lock or half-sent frame a parent's
thread held at the instant of ``fork()`` is never touched, and the child opens
its own connection on first use.  The connection module (sockets, the codec) is imported only
then: a process that never logs never pays for it.
"""

from __future__ import annotations

import logging
import sys

from logfunnel._core import state as _state
from logfunnel._core.options import Options

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from logfunnel._core.connection import Connection
    from logfunnel._core.fallback import Fallback

def attach(address: str, options: Options) -> None:
    """Make ``address`` the funnel this process sends to."""
    with _state.attach_lock:
        if _state.connection is not None:
            _state.connection.close()
        _state.address, _state.options, _state.connection = address, options, None


def attach_from_environment(address: str, options_text: str | None) -> None:
    """Make ``address`` the funnel this process sends to, with options still as JSON text."""
    with _state.attach_lock:
        if _state.connection is not None:
            _state.connection.close()
        _state.address, _state.options, _state.connection = address, None, None
        _state.options_text = options_text


def detach() -> None:
    """Forget the funnel: records delivered from now on go to standard error."""
    with _state.attach_lock:
        if _state.connection is not None:
            _state.connection.close()
        _state.address, _state.connection = None, None


def attached_address() -> str | None:
    """Return the address this process sends to, if any."""
    return _state.address


def attached_options() -> Options:
    """Return the options this process sends with."""
    if _state.options is None:
        _state.options = Options.from_env(_state.options_text)
    return _state.options


def current_connection() -> Connection | None:
    """Return this process's connection to its funnel, creating it on first use."""
    connection = _state.connection
    if connection is not None or _state.address is None:
        return connection
    # Imported and built outside the lock: a signal handler that logs while this
    # thread is here must not wait on a lock its own thread holds (building a
    # Connection does not connect, so a second one built meanwhile costs nothing).
    from logfunnel._core.connection import Connection  # noqa: PLC0415 - on first use

    built = Connection(_state.address, attached_options())
    with _state.attach_lock:
        if _state.connection is None and _state.address == built.address:
            _state.connection = built
        return _state.connection


def send(record: logging.LogRecord) -> None:
    """Send ``record`` to the funnel (or, with none attached, to standard error); never raises.

    The route (``_route``) calls this inside the program's logging calls.
    """
    try:
        connection = _state.connection or current_connection()
        if connection is None:
            _fallback_without_funnel().record(record)
        else:
            connection.send_record(record)
    except ImportError:
        # The first record of a process that is shutting down (a __del__ that
        # logs during finalisation): the connection module can no longer be
        # imported.  Do what logging does without a handler, as without logfunnel.
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)
    except Exception:
        _report_failure(record)


def _fallback_without_funnel() -> Fallback:
    if _state.no_funnel_fallback is None:
        from logfunnel._core.fallback import Fallback  # noqa: PLC0415 - on first use

        _state.no_funnel_fallback = Fallback(None)
    return _state.no_funnel_fallback


def _report_failure(record: logging.LogRecord) -> None:
    """Say on stderr that a record could not be sent, as ``Handler.handleError`` would."""
    if logging.raiseExceptions:
        try:
            exc = sys.exc_info()[1]
            sys.stderr.write(
                f"--- logfunnel: could not send a record of {record.name!r} "
                f"({type(exc).__name__}: {exc})\n"
            )
        except Exception:  # noqa: S110 - stderr itself failing: nothing is left to tell
            pass


class FunnelHandler(logging.Handler):
    """Send records to the funnel this process is attached to.

    Never needed: an attached process delivers every record without any
    handler (see ``_route``).  Add one to a logger to ask for that logger's
    records to go to the funnel even where the process's own handlers take
    them in adopt mode; a record is still sent once, however many
    FunnelHandlers it meets.  Called directly (by a ``QueueListener``, say),
    it sends the record it is given.  With no funnel attached, records go to
    standard error.

    ``stand_in_for`` marks the handlers the fork sanitizer puts in place of
    inherited ones: they keep ``logger.handlers`` looking as it did in the
    parent (so ``basicConfig()`` and "add a handler if there is none" checks
    behave as they would without logfunnel); the route skips them.
    """

    def __init__(
        self, level: int | str = logging.NOTSET, *, stand_in_for: logging.Logger | None = None
    ) -> None:
        """Create a handler sending to this process's funnel."""
        super().__init__(level)
        self.stand_in_for = stand_in_for

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and send ``record``; the connection's own lock serialises threads.

        Unlike ``Handler.handle`` this does not take the handler lock: the only
        shared state is the connection, which has a lock of its own.
        """
        rv = self.filter(record) if self.filters else True
        if rv:
            if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = rv
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        """Encode ``record`` and write it to the writer before returning.

        The route never calls this (it delivers once per record itself), so
        whoever does -- a ``QueueListener``, a logger class with a
        ``callHandlers`` of its own -- means this record to be sent.
        """
        send(record)

    def flush(self) -> None:
        """Do nothing: records are in the kernel once emit returns (``Funnel.flush`` waits)."""

    def __repr__(self) -> str:
        """Show the level and the address this handler sends to."""
        level = logging.getLevelName(self.level)
        kind = "stand-in " if self.stand_in_for is not None else ""
        return f"<FunnelHandler {kind}{_state.address or '(no funnel attached)'} ({level})>"
