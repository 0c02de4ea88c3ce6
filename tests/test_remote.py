"""Remote peers and intruders: TCP with a token, refusals before decoding, other users kept out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from conftest import child_env, last_json, read_lines, run_python
from logfunnel._core import wire as _wire

# The installing program: listens on TCP too, prints its addresses, then waits
# (bounded) for the test to say "done" on stdin; then reports its stats.
SERVER = r"""
import dataclasses
import json, logging, sys
import logfunnel
tls = {"tls_cert": sys.argv[3]} if len(sys.argv) > 3 else {}
funnel = logfunnel.install(file=sys.argv[1], level="INFO", host=sys.argv[2],
    listen="tcp:127.0.0.1:0", **tls,
    fmt="%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s")
print(json.dumps({"unix": funnel.address, "tcp": funnel.remote_address, "token": funnel.token}), flush=True)
sys.stdin.readline()
funnel.flush()
print(json.dumps(dataclasses.asdict(funnel.stats())), flush=True)
funnel.shutdown()
"""

# A "remote" process: nothing but the environment tells it where to log.
REMOTE = "import logging\nfor i in range(200): logging.warning('rec remote %d pc=%d', i, i)\n"


class Server:
    """A running installer with a TCP listener, driven through its stdin and stdout."""

    def __init__(self, tmp_path: Path, host: str, tls_cert: Path | None = None) -> None:
        """Start the server program and read its addresses."""
        program = tmp_path / "server.py"
        program.write_text(SERVER)
        self.log = tmp_path / "out.log"
        extra = [str(tls_cert)] if tls_cert is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, str(program), str(self.log), host, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        self.addresses = json.loads(self.proc.stdout.readline())

    def finish(self) -> dict[str, int]:
        """Tell the server to flush and stop; return its writer's stats."""
        out, err = self.proc.communicate("done\n", timeout=60)
        assert self.proc.returncode == 0, err
        stats: dict[str, int] = last_json(out)
        return stats


@pytest.mark.parametrize("host", ["thread", "process"])
def test_remote_peer_with_the_token_is_served(tmp_path: Path, host: str) -> None:
    """A process that knows the token logs over TCP like a local child."""
    server = Server(tmp_path, host)
    try:
        env = child_env(
            LOGFUNNEL_ADDRESS=server.addresses["tcp"], LOGFUNNEL_TOKEN=server.addresses["token"]
        )
        run_python("-c", REMOTE, env=env)
    finally:
        stats = server.finish()
    messages = [line.message for line in read_lines(server.log)]
    assert messages == [f"rec remote {i} pc={i}" for i in range(200)]
    assert stats["refused"] == 0


def test_peer_with_a_wrong_token_is_refused_and_logged(tmp_path: Path) -> None:
    """A wrong token: the writer refuses the connection and says so; the peer falls back to stderr."""
    server = Server(tmp_path, "thread")
    try:
        env = child_env(
            LOGFUNNEL_ADDRESS=server.addresses["tcp"], LOGFUNNEL_TOKEN="not-the-token-at-all"
        )
        peer = run_python("-c", REMOTE, env=env)
    finally:
        stats = server.finish()
    assert stats["refused"] >= 1  # the peer retries at most once a second
    assert stats["records"] == 0
    text = server.log.read_text()
    assert "rec remote" not in text
    assert "refused a TCP connection from 127.0.0.1" in text
    assert "wrong token" in text
    # The peer learns at connect time, and keeps every record (on stderr).
    assert "refused this process's token" in peer.stderr
    for i in range(200):
        assert f"rec remote {i} pc={i}" in peer.stderr


def _raw_peer(address: str, payload: bytes) -> bytes:
    """Connect to a TCP address, send ``payload`` without answering, return what came back."""
    code = (
        "import socket, sys\n"
        "host, port = sys.argv[1].removeprefix('tcp:').rsplit(':', 1)\n"
        "with socket.create_connection((host, int(port)), timeout=10) as s:\n"
        "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
        "    got = b''\n"
        "    try:\n"
        "        while chunk := s.recv(4096):\n"
        "            got += chunk\n"
        "    except ConnectionResetError:\n"  # closed with our bytes unread: RST
        "        pass\n"
        "sys.stdout.write(got.hex())\n"
    )
    proc = run_python("-c", code, address, payload.hex())
    return bytes.fromhex(proc.stdout)


def _frame(fields: object) -> bytes:
    """Return a frame of ``fields`` (header and msgpack payload)."""
    payload = msgpack.packb(fields)
    return len(payload).to_bytes(4, "big") + payload


OTHER_VERSIONS = (_wire.PROTOCOL_VERSION - 1, _wire.PROTOCOL_VERSION + 1)


@pytest.mark.parametrize("host", ["thread", "process"])
def test_peer_speaking_another_protocol_version_is_refused(tmp_path: Path, host: str) -> None:
    """A peer whose HELLO says the protocol before this one (or after) is refused with an ERROR naming both versions; others log on."""
    server = Server(tmp_path, host)
    try:
        path = server.addresses["unix"].removeprefix("unix:")
        for version in OTHER_VERSIONS:
            # A protocol 1 record (every field inline) follows the HELLO in the same write.
            old_record = [
                _wire.RECORD, "old", 20, "INFO", f"[protocol-{version} record]", "p", "f", "m",
                1, "fn", 1.0, 0.0, 0.0, 1, "t", 4242, "old", None, None, None, None,
            ]  # fmt: skip
            hello = [_wire.HELLO, version, 4242 + version, f"old-peer-{version}"]
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(path)
                sock.sendall(_frame(hello) + _frame(old_record))
                # The writer answers nothing and closes the connection (RST: our record unread).
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(4096) == b""
        run_python("-c", REMOTE, env=child_env(LOGFUNNEL_ADDRESS=server.addresses["unix"]))
    finally:
        stats = server.finish()
    lines = read_lines(server.log)
    refusals = [line for line in lines if line.level == "ERROR"]
    assert [(line.process, line.logger) for line in refusals] == [("logfunnel-writer", "logfunnel")] * 2
    for line, version in zip(refusals, OTHER_VERSIONS, strict=True):
        assert line.message.startswith(f"refused process {4242 + version} (old-peer-{version}): ")
        assert f"it speaks logfunnel protocol [{version}]" in line.message
        assert f"this writer [{_wire.PROTOCOL_VERSION}]" in line.message
    assert "discarded" not in server.log.read_text()  # nothing after a refused HELLO is read
    messages = [line.message for line in lines if line.logger == "root"]
    assert messages == [f"rec remote {i} pc={i}" for i in range(200)]
    assert stats["bad_frames"] == 2
    assert stats["records"] == 200


def test_garbage_and_huge_frames_are_refused_before_decoding(tmp_path: Path) -> None:
    """Bytes from a peer that has not answered the challenge are never decoded."""
    server = Server(tmp_path, "thread")
    try:
        huge_header = (2**31).to_bytes(4, "big") + b"\x00" * 60
        garbage = os.urandom(4096)
        got_huge = _raw_peer(server.addresses["tcp"], huge_header)
        got_garbage = _raw_peer(server.addresses["tcp"], garbage)
    finally:
        stats = server.finish()
    # Each peer got its 32-byte challenge, then the connection was closed.
    assert len(got_huge) == 32
    assert len(got_garbage) == 32
    assert stats["refused"] == 2
    assert stats["bad_frames"] == 0, "a byte of an unauthenticated peer was decoded"
    assert server.log.read_text().count("wrong token") == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_another_user_cannot_reach_the_unix_socket(tmp_path: Path) -> None:
    """A process of uid nobody can neither connect to the socket nor list its directory."""
    server = Server(tmp_path, "thread")
    try:
        path = server.addresses["unix"].removeprefix("unix:")
        # The system Python: the test's own interpreter may live where nobody cannot read.
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        code = (
            "import os, socket, sys\n"
            "path = sys.argv[1]\n"
            "try:\n    os.listdir(os.path.dirname(path)); print('listed')\n"
            "except PermissionError: print('list refused')\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(path); s.sendall(b'x' * 64); print('connected')\n"
            "except PermissionError: print('connect refused')\n"
            "finally:\n    s.close()\n"
        )
        intruder = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                python,
                "-c",
                code,
                path,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        stats = server.finish()
    assert intruder.stdout.split("\n")[:2] == ["list refused", "connect refused"], intruder
    assert stats["processes"] == 0


def test_listen_option_is_checked(tmp_path: Path) -> None:
    """A malformed listen= or a short token fails at install() with what to change."""
    code = (
        "import logfunnel\n"
        "for kwargs in ({'listen': 'udp:1.2.3.4:5'}, {'listen': 'tcp:127.0.0.1:0', 'token': 'short'}):\n"
        "    try:\n        logfunnel.install(**kwargs)\n    except ValueError as exc:\n        print(exc)\n"
    )
    proc = run_python("-c", code, cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("listen='udp:1.2.3.4:5': give tcp:HOST:PORT")
    assert lines[1].startswith("token= must be a string of at least 16 characters")


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path]:
    """Make a CA and a certificate for 127.0.0.1 it signed (key included), as PEM files."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_path, cert_path = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    return ca_path, cert_path


@pytest.mark.parametrize("host", ["thread", "process"])
def test_tls_peer_that_trusts_the_ca_is_served(
    tmp_path: Path, host: str, certificates: tuple[Path, Path]
) -> None:
    """With tls_cert=, a peer that verifies the writer and knows the token logs over TLS."""
    ca_path, cert_path = certificates
    server = Server(tmp_path, host, cert_path)
    try:
        assert server.addresses["tcp"].startswith("tls:127.0.0.1:")
        env = child_env(
            LOGFUNNEL_ADDRESS=server.addresses["tcp"],
            LOGFUNNEL_TOKEN=server.addresses["token"],
            LOGFUNNEL_TLS_CA=str(ca_path),
        )
        run_python("-c", REMOTE, env=env)
    finally:
        stats = server.finish()
    messages = [line.message for line in read_lines(server.log)]
    assert messages == [f"rec remote {i} pc={i}" for i in range(200)]
    assert stats["refused"] == 0


def test_tls_peer_that_cannot_verify_the_writer_sends_nothing(
    tmp_path: Path, certificates: tuple[Path, Path]
) -> None:
    """A peer without the CA refuses the writer's certificate and keeps its records on stderr."""
    _, cert_path = certificates
    server = Server(tmp_path, "thread", cert_path)
    try:
        env = child_env(
            LOGFUNNEL_ADDRESS=server.addresses["tcp"], LOGFUNNEL_TOKEN=server.addresses["token"]
        )
        peer = run_python("-c", REMOTE, env=env)
    finally:
        stats = server.finish()
    assert "CERTIFICATE_VERIFY_FAILED" in peer.stderr
    assert "rec remote 199 pc=199" in peer.stderr
    assert stats["records"] == 0
    assert "rec remote" not in server.log.read_text()


def test_plaintext_peer_on_the_tls_port_is_refused(
    tmp_path: Path, certificates: tuple[Path, Path]
) -> None:
    """Plain bytes sent to the TLS listener fail the handshake and are never decoded."""
    _, cert_path = certificates
    server = Server(tmp_path, "thread", cert_path)
    try:
        address = server.addresses["tcp"].replace("tls:", "tcp:", 1)
        got = _raw_peer(address, (2**31).to_bytes(4, "big") + os.urandom(1000))
    finally:
        stats = server.finish()
    assert len(got) < 32  # no challenge: at most a TLS alert
    assert stats["refused"] == 1
    assert stats["bad_frames"] == 0
    assert "TLS handshake failed" in server.log.read_text()
