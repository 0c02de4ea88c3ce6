"""Where the writer loop runs: a thread of the installing process, or an interpreter of its own.

Same loop (``_writer.Writer``), two hosts:

* **thread** (the default): a daemon thread of the installing process.  It
  can hand records to that process's own handlers (adopt mode) or to sinks
  install() built.
* **process**: a fresh interpreter started with exec (never forked from a
  threaded parent), which forks the loop from itself and forks a new one if
  it dies (``_writer.process_main``).  It builds its sinks from the plain
  values of ``Settings.spec()``.

Who owns what: the installing ``Funnel`` owns what these return (the writer
and its thread, or the writer process) and the control channel to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Final

from logfunnel import _connection, _wire, _writer
from logfunnel._settings import Settings

_WRITER_START_TIMEOUT: Final = 30.0


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
            tls=_writer.tls_context(settings.tls_cert, settings.tls_key),
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
    except BaseException:
        control.close()
        raise
    finally:
        # Only the writer may hold these: a listening socket left open here
        # would let children connect and block with nobody reading.
        for sock in passed:
            sock.close()
    try:
        control.sendall(config_frame)
        reply = _connection.read_reply(
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
        return False
    return True


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
