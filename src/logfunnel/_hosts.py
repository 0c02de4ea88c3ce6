"""Where the writer loop runs: a thread of the installing process, or an interpreter of its own.

Same loop (``_writer.Writer``), two hosts:

* **thread** (the default in adopt mode and with ``config=``): a daemon thread
  of the installing process.  It can hand records to that process's own
  handlers (adopt mode) or to sinks install() built.
* **process** (the default with install()'s own sinks): a fresh interpreter
  started with exec (never forked from a threaded parent), which forks the
  loop from itself and forks a new one if it dies
  (``_writer_process.process_main``: the supervisor).  It builds its sinks
  from the plain values of ``Settings.spec()`` (``FileOptions`` made again
  from them).

Who owns what: the installing ``Funnel`` owns what these return (the writer
and its thread, or the writer process) and the control channel to it.  In a
writer process the supervisor holds the listening sockets and the control
channel's far end for the whole run; each writer it forks inherits them and
owns them (and its sinks) until it ends.  Under ``logfunnel run`` the writer
process also watches a ``Lifeline`` (below): it outlives an installer that
left without ``shutdown()`` while the program's processes live.  What runs in
the writer process is ``_writer_process``'s.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from logfunnel._core.adopt_render import Spec

from logfunnel import _writer_process
from logfunnel._core import dial as _dial
from logfunnel._core import gate as _gate
from logfunnel._core import rundir as _rundir
from logfunnel._core import wire as _wire
from logfunnel._core import writer as _writer
from logfunnel._settings import Settings
from logfunnel.sinks import console as _console

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
    adopt: Spec | None = None,
) -> tuple[_writer.Writer, threading.Thread, socket.socket]:
    """Start the writer loop in a daemon thread; return it, its thread and the control channel.

    ``adopt``: in adopt mode, the Spec of the formatter the senders render with.
    """
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
        writer.adopt_spec = adopt
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
    env = _writer_process.environment(os.environ)
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
                    "import sys; from logfunnel._writer_process import leave, process_main; "
                    "leave(process_main(sys.argv[1:]))"
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
        _wait_exit(process, max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):  # the supervisor and the writer it forked
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _wait_for_group_to_die(process.pid, timeout=2.0)
        _join_relay(process, deadline)
        return False
    _join_relay(process, deadline)
    return True


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``process`` exits, woken by its exit; raise ``TimeoutExpired`` if not in time.

    ``Popen.wait(timeout)`` polls, sleeping 0.5 ms, then twice as long each
    time up to 50 ms: 32-66 ms of every ``shutdown()`` were spent asleep after
    the writer process had already left (cProfile: five ``time.sleep`` calls).
    A pidfd (Linux 5.3+) becomes readable at the exit itself.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, or reaped by someone else's waitpid(-1)
        process.wait(timeout)
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(process.args, timeout)
    process.wait()


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
