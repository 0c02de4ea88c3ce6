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
owns them (and its sinks) until it ends.
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
from typing import Any, Final

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
            ],
            pass_fds=[sock.fileno() for sock in passed] + ([relay.far_fd] if relay else []),
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
    """
    listen_fd, control_fd = (int(a) for a in argv[:2])
    listener = socket.socket(fileno=listen_fd)
    control = socket.socket(fileno=control_fd)
    tcp_listener = socket.socket(fileno=int(argv[2])) if len(argv) > 2 else None
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
                code = _serve(listener, control, config, first, tcp_listener)
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
) -> int:
    """Build the sinks and run the writer loop (in the supervisor's forked child).

    With ``install()``'s own sinks (no ``config=``) they are built here and
    given to the writer, on no logger; with ``config=`` the tree built by
    ``dictConfig`` gets the records (adopt mode).
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
    return 0
