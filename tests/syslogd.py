"""Real syslog daemons for the tests: rsyslog and syslog-ng, found or installed, run as children.

Each ``Daemon`` writes a configuration of its own that listens on loopback
ports (TCP octet-counted, UDP, and TLS with a ``trustme`` certificate) and
writes every message it receives, per transport, as one JSON object a line
(so a multi-line message stays one line), then runs the daemon in the
foreground as a child process of the test, in a session of its own.

Finding the daemons: Debian's ``rsyslog`` (with ``rsyslog-gnutls`` for TLS)
installs with apt-get.  ``syslog-ng-core`` conflicts with it (both provide
``system-log-daemon``), so when it is not installed already the package is
fetched with ``apt-get download`` and unpacked into a directory of its own
(``dpkg-deb -x``), its libraries installed with apt-get: both daemons then
live on one machine.  Where none of that works, ``find`` says why, and the
tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where an unpacked syslog-ng lives between runs (the package is 1 MB).
_SYSLOG_NG_ROOT = Path(os.environ.get("LOGFUNNEL_SYSLOG_NG_ROOT", "/var/tmp/logfunnel-syslog-ng"))
#: syslog-ng-core's libraries on Debian 12 (apt-cache depends syslog-ng-core).
_SYSLOG_NG_LIBS = (
    "libglib2.0-0", "libivykis0", "libjson-c5", "libnet1", "libpcre3", "libssl3", "libwrap0",
    "libcap2", "libsystemd0",
)  # fmt: skip
#: One apt-get call at most (a test module that installs allows for a few: its timeout).
_APT_TIMEOUT = 200.0
_START_TIMEOUT = 30.0


@dataclass
class Found:
    """A daemon to run: its command line's start, its environment, and whether it does TLS."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    tls: str | None = None  # None: TLS works; else why not


def _apt(*args: str, cwd: Path | None = None) -> str | None:
    """Run apt-get (once more after ``apt-get update`` if it fails); None, or why it failed."""
    why = _apt_once(*args, cwd=cwd)
    if why is not None and _apt_once("update", "-qq") is None:
        why = _apt_once(*args, cwd=cwd)
    return why


def _apt_once(*args: str, cwd: Path | None = None) -> str | None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "apt-get (as root) is not available"
    try:
        proc = subprocess.run(
            ["apt-get", *args],
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"apt-get {' '.join(args)} took over {_APT_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        return f"apt-get {' '.join(args)} failed: {proc.stderr.strip()[-300:]}"
    return None


def _rsyslog_tls_module() -> bool:
    return bool(glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"))


@functools.cache
def find_rsyslog() -> Found | str:
    """Return how to run rsyslogd, installing it if need be, or why it cannot run."""
    binary = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
    )
    if binary is None or not _rsyslog_tls_module():
        why = _apt("install", "-y", "--no-install-recommends", "rsyslog", "rsyslog-gnutls")
        binary = shutil.which("rsyslogd") or (
            "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
        )
        if binary is None:
            return f"rsyslogd is not installed and could not be: {why}"
    tls = None if _rsyslog_tls_module() else "rsyslog-gnutls (the gtls stream driver) is missing"
    return Found([binary], tls=tls)


@functools.cache
def find_syslog_ng() -> Found | str:
    """Return how to run syslog-ng (installed, or unpacked beside rsyslog), or why it cannot."""
    binary = shutil.which("syslog-ng") or (
        "/usr/sbin/syslog-ng" if os.path.exists("/usr/sbin/syslog-ng") else None
    )
    if binary is not None:
        return Found([binary])
    root = _SYSLOG_NG_ROOT / "root"
    binary = str(root / "usr/sbin/syslog-ng")
    if not os.path.exists(binary):
        why = _apt("install", "-y", "--no-install-recommends", *_SYSLOG_NG_LIBS)
        if why is not None:
            return f"syslog-ng's libraries could not be installed: {why}"
        _SYSLOG_NG_ROOT.mkdir(parents=True, exist_ok=True)
        for old in _SYSLOG_NG_ROOT.glob("*.deb"):
            old.unlink()
        try:
            # apt-get download writes into its current directory.
            why = _apt("download", "syslog-ng-core", cwd=_SYSLOG_NG_ROOT)
            debs = list(_SYSLOG_NG_ROOT.glob("syslog-ng-core_*.deb"))
            if why is not None or not debs:
                return f"syslog-ng-core could not be fetched: {why}"
            subprocess.run(
                ["dpkg-deb", "-x", str(debs[0]), str(root)], check=True, timeout=120,
                capture_output=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            return f"syslog-ng-core could not be unpacked: {exc}"
    modules = glob.glob(str(root / "usr/lib/syslog-ng/3.*"))
    if not os.path.exists(binary) or not modules:
        return "the unpacked syslog-ng-core has no binary or no modules"
    return Found(
        [binary, "--module-path", modules[0]],
        env={"LD_LIBRARY_PATH": str(root / "usr/lib/syslog-ng")},
    )


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Return a loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Certs:
    """A test CA and a server certificate for 127.0.0.1 (``trustme``), as files."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Certs:
        """Write a new CA and a certificate it signed for 127.0.0.1 and localhost."""
        import trustme  # noqa: PLC0415 - only the TLS tests need it

        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        certs = cls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
        ca.cert_pem.write_to_path(str(certs.ca))
        server.cert_chain_pems[0].write_to_path(str(certs.cert))
        server.private_key_pem.write_to_path(str(certs.key))
        return certs


_TRANSPORTS = ("tcp", "udp", "tls")


class Daemon:
    """One rsyslogd or syslog-ng, listening on a port per transport, run as a child."""

    def __init__(self, kind: str, found: Found, directory: Path, certs: Certs | None) -> None:
        """Write the configuration into ``directory`` (TLS only with ``certs``)."""
        self.kind, self.found, self.dir, self.certs = kind, found, directory, certs
        directory.mkdir(parents=True, exist_ok=True)
        self.ports = {
            "tcp": free_port(),
            "udp": free_port(socket.SOCK_DGRAM),
            "tls": free_port(),
        }
        self.outputs = {t: directory / f"{t}.jsonl" for t in _TRANSPORTS}
        self.config = directory / ("rsyslog.conf" if kind == "rsyslog" else "syslog-ng.conf")
        self.config.write_text(self._rsyslog() if kind == "rsyslog" else self._syslog_ng())
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "daemon.log"

    def url(self, transport: str) -> str:
        """Return the ``syslog=`` URL of ``transport``'s port."""
        return f"{transport}://127.0.0.1:{self.ports[transport]}"

    def _rsyslog(self) -> str:
        d = self.dir
        tls_global = (
            f' defaultNetstreamDriverCAFile="{self.certs.ca}"'
            f' defaultNetstreamDriverCertFile="{self.certs.cert}"'
            f' defaultNetstreamDriverKeyFile="{self.certs.key}"'
            if self.certs
            else ""
        )
        fields = [
            ("pri", "pri"), ("procid", "procid"), ("msgid", "msgid"), ("app", "app-name"),
            ("host", "hostname"), ("sd", "structured-data"), ("msg", "msg"),
        ]  # fmt: skip
        props = "\n".join(
            f'  property(outname="{out}" name="{name}" format="jsonf")' for out, name in fields
        )
        lines = [
            # Newlines stay (the default escapes them as #012); 64k as the sink's limit.
            (f'global(workDirectory="{d}" maxMessageSize="64k" '
            f'parser.escapeControlCharactersOnReceive="off"{tls_global})'),
            'module(load="imtcp")',
            'module(load="imudp")',
            f'template(name="j" type="list" option.jsonf="on") {{\n{props}\n}}',
        ]
        lines.extend(
            f'ruleset(name="{transport}") {{ action(type="omfile" '
            f'file="{self.outputs[transport]}" template="j") }}'
            for transport in _TRANSPORTS
        )
        port = self.ports
        lines += [
            f'input(type="imtcp" address="127.0.0.1" port="{port["tcp"]}" ruleset="tcp")',
            # A large receive buffer: loopback UDP drops a burst a small one cannot hold.
            (f'input(type="imudp" address="127.0.0.1" port="{port["udp"]}" ruleset="udp" '
            f'rcvbufSize="4m")'),
        ]
        if self.certs:
            lines.append(
                f'input(type="imtcp" address="127.0.0.1" port="{port["tls"]}" ruleset="tls" '
                f'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")'
            )
        return "\n".join(lines) + "\n"

    def _syslog_ng(self) -> str:
        port = self.ports
        sources = [
            f'source s_tcp {{ syslog(ip("127.0.0.1") port({port["tcp"]}) transport("tcp")); }};',
            (f'source s_udp {{ syslog(ip("127.0.0.1") port({port["udp"]}) transport("udp") '
            f"so-rcvbuf(4194304)); }};"),
        ]
        if self.certs:
            sources.append(
                f'source s_tls {{ syslog(ip("127.0.0.1") port({port["tls"]}) transport("tls") '
                f'tls(key-file("{self.certs.key}") cert-file("{self.certs.cert}") '
                f"peer-verify(optional-untrusted))); }};"
            )
        lines = [
            "@version: 3.38",
            ("options { keep-hostname(yes); chain-hostnames(no); use-dns(no); dns-cache(no); "
            "use-fqdn(no); stats-freq(0); log-msg-size(65536); };"),
            *sources,
            ('template t_json { template("$(format-json pri=$PRI procid=$PID msgid=$MSGID '
            'app=$PROGRAM host=$HOST sd=$SDATA msg=$MESSAGE)\\n"); };'),
        ]
        for transport in _TRANSPORTS if self.certs else _TRANSPORTS[:2]:
            lines += [
                (f'destination d_{transport} {{ file("{self.outputs[transport]}" '
                f"template(t_json)); }};"),
                f"log {{ source(s_{transport}); destination(d_{transport}); }};",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the daemon in the foreground and wait (with a deadline) until it listens."""
        d = self.dir
        if self.kind == "rsyslog":
            argv = [*self.found.argv, "-n", "-f", str(self.config), "-i", str(d / "pid")]
        else:
            argv = [
                *self.found.argv, "-F", "-f", str(self.config), "--no-caps",
                "-R", str(d / "persist"), "-p", str(d / "pid"), "-c", str(d / "ctl"),
            ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.found.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        ports = [self.ports["tcp"]] + ([self.ports["tls"]] if self.certs else [])
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    msg = f"{self.kind} exited {self.process.returncode}: {self.log.read_text()}"
                    raise RuntimeError(msg)
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        msg = f"{self.kind} did not listen on {port} in time: {self.log.read_text()}"
                        raise TimeoutError(msg) from None
                    time.sleep(0.02)  # polling a port a child opens; bounded by the deadline

    def kill(self) -> None:
        """SIGKILL the daemon (the kernel closes its sockets) and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """End the daemon: SIGTERM, then SIGKILL if it does not end within 10 s."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def received(self, transport: str) -> list[dict[str, str]]:
        """Return the messages the daemon wrote for ``transport`` so far (whole lines only)."""
        path = self.outputs[transport]
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def wait_for(self, transport: str, count: int, timeout: float = 60.0) -> list[dict[str, str]]:
        """Wait until ``count`` messages of ``transport`` were written; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(transport)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                msg = f"{self.kind} wrote {len(got)} of {count} {transport} messages"
                raise AssertionError(msg)
            time.sleep(0.05)  # polling a file the daemon writes; bounded by the deadline


def parse_sd(sd: str) -> dict[str, dict[str, str]]:
    """Parse RFC 5424 STRUCTURED-DATA (§6.3) into {SD-ID: {name: value}}, unescaping values."""
    elements: dict[str, dict[str, str]] = {}
    if sd in ("", "-"):
        return elements
    i = 0
    while i < len(sd):
        assert sd[i] == "[", f"not an SD-ELEMENT at {i}: {sd!r}"
        end_id = min(j for j in (sd.find(" ", i), sd.find("]", i)) if j != -1)
        sd_id = sd[i + 1 : end_id]
        params: dict[str, str] = {}
        i = end_id
        while sd[i] == " ":
            eq = sd.index("=", i)
            name = sd[i + 1 : eq]
            assert sd[eq + 1] == '"', sd
            j, value = eq + 2, []
            while sd[j] != '"':
                if sd[j] == "\\" and sd[j + 1] in '"\\]':
                    j += 1
                value.append(sd[j])
                j += 1
            params[name] = "".join(value)
            i = j + 1
        assert sd[i] == "]", sd
        elements[sd_id] = params
        i += 1
    return elements


class Collector:
    """A TCP listener that reads RFC 6587 octet-counted messages into ``messages``."""

    def __init__(self, port: int = 0) -> None:
        """Listen on ``port`` of 127.0.0.1 (0: any free one), reading in threads of its own."""
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.messages: list[bytes] = []
        self.connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Return the ``syslog=`` URL of this collector."""
        return f"tcp://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b" " in buffer:
                length, _, rest = buffer.partition(b" ")
                if len(rest) < int(length):
                    break
                with self._lock:
                    self.messages.append(rest[: int(length)])
                buffer = rest[int(length) :]

    def texts(self) -> list[str]:
        """Return the messages read so far, decoded."""
        with self._lock:
            return [m.decode("utf-8") for m in self.messages]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[str]:
        """Wait until ``count`` messages came (failing at the deadline); return them."""
        deadline = time.monotonic() + timeout
        while len(self.texts()) < count:
            assert time.monotonic() < deadline, f"{len(self.texts())} of {count} messages came"
            time.sleep(0.01)  # polling a socket reader's list; bounded by the deadline
        return self.texts()

    def close(self) -> None:
        """Stop listening and close every connection, as the kernel does for a killed process.

        shutdown() first: a close() alone does not end a socket another thread
        is blocked on (accept, recv), so no FIN would go out.
        """
        for sock in (self.listener, *self.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
