"""Helpers of the writer tests (``tests/test_writer_*.py``): a host process, raw peers, waits.

No test lives here.  ``Host`` runs a small Python script (given as text) in a
child process: it prints one JSON line when it is ready and answers each
command line on its stdin with one JSON line.  ``RawPeer`` is a process's
connection to a writer, spoken frame by frame with ``_wire`` (what a
``FunnelHandler`` sends), so a test controls every byte a peer sends.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conftest import child_env
from logfunnel._core import auth as _auth
from logfunnel._core import wire as _wire

if TYPE_CHECKING:
    from collections.abc import Callable

#: The end of every host script: answer "flush", "stats" and "quit" on stdin, one JSON line each.
COMMAND_LOOP = r"""
import dataclasses
for line in sys.stdin:
    command = line.strip()
    if command == "flush":
        answer = funnel.flush(timeout=60)
    elif command == "stats":
        answer = dataclasses.asdict(funnel.stats())
    else:
        answer = funnel.shutdown(timeout=60)
    print(json.dumps(answer), flush=True)
    if command == "quit":
        break
"""


DEADLINE = 60.0  # seconds any one step may take before a test gives up on it


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        # A poll interval, not a synchronisation: the condition decides.
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Host:
    """A child process running ``script``; talk to it one JSON line per command."""

    def __init__(
        self,
        tmp: Path,
        script: str,
        *args: str,
        env: dict[str, str] | None = None,
        name: str = "host",
    ) -> None:
        """Start the script and read its first line (the ready message) into ``ready``."""
        path = tmp / f"{name}.py"
        path.write_text(script, encoding="utf-8")
        self.stderr_path = tmp / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(path), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env if env is not None else child_env(),
                cwd=tmp,
            )
        assert self.proc.stdout is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        try:
            self.ready: Any = self._answer(DEADLINE)
        except BaseException:
            self.kill()
            raise

    def _answer(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the host did not answer in time: {self.stderr()[-3000:]}"
            if self._selector.select(remaining):
                chunk = os.read(fd, 65536)
                assert chunk, f"the host exited: {self.stderr()[-3000:]}"
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def command(self, command: str, timeout: float = DEADLINE) -> Any:
        """Send one command line and return the host's JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def stderr(self) -> str:
        """Return what the host (and any writer process it started) wrote to stderr."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def finish(self, timeout: float = DEADLINE) -> Any:
        """Send ``quit``, wait for the host to exit, and return its last answer."""
        answer = self.command("quit", timeout)
        self.proc.wait(timeout)
        return answer

    def kill(self) -> None:
        """End the host if it still runs (a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._selector.close()


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user and system) process ``pid`` has used, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


class RawPeer:
    """One connection to a writer that speaks the wire protocol frame by frame."""

    _requests = itertools.count(1)

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        name: str = "raw-peer",
        hello: bool = True,
    ) -> None:
        """Connect (answering a TCP writer's challenge when ``token`` is given), send HELLO."""
        kind, _, where = address.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(DEADLINE)
            self.sock.connect(where)
        else:
            host, _, port = where.rpartition(":")
            self.sock = socket.create_connection((host.strip("[]"), int(port)), DEADLINE)
            if token is not None:
                _auth.answer_challenge(self.sock, token)
        self.encoder = _wire.Encoder()
        self.reader = _wire.FrameReader()
        if hello:
            self.send(_wire.HELLO, _wire.PROTOCOL_VERSION, os.getpid(), name)

    def send(self, *fields: Any) -> None:
        """Send one frame."""
        self.sock.sendall(self.encoder.frame(list(fields)))

    def log(self, name: str, message: str, level: int = logging.INFO) -> None:
        """Send one record of logger ``name`` (a SITE and THREAD frame ahead the first time)."""
        record = logging.LogRecord(name, level, __file__, 1, message, None, None)
        self.sock.sendall(self.encoder.record(record))

    def ask(self, kind: int, reply: int, timeout: float = DEADLINE) -> list[Any] | None:
        """Send ``[kind, id]`` and return the writer's ``[reply, id, ...]``, or None at EOF."""
        request = next(self._requests)
        self.send(kind, request)
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None
            for fields in self.reader.feed(data):
                if fields[:2] == [reply, request]:
                    return list(fields)

    def flush(self, timeout: float = DEADLINE) -> bool:
        """Ask for a barrier; True once the writer answered it."""
        return self.ask(_wire.FLUSH, _wire.FLUSHED, timeout) is not None

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()
