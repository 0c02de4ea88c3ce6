"""A running funnel: the ``Funnel`` handle, and the steps that start it, in order.

``start()`` does every step of ``install()`` (``_funnel``) in order, building
the ``Funnel`` as it goes; if a step fails, ``Funnel._undo()`` takes back every
step already done and the program's logging is as it was.  ``shutdown()``
drains the writer, then runs the same ``_undo()``.

Who owns what: a ``Funnel`` belongs to the process that installed it (its
``_owner_pid``): there it owns the writer (a thread, or the process host's
supervisor and its control socket), the private directory, the levels file
and the environment it published.  A forked child inherits the object and
only forwards ``flush()`` to the writer; ``state.reset_after_fork()`` makes it
let go of the writer's descriptors.

It never touches the program's handlers.  With install()'s own sinks
(``file=``, ``json=``, ``console=``) the sinks are not put on the root logger
either: they are the writer's, and this process's records reach them through
the route (``_core/route.py``), like every other process's.  Only ``config=``
with the thread host configures this process's logger tree (that is what a
dictConfig is), and ``shutdown()`` puts the tree back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import logging.config
import os
import subprocess
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is 3.11+; only mypy needs the name
    import socket
    from collections.abc import Callable

    from typing_extensions import Self

    from logfunnel._core.writer import Writer

from logfunnel import _hosts
from logfunnel._core import adopt_render as _adopt_render
from logfunnel._core import auth as _auth
from logfunnel._core import dial as _dial
from logfunnel._core import fork as _fork
from logfunnel._core import handler as _handler
from logfunnel._core import levels as _levels
from logfunnel._core import route as _route
from logfunnel._core import rundir as _rundir
from logfunnel._core import state as _state
from logfunnel._core import wire as _wire
from logfunnel._core.dispatch import Stats
from logfunnel._core.options import (
    ENV_ADDRESS,
    ENV_INSTALLER,
    ENV_OPTIONS,
    ENV_TOKEN,
    Options,
    parse_level,
)
from logfunnel._settings import Host, Settings
from logfunnel._snapshot import TreeSnapshot
from logfunnel.sinks import build as _build

_ENV_KEYS = (ENV_ADDRESS, ENV_OPTIONS, ENV_TOKEN, ENV_INSTALLER)


class Funnel:
    """A running funnel: its writer's address, and the barrier and shutdown calls.

    Returned by ``install()``.  In the installing process it owns the writer;
    in a child it only forwards ``flush()`` to that writer (``shutdown()`` is
    then a no-op), so code that holds on to the object works anywhere.
    """

    def __init__(self, address: str, host: Host, options: Options, *, owner: bool) -> None:
        """Create a handle; use ``install()`` rather than this."""
        self.address = address
        self.host: Host = host
        self.options = options
        self._owner_pid = os.getpid() if owner else -1
        #: Sends to a collector on another host (``install(connect=...)``): no writer here.
        self.remote = False
        self._lock = threading.Lock()
        self._requests = itertools.count(1)
        self._closed = False
        #: ``tcp:HOST:PORT`` where remote processes connect, if ``listen=`` was given.
        self.remote_address: str | None = None
        #: The secret remote processes prove they know (``LOGFUNNEL_TOKEN``).
        self.token: str | None = None
        self._fingerprint = ""
        # What install() did, each undone by _undo() (None or empty: not done).
        self._control: socket.socket | None = None
        self._writer: Writer | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._private_dir: str | None = None
        self._sinks: list[logging.Handler] = []
        self._tree: TreeSnapshot | None = None  # config= dictConfig'ed this process's tree
        self._root_level: tuple[int, int] | None = None  # (before, set by install)
        self._levels: _levels.LevelFile | None = None
        self._saved_env: dict[str, str | None] | None = None
        self._routed = False
        self._stacks_registered = False
        # Taken back last, once the writer has stopped: _shared's claim on a file.
        self._on_undo: list[Callable[[], None]] = []

    @property
    def owner(self) -> bool:
        """Return True in the process that installed this funnel and runs its writer."""
        return self._owner_pid == os.getpid()

    def __repr__(self) -> str:
        """Show where the writer is and whether it runs."""
        state = "closed" if self._closed else ("running" if self.owner else "joined")
        return f"<Funnel {self.address} host={self.host} {state}>"

    def __enter__(self) -> Self:
        """Return this funnel; ``shutdown()`` runs when the block ends."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut the funnel down, writing everything logged before."""
        self.shutdown()

    # -- barrier, stats, shutdown -------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record any process logged before this call is written.

        Returns True once the writer has handled them and flushed its sinks,
        False if that did not happen within ``timeout`` seconds (or the funnel
        is shut down).  In a child process this waits for the records sent so
        far by every process, just the same.
        """
        if self._closed:
            return False
        if not self.owner or self.remote:
            connection = _handler.current_connection()
            return connection.flush(timeout) if connection is not None else False
        request = next(self._requests)
        reply = self._call([_wire.FLUSH, request], _wire.FLUSHED, request, timeout)
        return reply is not None

    def stats(self, timeout: float = 5.0) -> Stats:
        """Return the writer's counters (``logfunnel.Stats``): records, processes, frames, drops.

        Raises ``RuntimeError`` in a process that does not own the writer (a
        child, or after ``shutdown()``), and ``TimeoutError`` if the writer
        did not answer within ``timeout`` seconds.
        """
        if self.remote:
            msg = f"stats() of {self!r}: its writer is the collector's; ask `logfunnel serve`"
            raise RuntimeError(msg)
        if self._closed or not self.owner:
            where = "is shut down" if self._closed else f"is owned by process {self._owner_pid}"
            msg = f"stats() of {self!r}: this funnel {where}; ask the installing process"
            raise RuntimeError(msg)
        request = next(self._requests)
        reply = self._call([_wire.STATS, request], _wire.STATS, request, timeout)
        if reply is None or not isinstance(reply[2], dict):
            msg = f"the writer of {self!r} did not answer within {timeout} s"
            raise TimeoutError(msg)
        names = {field.name for field in dataclasses.fields(Stats)}
        return Stats(**{k: int(v) for k, v in reply[2].items() if k in names})

    def _call(self, fields: list[Any], kind: int, request: int, timeout: float) -> list[Any] | None:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            control = self._control
            if control is None:
                return None
            try:
                control.sendall(_wire.Encoder().frame(fields))
            except OSError:
                return None
            return _dial.read_reply(control, kind, request, deadline)
        finally:
            self._lock.release()

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Write everything logged so far, stop the writer and undo ``install()``.

        Idempotent; also runs at interpreter exit.  Returns True if the writer
        drained and stopped within ``timeout`` seconds.  Records that children
        log after this go to their fallback (standard error by default).
        """
        if self._closed or not self.owner:
            return True
        if self.remote:  # no writer here: what this process sent reaches the collector
            drained = self.flush(timeout)
            return self._undo(timeout) and drained
        request = next(self._requests)
        drained = self._call([_wire.SHUTDOWN, request], _wire.FLUSHED, request, timeout) is not None
        return self._undo(timeout) and drained

    def _undo(self, timeout: float) -> bool:
        """Take back every step install() did, latest first; True if the writer stopped in time."""
        self._closed = True
        deadline = time.monotonic() + timeout
        stopped = True
        if self._stacks_registered:
            _rundir.unregister_stacks()
        if self._routed:
            _route.disable()
            _handler.detach()
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if self._levels is not None:
            self._levels.close()
        if self._root_level is not None:
            before, set_by_install = self._root_level
            if logging.root.level == set_by_install:  # else the program has set it since
                logging.root.setLevel(before)
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()  # a writer that did not get SHUTDOWN drains and stops
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            stopped = not self._thread.is_alive()
        if self._process is not None:
            stopped = _hosts.stop_process(self._process, deadline) and stopped
        for handler in self._sinks:
            with contextlib.suppress(Exception):
                handler.flush()
                handler.close()
        if self._tree is not None:
            self._tree.restore()
        if self._private_dir is not None:
            _rundir.remove(self._private_dir)
        for undo in self._on_undo:
            with contextlib.suppress(Exception):
                undo()
        if _state.funnel is self:
            _state.funnel = None
        return stopped

    # -- fork ---------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """In a forked child: close the writer's descriptors and attach to its address."""
        if self._writer is not None:
            self._writer.forget_in_child()
            self._writer = None
        self._thread = None
        self._process = None  # the child's Popen copy must never wait() on the writer
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
            self._control = None
        self._lock = threading.Lock()
        if not self._closed and _handler.attached_address() != self.address:
            _handler.attach(self.address, self.options)


def start(settings: Settings) -> Funnel:
    """Do every step of install() in order; on any failure, undo those done and re-raise."""
    tcp_listener = _hosts.listen_tcp(settings.listen) if settings.listen is not None else None
    try:
        listener, private_dir, address = _rundir.create()
    except BaseException:
        if tcp_listener is not None:
            tcp_listener.close()
        raise
    options = settings.options.replace(every_record=settings.has_sinks)
    if settings.senders_render:
        options = options.replace(
            render={
                "fmt": settings.fmt or _build.DEFAULT_FORMAT,
                "datefmt": settings.datefmt,
                "json": settings.json,
            }
        )
    adopt = _adopt_spec(settings)
    if adopt is not None:
        options = options.replace(render=_adopt_render.render_option(adopt))
    funnel = Funnel(address, settings.host, options, owner=True)
    funnel._private_dir = private_dir
    funnel._fingerprint = settings.fingerprint
    handed_over = False
    try:
        if tcp_listener is not None:
            funnel.remote_address = _hosts.tcp_address(tcp_listener, settings)
            funnel.token = settings.token or _auth.new_token()
            settings = _with_token(settings, funnel.token)
        if settings.host == "thread":
            _start_thread_host(funnel, settings, listener, tcp_listener)
        else:
            funnel._process, funnel._control = _hosts.start_process(
                settings, listener, tcp_listener
            )
        handed_over = True  # the host owns the listeners now
        _publish(funnel, settings)
    except BaseException:
        if not handed_over:
            for sock in (listener, tcp_listener):
                if sock is not None:
                    sock.close()
        funnel._undo(timeout=5.0)
        raise
    return funnel


def _adopt_spec(settings: Settings) -> _adopt_render.Spec | None:
    """In adopt mode, the Spec of the stock formatter every process renders with (if any).

    Only a thread host's writer has the program's handlers; its senders
    render each plain record with their formatter, and the writer writes
    the line where the record's handlers still have it (``adopt_render``).
    """
    if settings.has_sinks or settings.host != "thread":
        return None
    return _adopt_render.tree_spec()


def _with_token(settings: Settings, token: str) -> Settings:
    return dataclasses.replace(settings, token=token)


def _start_thread_host(
    funnel: Funnel,
    settings: Settings,
    listener: socket.socket,
    tcp_listener: socket.socket | None,
) -> None:
    sinks: list[logging.Handler] | None = None
    if settings.config is not None:
        funnel._tree = TreeSnapshot.take()
        logging.config.dictConfig(settings.config)
    elif settings.has_sinks:
        sinks = funnel._sinks = _build.build_handlers(settings.file_options())
        if settings.exporting:  # imported only by a funnel that exports
            from logfunnel.sinks import exporters as _exporters  # noqa: PLC0415

            sinks.extend(_exporters.build(settings.exporters()))
    adopt = _adopt_render.spec_from_option(funnel.options.render)
    funnel._writer, funnel._thread, funnel._control = _hosts.start_thread(
        settings, listener, tcp_listener, sinks, adopt
    )


def _publish(funnel: Funnel, settings: Settings) -> None:
    """Make this process's records and every child's reach the funnel."""
    root = logging.getLogger()
    if settings.level is not None:
        funnel._root_level = (root.level, settings.level)
        root.setLevel(settings.level)
    if settings.config is not None and settings.host == "process":
        funnel._tree = funnel._tree or TreeSnapshot.take()
        _apply_config_levels(settings.config)
    levels = _rundir.levels_path(funnel.address)
    assert levels is not None  # a Unix-socket address
    funnel._levels = _levels.LevelFile(levels)
    funnel._levels.follow()
    funnel._saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    os.environ[ENV_ADDRESS] = funnel.address
    os.environ[ENV_OPTIONS] = funnel.options.to_env()
    os.environ[ENV_INSTALLER] = f"{os.getpid()}:{settings.fingerprint}"
    if funnel.token is not None:
        os.environ[ENV_TOKEN] = funnel.token
    else:
        os.environ.pop(ENV_TOKEN, None)
    _fork.register()
    _fork.prepare_in_installer()
    if settings.host == "process":
        _handler.attach(funnel.address, funnel.options)
        _route.enable(_handler.send, every_record=True)
        funnel._routed = True
    elif funnel._sinks:
        _route.enable(_deliver_to(funnel._sinks), every_record=True)
        funnel._routed = True
    funnel._stacks_registered = _rundir.register_stacks(funnel.address)


def _deliver_to(sinks: list[logging.Handler]) -> _route.Deliver:
    """Return the route of a thread host's own records: straight to its sinks, no socket."""

    def deliver(record: logging.LogRecord) -> None:
        for handler in sinks:
            if record.levelno >= handler.level:
                try:
                    handler.handle(record)
                except Exception:  # a filter that raises: logging would let it through
                    handler.handleError(record)

    return deliver


def _apply_config_levels(config: dict[str, Any]) -> None:
    """Apply the levels of a dictConfig dict in this process (its handlers live in the writer)."""
    root_level = (config.get("root") or {}).get("level")
    if root_level is not None:
        logging.getLogger().setLevel(parse_level(root_level, "config root level"))
    for name, logger_config in (config.get("loggers") or {}).items():
        if isinstance(logger_config, dict) and logger_config.get("level") is not None:
            logging.getLogger(name).setLevel(
                parse_level(logger_config["level"], f"level of {name}")
            )


