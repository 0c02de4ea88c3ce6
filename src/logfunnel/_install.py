"""``install()`` and the ``Funnel`` it returns: starting, publishing and stopping a writer."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import logging.config
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # typing.Self is 3.11+; only mypy needs the name
    from typing_extensions import Self

from logfunnel import _auth, _handler, _sinks, _stacks, _wire, _writer
from logfunnel._options import (
    ENV_ADDRESS,
    ENV_LEVELS,
    ENV_OPTIONS,
    ENV_TOKEN,
    OnFull,
    Options,
    level_snapshot,
    parse_level,
    validate_options,
)

Host = Literal["thread", "process"]

_WRITER_START_TIMEOUT = 30.0
# sockaddr_un.sun_path holds 108 bytes on Linux, including the final NUL.
_MAX_SOCKET_PATH = 107
# Leftover funnel directories (see _remove_leftovers): only a directory untouched
# for this long can be one (a funnel being set up right now is younger), and one
# install() examines at most this many of them, picked at random among at most
# _LEFTOVER_SCAN names, so a crowd of directories it must keep cannot starve the rest.
_LEFTOVER_GRACE = 60.0
_LEFTOVER_LIMIT = 100
_LEFTOVER_SCAN = 1000
# The names tempfile.mkdtemp(prefix="logfunnel-") makes: 8 characters of
# tempfile._RandomNameSequence; "logfunnel-repro-..." and the like never match.
_FUNNEL_DIR_NAME = re.compile(re.escape(_stacks.FUNNEL_DIR_PREFIX) + r"[a-z0-9_]{8}\Z")


class Funnel:
    """A running funnel: its writer's address, and the barrier and shutdown calls.

    Returned by ``install()``.  In the installing process it owns the writer;
    in a child it only forwards ``flush()`` to that writer (``shutdown()`` is
    then a no-op), so code that holds on to the object works anywhere.
    """

    def __init__(
        self,
        address: str,
        host: Host,
        options: Options,
        *,
        owner: bool,
    ) -> None:
        """Create a handle; use ``install()`` rather than this."""
        self.address = address
        self.host: Host = host
        self.options = options
        self._owner_pid = os.getpid() if owner else -1
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._requests = itertools.count(1)
        self._writer: _writer.Writer | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._private_dir: str | None = None
        self._saved_root_handlers: list[logging.Handler] | None = None
        self._built_handlers: list[logging.Handler] = []
        self._closed = False
        #: ``tcp:HOST:PORT`` where remote processes connect, if ``listen=`` was given.
        self.remote_address: str | None = None
        #: The secret remote processes prove they know (``LOGFUNNEL_TOKEN``).
        self.token: str | None = None

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
        if not self.owner:
            connection = _handler.current_connection()
            return connection.flush(timeout) if connection is not None else False
        request = next(self._requests)
        reply = self._call([_wire.FLUSH, request], _wire.FLUSHED, request, timeout)
        return reply is not None

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """Return the writer's counters: records, processes, cut and bad frames, drops."""
        if self._closed or not self.owner:
            return {}
        request = next(self._requests)
        reply = self._call([_wire.STATS, request], _wire.STATS, request, timeout)
        if reply is None or not isinstance(reply[2], dict):
            return {}
        return {str(k): int(v) for k, v in reply[2].items()}

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
            return _handler.read_reply(control, kind, request, deadline)
        finally:
            self._lock.release()

    def _push_levels(self, snapshot: dict[str, Any]) -> None:
        """Tell a writer process the levels children should use (it answers their LEVELS)."""
        with self._lock:
            if self._control is not None:
                with contextlib.suppress(OSError):
                    self._control.sendall(_wire.Encoder().frame([_wire.LEVELS, 0, snapshot]))

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Write everything logged so far, stop the writer and undo ``install()``.

        Idempotent; also runs at interpreter exit.  Returns True if the writer
        drained and stopped within ``timeout`` seconds.  Records that children
        log after this go to their fallback (standard error by default).
        """
        global _installed  # noqa: PLW0603 - the one funnel of this process
        if self._closed or not self.owner:
            return True
        deadline = time.monotonic() + timeout
        request = next(self._requests)
        drained = self._call([_wire.SHUTDOWN, request], _wire.FLUSHED, request, timeout) is not None
        self._closed = True
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            drained = drained and not self._thread.is_alive()
        if self._process is not None:
            try:
                self._process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                drained = False
                with contextlib.suppress(OSError):  # the supervisor and the writer it forked
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
                _wait_for_group_to_die(self._process.pid, timeout=2.0)
        if self._control is not None:
            self._control.close()
            self._control = None
        _unpublish()
        if self.host == "process":
            _handler.detach()
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler in self._built_handlers or isinstance(handler, _handler.FunnelHandler):
                root.removeHandler(handler)
        for handler in self._built_handlers:
            with contextlib.suppress(Exception):
                handler.flush()
                handler.close()
        if self._saved_root_handlers is not None:
            for handler in self._saved_root_handlers:
                root.addHandler(handler)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        if _installed is self:
            _installed = None
        return drained

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


def _wait_for_group_to_die(group: int, timeout: float) -> None:
    """Wait until no live process is left in process group ``group`` (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is the state, fields[2] the process group.
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                alive = True
                break
        if not alive:
            return
        time.sleep(0.01)  # polling the kernel's view; bounded by timeout


_installed: Funnel | None = None
_install_lock = threading.Lock()


def current() -> Funnel | None:
    """Return the funnel this process installed or inherited, if any."""
    return _installed


def install(
    *,
    file: str | os.PathLike[str] | None = None,
    level: int | str | None = None,
    fmt: str | None = None,
    datefmt: str | None = None,
    max_bytes: int = 0,
    backups: int = 0,
    json: bool = False,
    console: bool = False,
    config: dict[str, Any] | None = None,
    host: Host | None = None,
    on_full: OnFull = "block",
    full_timeout: float = 0.1,
    fallback: str | os.PathLike[str] | None = None,
    frame_limit: int = _wire.DEFAULT_FRAME_LIMIT,
    listen: str | None = None,
    token: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Funnel:
    """Start a writer and make every process of this program log through it.

    With no sink options, the program's own logging configuration stays as it
    is: this process keeps logging to its handlers, and records from every
    child process (fork, spawn, forkserver, ``subprocess`` Python children,
    joblib/loky workers) are handed to the same handlers, in this process, as
    if they had been logged here.

    With ``file=`` (rotating when ``max_bytes`` is set, keeping ``backups``
    old files), ``json=``, ``console=`` or a ``logging.config.dictConfig``
    ``config=``, the root logger's handlers are replaced by those sinks, as
    ``logging.basicConfig(force=True)`` would; ``shutdown()`` puts the old
    ones back.  ``level`` sets the root logger's level everywhere.

    ``host="thread"`` (the default) runs the writer in a thread of this
    process.  ``host="process"`` runs it in a fresh interpreter of its own
    (started with exec, never forked), which needs sink options and is
    restarted if it dies.

    ``listen="tcp:HOST:PORT"`` also accepts processes on other hosts (port 0
    picks a free one: see ``Funnel.remote_address``).  They set
    ``LOGFUNNEL_ADDRESS`` to that address and ``LOGFUNNEL_TOKEN`` to
    ``Funnel.token`` (``token=``, or a random one), and must prove they know
    it before anything they send is decoded.  With ``tls_cert=`` (a PEM
    certificate chain, and ``tls_key=`` unless the key is in it) the listener
    speaks TLS: the address is ``tls:HOST:PORT``, and peers verify the writer
    against ``LOGFUNNEL_TLS_CA`` (or the system's CAs) before answering.

    Calling it again while a funnel runs in this process raises
    ``RuntimeError``.  Called in a ``multiprocessing`` child of a funnel (for
    example by a main module re-imported under spawn), it returns a handle to
    that funnel instead of starting another.

    Raises ``ValueError`` with a message saying what to change when an option
    cannot work.
    """
    global _installed  # noqa: PLW0603 - the one funnel of this process
    with _install_lock:
        if _installed is not None and not _installed._closed:
            if _installed.owner:
                msg = (
                    f"logfunnel is already installed in this process ({_installed!r}); "
                    "call shutdown() on it first, or use the Funnel that install() returned"
                )
                raise RuntimeError(msg)
            return _installed
        joined = _joined_multiprocessing_child()
        if joined is not None:
            return joined
        options = Options(
            frame_limit=frame_limit,
            on_full=on_full,
            full_timeout=full_timeout,
            fallback=os.fspath(fallback) if fallback is not None else None,
        )
        validate_options(options)
        spec: dict[str, Any] = {
            "file": os.fspath(file) if file is not None else None,
            "level": level,
            "fmt": fmt,
            "datefmt": datefmt,
            "max_bytes": max_bytes,
            "backups": backups,
            "json": json,
            "console": console,
            "config": config,
            "frame_limit": frame_limit,
        }
        _sinks.validate_spec(spec)
        tcp_where = _parse_listen(listen)
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            msg = "token= must be a string of at least 16 characters (or None for a random one)"
            raise ValueError(msg)
        if tls_cert is not None and tcp_where is None:
            msg = "tls_cert= needs listen='tcp:HOST:PORT': TLS is for the TCP listener"
            raise ValueError(msg)
        if tcp_where is not None:
            spec["token"] = token = token or _auth.new_token()
            spec["tls_cert"] = os.fspath(tls_cert) if tls_cert is not None else None
            spec["tls_key"] = os.fspath(tls_key) if tls_key is not None else None
            try:  # fail here, not in the writer, if the certificate cannot be used
                _writer.tls_context(spec["tls_cert"], spec["tls_key"])
            except (OSError, ValueError) as exc:
                msg = f"tls_cert={spec['tls_cert']!r}, tls_key={spec['tls_key']!r}: {exc}"
                raise ValueError(msg) from None
        root_level = parse_level(level) if level is not None else None
        has_sinks = bool(file or json or console or fmt or config is not None)
        host = host or "thread"
        if host not in ("thread", "process"):
            msg = f"host={host!r}: use 'thread' (writer in this process) or 'process'"
            raise ValueError(msg)
        if host == "process" and not has_sinks:
            msg = (
                "host='process' runs the writer in a fresh interpreter, which cannot use this "
                "program's handlers: pass file=, json=, console= or config= to say what it "
                "writes, or use host='thread'"
            )
            raise ValueError(msg)
        if host == "process" and config is None:
            # The writer's sinks are install()'s own, so every process can
            # render a plain record's line exactly as the writer would: the
            # writer then only writes the text (see _handler.Connection).
            options = options._replace(
                render={"fmt": fmt or _sinks.DEFAULT_FORMAT, "datefmt": datefmt, "json": bool(json)}
            )
        tcp_listener = _listen_tcp(tcp_where) if tcp_where is not None else None
        if host == "thread":
            funnel = _start_thread_host(spec, options, tcp_listener, has_sinks=has_sinks)
        else:
            funnel = _start_process_host(spec, options, tcp_listener)
        if tcp_listener is not None:
            funnel.remote_address = spec["remote_address"]
            funnel.token = token
        root = logging.getLogger()
        if root_level is not None:
            root.setLevel(root_level)
        if config is not None and host == "process":
            _apply_config_levels(config)
        _publish(funnel)
        _stacks.register(funnel.address)
        _installed = funnel
        return funnel


def _joined_multiprocessing_child() -> Funnel | None:
    """Return a handle if this is a multiprocessing child of a funnel, else None."""
    address = os.environ.get(ENV_ADDRESS)
    mp = sys.modules.get("multiprocessing")
    if not address or mp is None:
        return None
    # A pool worker has a parent_process(); a spawn child re-importing the main
    # module does not yet, but multiprocessing marks it as _inheriting.
    inheriting = getattr(mp.current_process(), "_inheriting", False)
    if mp.parent_process() is None and not inheriting:
        return None
    from logfunnel import _bootstrap  # noqa: PLC0415 - avoids an import cycle

    _bootstrap.join_from_environment()
    return Funnel(address, "thread", Options.from_env(os.environ.get(ENV_OPTIONS)), owner=False)


def _parse_listen(listen: str | None) -> tuple[str, int] | None:
    """Check ``listen=`` and return its host and port."""
    if listen is None:
        return None
    kind, _, where = str(listen).partition(":")
    host, _, port = where.rpartition(":")
    if kind != "tcp" or not host or not port.isdigit() or int(port) > 65535:
        msg = f"listen={listen!r}: give tcp:HOST:PORT, e.g. tcp:0.0.0.0:9020 (port 0: any free)"
        raise ValueError(msg)
    return host.strip("[]"), int(port)


def _listen_tcp(where: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in where[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(where)
        listener.listen(socket.SOMAXCONN)
    except OSError as exc:
        listener.close()
        msg = f"listen=tcp:{where[0]}:{where[1]}: cannot listen there: {exc}"
        raise ValueError(msg) from None
    return listener


def _tcp_address(listener: socket.socket, spec: dict[str, Any]) -> str:
    host, port = listener.getsockname()[:2]
    kind = "tls" if spec.get("tls_cert") else "tcp"
    return f"{kind}:[{host}]:{port}" if ":" in host else f"{kind}:{host}:{port}"


def _listen() -> tuple[socket.socket, str, str]:
    """Create the private directory and the listening socket in it."""
    _remove_leftovers()
    # mkdtemp makes the directory 0700: only this user can reach the socket in it.
    private_dir = tempfile.mkdtemp(prefix=_stacks.FUNNEL_DIR_PREFIX)
    path = os.path.join(private_dir, _stacks.SOCKET_NAME)
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:  # a long TMPDIR: use /tmp instead
        os.rmdir(private_dir)
        private_dir = tempfile.mkdtemp(prefix=_stacks.FUNNEL_DIR_PREFIX, dir=_stacks.FALLBACK_BASE)
        path = os.path.join(private_dir, _stacks.SOCKET_NAME)
    os.mkdir(os.path.join(private_dir, _stacks.STACKS_NAME), 0o700)  # see _stacks
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(socket.SOMAXCONN)
    except BaseException:
        listener.close()
        shutil.rmtree(private_dir, ignore_errors=True)
        raise
    return listener, private_dir, f"unix:{path}"


def _remove_leftovers() -> list[str]:
    """Remove this user's funnel directories whose installer is certainly dead; return them.

    ``shutdown()`` removes a funnel's directory, but an installer killed with
    SIGKILL never runs it.  A directory is removed only if it is one
    ``install()`` made (named like ``mkdtemp`` names it, directly in one of
    ``_stacks.funnel_bases()``; a real directory, not a symlink, of this user,
    mode 0700, holding nothing but the socket and the stack files), has not
    changed for ``_LEFTOVER_GRACE`` seconds, no live process has a stack file
    in it, and nothing listens on its socket (refused, or no socket at all).
    Never raises: another process cleaning up at the same time is normal.
    """
    removed: list[str] = []
    try:
        uid, now, budget = os.geteuid(), time.time(), _LEFTOVER_LIMIT
        for base in _stacks.funnel_bases():
            try:
                with os.scandir(base) as entries:
                    matching = (e.name for e in entries if _FUNNEL_DIR_NAME.match(e.name))
                    names = list(itertools.islice(matching, _LEFTOVER_SCAN))
            except OSError:
                continue
            # A random pick (not a secret) spreads the work over installs.
            for name in random.sample(names, min(len(names), budget)):
                budget -= 1
                path = os.path.join(base, name)
                if _is_leftover(path, uid, now):
                    shutil.rmtree(path, ignore_errors=True)  # symlink-safe; races are fine
                    removed.append(path)
            if budget <= 0:
                break
    except Exception:  # noqa: S110 - a cleanup must never make install() fail
        pass
    return removed


def _is_leftover(path: str, uid: int, now: float) -> bool:
    """Tell whether ``path`` is a funnel directory whose installer is certainly dead."""
    try:
        info = os.lstat(path)  # never follows a symlink
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != uid
            or stat.S_IMODE(info.st_mode) != 0o700
        ):
            return False
        if now - info.st_mtime <= _LEFTOVER_GRACE:
            return False  # maybe a funnel being set up right now
        entries = set(os.listdir(path))
        if not entries <= {_stacks.SOCKET_NAME, _stacks.STACKS_NAME}:
            return False  # something else lives there: not ours to judge
        if _stacks.STACKS_NAME in entries:
            stacks = os.path.join(path, _stacks.STACKS_NAME)
            if not stat.S_ISDIR(os.lstat(stacks).st_mode) or _stacks.has_live_process(stacks):
                return False  # a live funnel's processes (checked first: no probe for them)
        if _stacks.SOCKET_NAME not in entries:
            return True  # the installer died before it could listen
        sock = os.path.join(path, _stacks.SOCKET_NAME)
        if not stat.S_ISSOCK(os.lstat(sock).st_mode):
            return False
        return _stacks.listening(sock, timeout=0.0) is False
    except OSError:  # gone meanwhile (another cleaner), unreadable: leave it
        return False


def _start_thread_host(
    spec: dict[str, Any],
    options: Options,
    tcp_listener: socket.socket | None,
    *,
    has_sinks: bool,
) -> Funnel:
    root = logging.getLogger()
    built: list[logging.Handler] = []
    saved: list[logging.Handler] | None = None
    if spec["config"] is not None:
        logging.config.dictConfig(spec["config"])
    elif has_sinks:
        built = _sinks.build_handlers(spec)
        saved = list(root.handlers)
        for handler in saved:
            root.removeHandler(handler)
        for handler in built:
            root.addHandler(handler)
    listener, private_dir, address = _listen()
    control, far_end = socket.socketpair()
    if tcp_listener is not None:
        spec["remote_address"] = _tcp_address(tcp_listener, spec)
    writer = _writer.Writer(
        listener,
        far_end,
        options.frame_limit,
        tcp_listener=tcp_listener,
        token=spec.get("token"),
        tls=_writer.tls_context(spec.get("tls_cert"), spec.get("tls_key")),
    )
    funnel = Funnel(address, "thread", options, owner=True)
    funnel._writer = writer
    funnel._control = control
    funnel._private_dir = private_dir
    funnel._built_handlers = built
    funnel._saved_root_handlers = saved
    funnel._thread = _writer.start_thread(writer)
    return funnel


def _start_process_host(
    spec: dict[str, Any], options: Options, tcp_listener: socket.socket | None
) -> Funnel:
    if tcp_listener is not None:
        spec["remote_address"] = _tcp_address(tcp_listener, spec)
    try:
        config_frame = _wire.Encoder().frame([_wire.CONFIG, spec])
    except (TypeError, ValueError) as exc:
        msg = (
            f"host='process' sends the sink options to a fresh interpreter, and they must be "
            f"plain values (str, int, float, bool, None, lists and dicts): {exc}. Name "
            f"factories by import path ('()': 'package.module.factory') or use host='thread'"
        )
        raise ValueError(msg) from None
    listener, private_dir, address = _listen()
    control, far_end = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    # The writer must import this very logfunnel, even when it came from sys.path.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    passed = [listener, far_end] + ([tcp_listener] if tcp_listener is not None else [])
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import sys; from logfunnel._writer import process_main; "
                    "sys.exit(process_main(sys.argv[1:]))"
                ),
                *(str(sock.fileno()) for sock in passed),
            ],
            pass_fds=[sock.fileno() for sock in passed],
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own process group (a new session: Python 3.10 has no
            # process_group=): the writer it forks is in it too, so a shutdown
            # that times out can end both, and a terminal's Ctrl-C reaches
            # neither: the writer drains and ends when this process goes.
            start_new_session=True,
        )
    finally:
        # Only the writer may hold these: a listening socket left open here
        # would let children connect and block with nobody reading.
        for sock in passed:
            sock.close()
    try:
        control.sendall(config_frame)
        reply = _handler.read_reply(
            control, _wire.CONFIG, None, time.monotonic() + _WRITER_START_TIMEOUT
        )
    except OSError:
        reply = None
    if reply is None or reply[1] is not None:
        process.kill()
        process.wait()
        control.close()
        shutil.rmtree(private_dir, ignore_errors=True)
        why = reply[1] if reply is not None else "it did not start in time (see its stderr)"
        msg = f"the writer process could not build its sinks: {why}"
        raise ValueError(msg)
    funnel = Funnel(address, "process", options, owner=True)
    funnel._control = control
    funnel._process = process
    funnel._private_dir = private_dir
    root = logging.getLogger()
    funnel._saved_root_handlers = list(root.handlers)
    for handler in funnel._saved_root_handlers:
        root.removeHandler(handler)
    _handler.attach(address, options)
    root.addHandler(_handler.FunnelHandler())
    return funnel


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


# -- publishing to children --------------------------------------------------------------


def _publish(funnel: Funnel) -> None:
    os.environ[ENV_ADDRESS] = funnel.address
    os.environ[ENV_OPTIONS] = funnel.options.to_env()
    if funnel.token is not None:
        os.environ[ENV_TOKEN] = funnel.token
    _publish_levels(funnel)
    _watch_levels()


def _unpublish() -> None:
    _unwatch_levels()
    for key in (ENV_ADDRESS, ENV_OPTIONS, ENV_LEVELS, ENV_TOKEN):
        os.environ.pop(key, None)


def _publish_levels(funnel: Funnel | None) -> None:
    snapshot = level_snapshot()
    os.environ[ENV_LEVELS] = json.dumps(snapshot, separators=(",", ":"))
    if funnel is not None and funnel.host == "process" and funnel.owner:
        funnel._push_levels(snapshot)


def _watch_levels() -> None:
    """Republish levels whenever one changes, so children started later see it.

    ``Logger.setLevel`` and ``logging.disable`` both end by calling
    ``manager._clear_cache()``; an instance attribute on the one manager wraps
    it without touching the ``Manager`` class.
    """
    manager = logging.root.manager
    if "_clear_cache" in vars(manager):
        return
    # typeshed does not declare the private method, hence getattr and vars().
    original: Callable[[], None] = getattr(manager, "_clear_cache")  # noqa: B009

    def clear_cache_and_publish() -> None:
        original()
        if ENV_ADDRESS in os.environ and _installed is not None:
            _publish_levels(_installed)

    vars(manager)["_clear_cache"] = clear_cache_and_publish


def _unwatch_levels() -> None:
    vars(logging.root.manager).pop("_clear_cache", None)


@atexit.register
def _shutdown_at_exit() -> None:
    """Drain at interpreter exit (the installing process only: children never own it)."""
    funnel = _installed
    if funnel is not None and funnel.owner:
        funnel.shutdown()
