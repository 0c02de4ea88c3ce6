"""Opening a stream to a writer, and reading its replies: what every client of a writer shares.

Used by the sending side (``connection``), by ``install()``'s control channel
and by the process host's supervisor.  Owns nothing: each caller owns the
socket it gets.  ``socket`` is imported here, so a process that never logs
never imports it (the connection module is loaded at the first record).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time

from logfunnel._core import wire as _wire
from logfunnel._core.options import ENV_TLS_CA, ENV_TOKEN

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Final

SEND_FLAGS: Final = getattr(socket, "MSG_NOSIGNAL", 0)
CONNECT_TIMEOUT: Final = 5.0


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Open a stream socket to a writer address (``unix:PATH`` or ``tcp:HOST:PORT``)."""
    kind, _, where = address.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = where
    elif kind in ("tcp", "tls"):
        host, _, port = where.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    else:
        msg = f"unknown logfunnel address {address!r}: expected unix:PATH, tcp: or tls:HOST:PORT"
        raise ValueError(msg)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
        if kind != "unix":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            from logfunnel._core.auth import answer_challenge  # noqa: PLC0415 - remote peers only

            if kind == "tls":
                import ssl  # noqa: PLC0415 - remote peers only

                context = ssl.create_default_context(cafile=os.environ.get(ENV_TLS_CA) or None)
                sock = context.wrap_socket(sock, server_hostname=target[0])
            answer_challenge(sock, os.environ.get(ENV_TOKEN, ""))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def send_flags(sock: socket.socket) -> int:
    """Return the flags for ``send`` on ``sock``: TLS sockets take none."""
    return 0 if hasattr(sock, "cipher") else SEND_FLAGS


def read_reply(
    sock: socket.socket, kind: int, request: int | None, deadline: float
) -> list[Any] | None:
    """Read frames until ``[kind, request, ...]`` arrives; None if the deadline passes first.

    With ``request=None`` any frame of that kind answers.
    """
    reader = _wire.FrameReader()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            for fields in reader.feed(data):
                if fields[0] == kind and (request is None or fields[1:2] == [request]):
                    return list(fields)
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)


def process_name() -> str:
    """Return this process's ``multiprocessing`` name, without importing ``multiprocessing``."""
    mp = sys.modules.get("multiprocessing")
    if mp is not None:
        with contextlib.suppress(Exception):
            return str(mp.current_process().name)
    return "MainProcess"
