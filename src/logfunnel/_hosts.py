"""Where the writer loop runs: a thread of the installing process, or an interpreter of its own.

Same loop (``_writer.Writer``), two hosts:

* **thread** (the default): a daemon thread of the installing process.  It
  can hand records to that process's own handlers (adopt mode) or to sinks
  install() built.
* **process**: a fresh interpreter started with exec (never forked from a
  threaded parent), which forks the loop from itself and forks a new one if
  it dies (``process_main``, below: the supervisor).  It builds its sinks
  from the plain values of ``Settings.spec()`` (``_serve``: ``FileOptions``
  made again from them).

Who owns what: the installing ``Funnel`` owns what these return (the writer
and its thread, or the writer process) and the control channel to it.  In a
writer process the supervisor holds the listening sockets and the control
channel's far end for the whole run; each writer it forks inherits them and
owns them (and its sinks) until it ends.  Under ``logfunnel run`` the writer
process also watches a ``Lifeline`` (below): it outlives an installer that
left without ``shutdown()`` while the program's processes live.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

from logfunnel._core import dial as _dial
from logfunnel._core import gate as _gate
from logfunnel._core import rundir as _rundir
from logfunnel._core import wire as _wire
from logfunnel._core import writer as _writer
from logfunnel._settings import Settings
from logfunnel.sinks import console as _console
from logfunnel.sinks import files as _sinks
from logfunnel.sinks.options import FileOptions

_WRITER_START_TIMEOUT: Final = 30.0
#: The console relays of running writer processes, by pid (``stop_process`` joins them).
_relays: dict[int, _console.ConsoleRelay] = {}


def tcp_address(listener: socket.socket, settings: Settings) -> str:
    """Return the address remote processes connect to (``tcp:`` or ``tls:HOST:PORT``)."""
    host, port = listener.getsockname()[:2]
    kind = "tls" if settings.tls_cert else "tcp"
    return f"{kind}:[{host}]:{port}" if ":" in host else f"{kind}:{host}:{port}"


def listen_tcp(where: tuple[str, int]) -> socket.socket:
    """Open the TCP listener, or raise ``ValueError`` saying why it cannot listen there."""
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


def start_thread(
    settings: Settings,
    listener: socket.socket,
    tcp_listener: socket.socket | None,
    sinks: list[Any] | None,
) -> tuple[_writer.Writer, threading.Thread, socket.socket]:
    """Start the writer loop in a daemon thread; return it, its thread and the control channel."""
    control, far_end = socket.socketpair()
    try:
        writer = _writer.Writer(
            listener,
            far_end,
            settings.options.frame_limit,
            tcp_listener=tcp_listener,
            token=settings.token,
            tls=_gate.tls_context(settings.tls_cert, settings.tls_key),
            sinks=sinks,
        )
        # install()'s own sinks: the senders render plain records (_running.start).
        writer.lines_allowed = sinks is not None
        thread = _writer.start_thread(writer)
    except BaseException:
        control.close()
        far_end.close()
        raise
    return writer, thread, control


def start_process(
    settings: Settings, listener: socket.socket, tcp_listener: socket.socket | None
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start a writer process that builds the sinks; return it and the control channel.

    Raises ``ValueError`` if the sink options are not plain values or the
    writer process cannot build its sinks; nothing is left running then.
    """
    try:
        config_frame = _wire.Encoder().frame([_wire.CONFIG, settings.spec()])
    except (TypeError, ValueError) as exc:
        msg = (
            f"host='process' sends the sink options to a fresh interpreter, and they must be "
            f"plain values (str, int, float, bool, None, lists and dicts): {exc}. Name "
            f"factories by import path ('()': 'package.module.factory') or use host='thread'"
        )
        raise ValueError(msg) from None
    # The installer writes the console, under this host too: its terminal, its progress
    # bars (a tqdm lock, a rich Live). The writer process sends the lines back to a
    # thread here (sinks/console.py), or its writes would land in the middle of a bar.
    relay = None
    if settings.config is None and (settings.console or not settings.file):
        relay = _console.ConsoleRelay()
        relayed = {"fd": relay.far_fd, "colour": relay.colour}
        config_frame = _wire.Encoder().frame(
            [_wire.CONFIG, {**settings.spec(), "console_relay": relayed}]
        )
    control, far_end = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    # The writer must import this very logfunnel, even when it came from sys.path.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    passed = [listener, far_end] + ([tcp_listener] if tcp_listener is not None else [])
    # Under `logfunnel run`: the writer outlives this process while the program's do.
    lifeline = _offered
    lifeline_fds = [lifeline.read_fd] if lifeline is not None else []
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import sys; from logfunnel._hosts import process_main; "
                    "sys.exit(process_main(sys.argv[1:]))"
                ),
                *(str(sock.fileno()) for sock in passed),
                *(lifeline.arguments() if lifeline is not None else []),
            ],
            pass_fds=[sock.fileno() for sock in passed]
            + ([relay.far_fd] if relay else [])
            + lifeline_fds,
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own process group (a new session: Python 3.10 has no
            # process_group=): the writer it forks is in it too, so a shutdown
            # that times out can end both, and a terminal's Ctrl-C reaches
            # neither: the writer drains and ends when this process goes.
            start_new_session=True,
        )
    except BaseException:
        control.close()
        if relay is not None:
            relay.close()
        raise
    finally:
        # Only the writer may hold these: a listening socket left open here
        # would let children connect and block with nobody reading.
        for sock in passed:
            sock.close()
    if relay is not None:  # if the writer fails to start, its end closes and the relay ends
        relay.started()
    try:
        control.sendall(config_frame)
        reply = _dial.read_reply(
            control, _wire.CONFIG, None, time.monotonic() + _WRITER_START_TIMEOUT
        )
    except OSError:
        reply = None
    if reply is None or reply[1] is not None:
        process.kill()
        process.wait()
        control.close()
        why = reply[1] if reply is not None else "it did not start in time (see its stderr)"
        msg = f"the writer process could not build its sinks: {why}"
        raise ValueError(msg)
    if relay is not None:
        _relays[process.pid] = relay
    if lifeline is not None:
        lifeline.handed_over()
    return process, control


def stop_process(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for a writer process to end; kill its group if it does not in time."""
    try:
        process.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):  # the supervisor and the writer it forked
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _wait_for_group_to_die(process.pid, timeout=2.0)
        _join_relay(process, deadline)
        return False
    _join_relay(process, deadline)
    return True


def _join_relay(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until the console lines the ended writer process sent are printed."""
    relay = _relays.pop(process.pid, None)
    if relay is not None:
        relay.join(max(0.1, deadline - time.monotonic()))


def _wait_for_group_to_die(group: int, timeout: float) -> None:
    """Wait until no live process is left in process group ``group`` (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _rundir.proc_stat(entry)
            if fields is None:
                continue
            # fields[0] is the state, fields[2] the process group.
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                alive = True
                break
        if not alive:
            return
        time.sleep(0.01)  # polling the kernel's view; bounded by timeout


# -- the lifeline: a writer process that outlives its installer -------------------------


class Lifeline:
    """A pipe whose write end every process of the program holds; the writer process reads it.

    ``logfunnel run`` runs the program in the installing process, and a
    program may leave that process while its own processes go on:
    ``gunicorn --daemon`` forks, the parent leaves by ``os._exit()``, and the
    daemon's master and workers are what remains.  Nothing of ``shutdown()``
    runs then.  With a lifeline, a writer process whose installer went without
    a ``SHUTDOWN`` keeps serving until the lifeline reaches end of file:
    every process that held its write end has exited (or closed it).  Then it
    drains, ends and removes the funnel's directory (``_OwnerWatch``).

    The write end is a bare descriptor, on no Python object: a forked child
    inherits it and never closes it (if the program closes it, a daemon
    closing every descriptor, the number may be the program's by then).  It
    is inheritable, so a program that replaces itself with ``exec``
    (gunicorn's USR2 upgrade) keeps it; ``subprocess`` children do not get it
    (``close_fds``): they send to the writer while it runs, like any child.
    The read end goes to the writer process only (``start_process``).

    Who owns what: the installing process (``cli.run``) makes it and offers it
    to the next writer process started (``offered``); it keeps the write end
    until it exits.
    """

    def __init__(self) -> None:
        """Make the pipe (both ends close on exec until the write end is made inheritable)."""
        self.read_fd, self.write_fd = os.pipe()
        self._write_id = _identity(self.write_fd)
        os.set_inheritable(self.write_fd, True)
        #: True once a writer process watches the read end.
        self.taken = False

    def arguments(self) -> list[str]:
        """Return what ``process_main`` is told: the read end, and who owns the writer."""
        return [f"lifeline={self.read_fd}", f"owner={os.getpid()}"]

    def handed_over(self) -> None:
        """Close this process's copy of the read end: the writer process holds it now."""
        self.taken = True
        with contextlib.suppress(OSError):
            os.close(self.read_fd)
        self.read_fd = -1

    def close(self) -> None:
        """Close both ends (no writer process took it, or the funnel is shut down)."""
        if self.read_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.read_fd)
            self.read_fd = -1
        if self.write_fd >= 0 and _identity(self.write_fd) == self._write_id:
            # Still our pipe: a program that closed every descriptor may have
            # opened something else under that number since.
            with contextlib.suppress(OSError):
                os.close(self.write_fd)
        self.write_fd = -1


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


#: The lifeline the next writer process started in this process takes (``offered``).
_offered: Lifeline | None = None


@contextlib.contextmanager
def offered(lifeline: Lifeline | None) -> Iterator[None]:
    """Offer ``lifeline`` to a writer process that ``start_process`` starts inside the block."""
    global _offered  # noqa: PLW0603 - one offer, for the length of one install()
    _offered = lifeline
    try:
        yield
    finally:
        _offered = None


# -- the process host: a supervisor that forks the writer ---------------------------------


#: Exit code of a writer that could not build its sinks: not worth a restart.
_CONFIG_FAILED: Final = 3
#: More restarts than this within _RESTART_WINDOW seconds: give up.
_MAX_RESTARTS: Final = 10
_RESTART_WINDOW: Final = 60.0


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
        sinks = _sinks.configure_writer_process(
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
            with contextlib.suppress(Exception):  # a cleanup: never the writer's failure
                _give_back_claim(file, self.owner, self.address)


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


def _give_back_claim(file: str, owner: int, address: str) -> None:
    """Remove F's entry from the file registry if it is still the vanished owner's.

    The owner took F's claim (``logfunnel._shared``) and would have given it
    back at shutdown; the kernel dropped its lock when it went, but its
    record and lock file stay.  Named as ``_shared.install`` names them.
    """
    import hashlib  # noqa: PLC0415 - a writer whose owner vanished only
    import json  # noqa: PLC0415

    from logfunnel._shared import claim as _claim  # noqa: PLC0415 - imports _running, and so us

    registry = _claim.registry_dir()
    if registry is None:
        return
    key = hashlib.sha256(os.fsencode(os.path.realpath(file))).hexdigest()[:32]
    base = os.path.join(registry, key)

    def ours() -> bool:
        try:
            with open(base + ".json", encoding="utf-8") as stream:
                record = json.load(stream)
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and (record.get("pid"), record.get("address")) == (
            owner,
            address,
        )

    if ours():
        taken = _claim.Claim.take(base)
        if isinstance(taken, _claim.Claim):
            if ours():  # still: nobody claimed F between our look and our lock
                taken.release()
            else:
                os.close(taken.fd)
    _claim.remove_if_empty(registry)
