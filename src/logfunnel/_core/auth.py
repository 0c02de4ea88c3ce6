"""Remote (TCP) peers prove they know the funnel's token before a byte of theirs is decoded.

On accepting a TCP connection the writer sends 32 random bytes (the nonce).
The peer answers with HMAC-SHA256(token, "logfunnel-v1" + nonce): 32 raw
bytes, compared in constant time.  Until the answer is right, whatever else
the peer sent is held unread by the decoder; a wrong or late answer closes the
connection and is reported.  A right one is confirmed with one byte, and the
peer sends no record before it has that byte: a refused peer learns so at
connect time and keeps its records (in its fallback) instead of sending them
into a connection about to be closed.  The token never crosses the wire, and a recorded
answer is useless for any other connection (each nonce is new).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
from typing import Final

NONCE_SIZE: Final = 32
ANSWER_SIZE: Final = 32
ACCEPTED: Final = b"\x01"
#: Seconds a TCP peer has to answer the challenge.
ANSWER_TIMEOUT: Final = 5.0
_CONTEXT: Final = b"logfunnel-v1"


def new_token() -> str:
    """Return a fresh random token (64 hex digits)."""
    return secrets.token_hex(32)


def new_nonce() -> bytes:
    """Return a fresh challenge."""
    return secrets.token_bytes(NONCE_SIZE)


def answer(token: str, nonce: bytes) -> bytes:
    """Return the answer to ``nonce`` for ``token``."""
    return hmac.new(token.encode("utf-8"), _CONTEXT + nonce, hashlib.sha256).digest()


def check(token: str, nonce: bytes, given: bytes) -> bool:
    """Return True if ``given`` answers ``nonce`` for ``token`` (constant time)."""
    return hmac.compare_digest(answer(token, nonce), given)


def answer_challenge(sock: socket.socket, token: str) -> None:
    """Read the writer's nonce from a new connection and send the answer."""
    nonce = b""
    while len(nonce) < NONCE_SIZE:
        chunk = sock.recv(NONCE_SIZE - len(nonce))
        if not chunk:
            msg = "the writer closed the connection before sending its challenge"
            raise ConnectionError(msg)
        nonce += chunk
    sock.sendall(answer(token, nonce))
    if sock.recv(1) != ACCEPTED:
        msg = "the writer refused this process's token (is LOGFUNNEL_TOKEN the funnel's?)"
        raise PermissionError(msg)
