"""``install()`` and ``current()``: the public entry to a funnel.

``install()`` checks its arguments whole first (``_settings.check``): wrong
configuration fails here, with a message that says what to change, before
anything is started.  A child of the installer calling ``install()`` again gets
a handle to the funnel it already sends to (``_joined_child``).  Everything
else -- starting the writer, publishing the funnel to children, undoing it all
on failure or at shutdown -- is ``_running``'s.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logfunnel._core.options import OnFull

from logfunnel import _remote, _settings, _shared
from logfunnel._core import bootstrap as _bootstrap
from logfunnel._core import state as _state
from logfunnel._core.options import (
    DEFAULT_FRAME_LIMIT,
    ENV_ADDRESS,
    ENV_INSTALLER,
    ENV_OPTIONS,
    Options,
)
from logfunnel._running import Funnel
from logfunnel._settings import Host


def current() -> Funnel | None:
    """Return the funnel this process installed or inherited, if any."""
    funnel = _state.funnel
    return funnel if isinstance(funnel, Funnel) else None


def install(
    *,
    file: str | os.PathLike[str] | None = None,
    level: int | str | None = None,
    fmt: str | None = None,
    datefmt: str | None = None,
    max_bytes: int = 0,
    backups: int = 0,
    when: str | None = None,
    interval: int = 1,
    utc: bool = False,
    max_age: float | dt.timedelta | None = None,
    compress: str | None = None,
    watch: bool = False,
    json: bool = False,
    console: bool = False,
    config: dict[str, Any] | None = None,
    host: Host | None = None,
    on_full: OnFull = "block",
    full_timeout: float = 0.1,
    fallback: str | os.PathLike[str] | None = None,
    frame_limit: int = DEFAULT_FRAME_LIMIT,
    listen: str | None = None,
    token: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    connect: str | None = None,
    syslog: str | None = None,
    syslog_facility: str | int = "user",
    syslog_app_name: str | None = None,
    syslog_ca: str | os.PathLike[str] | None = None,
    otlp: str | None = None,
) -> Funnel:
    """Start a writer and make every process of this program log through it.

    This process's own logging configuration stays exactly as it is, and so
    does every child's: ``basicConfig()``, ``dictConfig()`` and handlers work
    as without logfunnel, before or after this call.

    With no sink options (adopt mode), records from every child process
    (fork, spawn, forkserver, ``subprocess`` Python children, joblib/loky
    workers) that the child's own configuration does not handle are handed
    to this process's handlers, as if they had been logged here.

    With ``file=``, ``json=``, ``console=`` or a ``logging.config.dictConfig``
    ``config=``, every record of every process, this one's included, also
    goes to those sinks, whatever each process configures for itself.

    The file rotates at ``max_bytes``, and/or by time: ``when`` ("S", "M",
    "H", "D" or "midnight", "W0"-"W6"), every ``interval`` of those, in local
    time unless ``utc``; rotated files are named ``app.log.1``, ``.2``... (by
    size only, newest first) or ``app.log.2026-12-01``, then ``.1``, ``.2``
    (by time), never over an existing file.  ``backups`` (a count) and
    ``max_age`` (seconds or a ``timedelta``) say what the writer keeps of
    them; ``compress="gzip"`` compresses them in a worker thread of the
    writer.  ``watch=True`` instead reopens a file that something else
    (logrotate) moved or removed.
    ``level`` sets the root logger's level everywhere.

    ``host="process"`` runs the writer in a fresh interpreter of its own
    (started with exec, never forked), which needs sink options and is
    restarted if it dies; it is the default with sink options (not with
    ``config=``), so this program keeps its threads and its GIL to itself.
    ``host="thread"`` runs it in a thread of this process: the default in
    adopt mode and with ``config=``, whose handlers live here.

    ``listen="tcp:HOST:PORT"`` also accepts processes on other hosts (port 0
    picks a free one: see ``Funnel.remote_address``).  They set
    ``LOGFUNNEL_ADDRESS`` to that address and ``LOGFUNNEL_TOKEN`` to
    ``Funnel.token`` (``token=``, or a random one), and must prove they know
    it before anything they send is decoded.  With ``tls_cert=`` (a PEM
    certificate chain, and ``tls_key=`` unless the key is in it) the listener
    speaks TLS: the address is ``tls:HOST:PORT``, and peers verify the writer
    against ``LOGFUNNEL_TLS_CA`` (or the system's CAs) before answering.

    ``syslog="tcp://HOST:PORT"`` (RFC 6587 octet counting), ``"udp://..."`` or
    ``"tls://..."`` (RFC 5425, verified against ``syslog_ca`` or the system's
    CAs) also exports every record to a syslog collector (rsyslog, syslog-ng)
    as RFC 5424 messages: facility ``syslog_facility`` (default ``"user"``),
    APP-NAME ``syslog_app_name`` (default: the program's name), PROCID the
    pid that logged, MSGID the logger name, extras as STRUCTURED-DATA.  A
    thread of the writer sends them from a bounded queue: a collector that is
    down or slow never holds back the other sinks; what it cannot take is
    dropped, counted (``Stats.exported_dropped``) and reported once.  Like
    ``json=``, it writes the console too unless ``file=`` is given.  See
    docs/export.md.

    ``otlp="http://HOST:4318"`` also exports every record to an OpenTelemetry
    collector over OTLP/HTTP (protobuf, gzip; needs ``logfunnel[otlp]``):
    batched by a thread of the writer, retried with back-off on 429/502/503/504
    and while the collector is down, from a bounded queue whose drops are
    counted (``Stats.exported_dropped``) and reported once.  See docs/export.md.

    ``connect="tcp://HOST:PORT"`` (or ``"tls://..."``) starts no writer: this
    process, and every child it starts, sends to a collector on another host
    (``logfunnel serve``, which owns the sinks), proving ``token=`` (or
    ``LOGFUNNEL_TOKEN``), exactly as a child sends to its installer: records
    in the kernel before the call returns, the fallback while the collector
    is away, reconnecting once a second.  ``flush()`` is a barrier at the
    collector.  ``LOGFUNNEL_CONNECT`` (and ``LOGFUNNEL_TOKEN``) in the
    environment does the same for a program that does not call install().

    Calling it again while a funnel runs in this process raises
    ``RuntimeError``.  Called in a child of the installing process (a forked
    child, or a main module re-imported under spawn) with the same arguments
    (or none), it returns a handle to that funnel; with other arguments it
    raises ``ValueError``.

    Raises ``ValueError`` with a message saying what to change when an option
    cannot work; then nothing has changed.
    """
    arguments = dict(locals())
    with _state.install_lock:
        installed = current()
        if installed is not None and not installed._closed and installed.owner:
            msg = (
                f"logfunnel is already installed in this process ({installed!r}); "
                "call shutdown() on it first, or use the Funnel that install() returned"
            )
            raise RuntimeError(msg)
        joined = _joined_child(arguments)
        if joined is not None:
            return joined
        settings = _settings.check(arguments)
        funnel = (  # _shared: one writer per file, whoever installs it first
            _shared.install(settings, arguments)
            if settings.connect is None
            else _remote.connect(settings)
        )
        _state.funnel = funnel
        return funnel


def _joined_child(arguments: dict[str, Any]) -> Funnel | None:
    """Return a handle if this process is a child of the installer calling install() again.

    A forked child has the parent's ``Funnel``; a multiprocessing child under
    spawn or forkserver (a main module without ``if __name__ == "__main__":``)
    has ``LOGFUNNEL_INSTALLER`` in its environment.  Such a child joins if it
    asks for what the installer asked for (or for nothing); asking for
    something else cannot be honoured, and saying so beats ignoring it.
    """
    fingerprint = _settings.fingerprint(arguments)
    parent = current()
    if parent is not None and parent._closed:
        parent = None
    installer = os.environ.get(ENV_INSTALLER, "")
    address = os.environ.get(ENV_ADDRESS)
    if parent is not None:
        installer_pid, installed_with = str(parent._owner_pid), parent._fingerprint
    else:
        mp = sys.modules.get("multiprocessing")
        # A pool worker has a parent_process(); a spawn child re-importing the main
        # module does not yet, but multiprocessing marks it as _inheriting.
        if not address or not installer or mp is None:
            return None
        if mp.parent_process() is None and not getattr(mp.current_process(), "_inheriting", False):
            return None
        installer_pid, _, installed_with = installer.partition(":")
    if fingerprint not in (installed_with, _settings.defaults_fingerprint()):
        msg = (
            f"this process ({os.getpid()}) is a child of the funnel that process "
            f"{installer_pid} installed with other options, and its records already go there. "
            f"Call install() once, in the main process (under `if __name__ == '__main__':`), "
            f"or call it here with the same options, or none, to get a handle to that funnel"
        )
        raise ValueError(msg)
    if parent is not None:
        return parent
    assert address is not None  # checked above
    _bootstrap.join_from_environment()
    funnel = Funnel(address, "thread", Options.from_env(os.environ.get(ENV_OPTIONS)), owner=False)
    funnel._fingerprint = installed_with
    return funnel


@atexit.register
def _shutdown_at_exit() -> None:
    """Drain at interpreter exit (the installing process only: children never own it)."""
    funnel = current()
    if funnel is not None and funnel.owner:
        funnel.shutdown()
