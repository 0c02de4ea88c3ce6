"""The writer process: a supervisor that forks the writer loop, and what that writer runs.

``_hosts.start_process`` starts a fresh interpreter on ``process_main``, with
the listening sockets and the control channel; the sinks are built from the
plain ``FileOptions`` the installer sends on that channel.

    installer --exec--> process_main (supervisor: one thread, so forking is safe)
                          |  fork, and fork again if the writer dies
                          v
                        _serve: build the sinks, run _core.writer.Writer
                          ^  control channel, directly or through _OwnerWatch
                          |  (under ``logfunnel run``: a lifeline is watched)

Who owns what: the supervisor holds the listening sockets and the control
channel's far end for the whole run; each writer it forks inherits them and
owns them (and its sinks) until it ends.  ``_OwnerWatch`` (a writer with a
lifeline only) owns the socket pair between the owner's channel and the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

from logfunnel._core import gate as _gate
from logfunnel._core import rundir as _rundir
from logfunnel._core import wire as _wire
from logfunnel._core import writer as _writer
from logfunnel.sinks import build as _build
from logfunnel.sinks import console as _console
from logfunnel.sinks.options import FileOptions

#: Exit code of a writer that could not build its sinks: not worth a restart.
_CONFIG_FAILED: Final = 3
#: More restarts than this within _RESTART_WINDOW seconds: give up.
_MAX_RESTARTS: Final = 10
_RESTART_WINDOW: Final = 60.0
#: glibc's malloc settings for this process (other C libraries ignore GLIBC_TUNABLES).
#: A busy pipe is read 256 KiB at a time, and the block of lines cut from a read is a
#: bytes object that large: over glibc's 128 KiB mmap threshold each one was an mmap()
#: whose pages faulted in, then a munmap(), and a free heap top over 128 KiB was handed
#: back with it (15-20 page faults per 64 KB record; benchmarks/what-moved.md).  Blocks
#: up to 2 MiB now come from the heap, which keeps at most 8 MiB free: RSS stays bounded.
MALLOC_TUNABLES: Final = "glibc.malloc.mmap_threshold=2097152:glibc.malloc.trim_threshold=8388608"


def environment(installer: Mapping[str, str]) -> dict[str, str]:
    """Return the environment a writer process starts with, from the installer's.

    The installer's ``LOGFUNNEL_*`` settings are its own, not the writer's.
    ``MALLOC_TUNABLES`` go first, so tunables the installer's environment sets
    itself win (glibc applies the last of a name), and ``process_main`` takes
    them out again for whatever the writer starts (``sinks.compress``).
    """
    env = {k: v for k, v in installer.items() if not k.startswith("LOGFUNNEL_")}
    theirs = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = f"{MALLOC_TUNABLES}:{theirs}" if theirs else MALLOC_TUNABLES
    return env


def forget_malloc_tunables(environ: MutableMapping[str, str]) -> None:
    """Put back in ``environ`` the GLIBC_TUNABLES the installer had (or none)."""
    value = environ.get("GLIBC_TUNABLES")
    if value == MALLOC_TUNABLES:
        del environ["GLIBC_TUNABLES"]
    elif value is not None and value.startswith(f"{MALLOC_TUNABLES}:"):
        environ["GLIBC_TUNABLES"] = value[len(MALLOC_TUNABLES) + 1 :]


def process_main(argv: list[str]) -> int:
    """Entry point of a writer process: supervise a writer forked from this process.

    This process was started with exec, so it has one thread and no inherited
    locks: forking from it is safe.  It keeps the listening socket and the
    control channel, and forks the writer, which inherits both.  If the
    writer dies (SIGKILL, a crash in a sink), a new one is forked at once on
    the same socket: connections made meanwhile wait in the listen backlog,
    so processes that lost their connection reconnect at their next record.
    What is lost is what the dead writer had received but not yet written
    (see docs/guarantees.md).  A clean shutdown ends both.

    ``argv``: the descriptors of the listener, the control channel and the
    TCP listener if any; then ``lifeline=FD owner=PID`` if the installer gave
    a ``Lifeline``: a writer whose owner vanished then serves on until it
    reaches end of file (``_OwnerWatch``).
    """
    # This process read GLIBC_TUNABLES when it started; the processes it starts get the
    # installer's own environment.
    forget_malloc_tunables(os.environ)
    fds = [int(a) for a in argv if a.isdigit()]
    named = dict(a.split("=", 1) for a in argv if "=" in a)
    listener = socket.socket(fileno=fds[0])
    control = socket.socket(fileno=fds[1])
    tcp_listener = socket.socket(fileno=fds[2]) if len(fds) > 2 else None
    watch = _OwnerWatch.given(named, listener)
    reader = _wire.FrameReader()
    config: Any = None
    while config is None:
        data = control.recv(65536)
        if not data:
            return 1
        for fields in reader.feed(data):
            if fields[0] == _wire.CONFIG and isinstance(fields[1], dict):
                config = fields[1]
    restarts: list[float] = []
    first = True
    while True:
        pid = os.fork()
        if pid == 0:  # the writer
            code = 1
            try:
                code = _serve(listener, control, config, first, tcp_listener, watch)
            finally:
                os._exit(code)  # never return into the supervisor's loop
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code in (0, _CONFIG_FAILED):
            return 0 if code == 0 else 1
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < _RESTART_WINDOW] + [now]
        why = f"signal {-code}" if code < 0 else f"exit code {code}"
        if len(restarts) > _MAX_RESTARTS:
            print(
                f"logfunnel: the log writer died {len(restarts)} times in "
                f"{_RESTART_WINDOW:.0f} s (last: {why}); giving up",
                file=sys.stderr,
            )
            return 2
        print(
            f"logfunnel: the log writer (pid {pid}) ended ({why}); started a new one",
            file=sys.stderr,
        )
        first = False


def leave(code: int) -> NoReturn:
    """End the supervisor with ``code`` at once, without the interpreter's teardown.

    Its teardown (modules, GC) took 21 ms of every ``shutdown()`` here (strace:
    from its last ``close`` to ``exit_group``), and the installer waits for
    this exit.  Nothing here needs it: the sinks lived in the forked writer,
    which left by ``os._exit`` already, and no atexit handler is registered
    in this fresh interpreter; only what stderr still holds must go out.
    """
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _serve(
    listener: socket.socket,
    control: socket.socket,
    config: dict[str, Any],
    announce: bool,
    tcp_listener: socket.socket | None,
    watch: _OwnerWatch | None = None,
) -> int:
    """Build the sinks and run the writer loop (in the supervisor's forked child).

    With ``install()``'s own sinks (no ``config=``) they are built here and
    given to the writer, on no logger; with ``config=`` the tree built by
    ``dictConfig`` gets the records (adopt mode).  With a lifeline (``watch``)
    the writer's control channel goes through ``watch``, which ends it only
    when the owner asks, or is gone and so is every holder of the lifeline.
    """
    encoder = _wire.Encoder()
    try:
        sinks = _build.configure_writer_process(
            FileOptions.from_plain(config["sinks"]), config.get("config")
        )
        if config.get("exporters") and sinks is not None:
            from logfunnel.sinks import exporters as _exporters  # noqa: PLC0415

            # Built here, in the forked writer: a sender thread lives where the loop does.
            sinks.extend(_exporters.build(config["exporters"]))
    except Exception as exc:
        if announce:
            control.sendall(encoder.frame([_wire.CONFIG, f"{type(exc).__name__}: {exc}"]))
        return _CONFIG_FAILED
    if announce:
        control.sendall(encoder.frame([_wire.CONFIG, None]))
    _console.connect(sinks, config.get("console_relay"))
    if watch is not None:
        control = watch.start(control)
    writer = _writer.Writer(
        listener,
        control,
        int(config.get("frame_limit", _wire.DEFAULT_FRAME_LIMIT)),
        tcp_listener=tcp_listener,
        token=config.get("token"),
        tls=_gate.tls_context(config.get("tls_cert"), config.get("tls_key")),
        sinks=sinks,
    )
    writer.lines_allowed = sinks is not None
    try:
        writer.run()
    finally:
        logging.shutdown()
        if watch is not None:
            watch.finish(config)
    return 0


class _OwnerWatch:
    """In a writer process with a lifeline: the control channel, and when the writer ends.

    A thread of the writer passes the owner's control channel through a
    socket pair to the writer loop, byte for byte (FLUSH, STATS and SHUTDOWN
    one way, their answers the other), so the owner's ``SHUTDOWN`` ends the
    writer as it always does.  What changes is the owner's end of file: if
    the owner is still alive it closed the channel on purpose (``_undo``) and
    the writer ends, as without a lifeline; if it is gone (``os._exit()``,
    a signal), the writer serves on until the lifeline, too, reaches end of
    file, then drains and ends: only then does the loop see the end of its
    channel.  Once the owner is gone, this process and the supervisor let go
    of the owner's standard streams (a daemon's caller, ``$(...)`` or a pipe,
    must not wait for the writer), and the writer removes the funnel's
    directory and gives F's claim back when it ends.

    Who owns what: made by the supervisor (``given``) before it forks, one
    thread and socket pair per forked writer (``start``); the owner's
    channel and the lifeline's read end stay the supervisor's.
    """

    def __init__(self, lifeline: int, owner: int, directory: str | None, address: str) -> None:
        """Watch ``lifeline`` (a read end) for the writer process of ``owner``'s funnel."""
        self.lifeline = lifeline
        self.owner = owner
        self.directory = directory
        self.address = address
        self.supervisor = os.getpid()
        #: Set once the owner went without asking the writer to stop.
        self.vanished = False
        self._thread: threading.Thread | None = None

    @classmethod
    def given(cls, named: dict[str, str], listener: socket.socket) -> _OwnerWatch | None:
        """Return the watch ``process_main``'s arguments ask for, or None (no lifeline)."""
        if "lifeline" not in named or "owner" not in named:
            return None
        lifeline, owner = int(named["lifeline"]), int(named["owner"])
        try:
            os.fstat(lifeline)
            path = listener.getsockname()
        except OSError:  # nothing to watch: the writer behaves as without a lifeline
            return None
        address = f"unix:{path}" if isinstance(path, str) else ""
        # A signal from a writer whose owner vanished: let go of the owner's streams here too.
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: _detach_stdio())
        return cls(lifeline, owner, _rundir.directory_of(address), address)

    def start(self, owner_channel: socket.socket) -> socket.socket:
        """Start passing ``owner_channel`` on; return the end the writer loop reads."""
        near, far = socket.socketpair()
        self._thread = threading.Thread(
            target=self._run, args=(owner_channel, near), name="logfunnel-lifeline", daemon=True
        )
        self._thread.start()
        return far

    def _run(self, owner: socket.socket, near: socket.socket) -> None:
        import selectors  # noqa: PLC0415 - a writer process with a lifeline only

        selector = selectors.DefaultSelector()
        # "owned": the owner's channel is open; "deciding": it ended, is the owner gone?
        # "orphaned": it is, the lifeline is not; "stopping": the writer was told to end.
        state, closed_at, lifeline_open = "owned", 0.0, True
        try:
            selector.register(near, selectors.EVENT_READ, "writer")
            selector.register(owner, selectors.EVENT_READ, "owner")
            selector.register(self.lifeline, selectors.EVENT_READ, "lifeline")
            while True:
                timeout = _OWNER_POLL if state == "deciding" else None
                for key, _ in selector.select(timeout):
                    if key.data == "writer":
                        data = _recv(near)
                        if not data:
                            return  # the writer loop ended
                        if state == "owned":
                            with contextlib.suppress(OSError):  # gone meanwhile
                                owner.sendall(data)
                    elif key.data == "owner":
                        data = _recv(owner)
                        if data:
                            near.sendall(data)
                        else:
                            selector.unregister(owner)
                            state, closed_at = "deciding", time.monotonic()
                    elif not _read_or_eof(self.lifeline):
                        selector.unregister(self.lifeline)
                        lifeline_open = False
                if state == "deciding":
                    if not _rundir.alive(self.owner):
                        state, self.vanished = "orphaned", True
                        self._let_go_of_the_owners_streams()
                    elif time.monotonic() - closed_at > _OWNER_EXIT_WAIT:
                        state = "stopping"  # closed on purpose (its _undo): end, as ever
                        near.shutdown(socket.SHUT_WR)
                if state == "orphaned" and not lifeline_open:
                    state = "stopping"  # every holder is gone: drain and end
                    near.shutdown(socket.SHUT_WR)
        except BaseException:
            # Whatever went wrong here, the writer must not wait for it forever.
            with contextlib.suppress(OSError):
                near.shutdown(socket.SHUT_WR)
            raise
        finally:
            selector.close()

    def _let_go_of_the_owners_streams(self) -> None:
        _detach_stdio()
        if os.getppid() == self.supervisor:
            with contextlib.suppress(OSError):
                os.kill(self.supervisor, signal.SIGUSR1)

    def finish(self, config: dict[str, Any]) -> None:
        """After the loop: if the owner vanished, remove what it would have removed."""
        if self._thread is not None:
            self._thread.join(_OWNER_EXIT_WAIT)
        if not self.vanished:
            return
        if self.directory is not None:
            _rundir.remove(self.directory)
        file = (config.get("sinks") or {}).get("file")
        if isinstance(file, str) and file:
            # Imported here, by a writer whose owner vanished only: the package
            # brings the installer's modules, which no other writer needs at start.
            from logfunnel._shared import claim as _claim  # noqa: PLC0415

            with contextlib.suppress(Exception):  # a cleanup: never the writer's failure
                _claim.give_back(file, self.owner, self.address)


#: How long an owner that closed its control channel may take to be seen gone.
_OWNER_EXIT_WAIT: Final = 2.0
_OWNER_POLL: Final = 0.01


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _read_or_eof(fd: int) -> bool:
    """Read what is there (nobody writes a lifeline); False at end of file."""
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _detach_stdio() -> None:
    """Point standard input, output and error at /dev/null, as a daemon does."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
