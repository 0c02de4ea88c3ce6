"""`logfunnel serve` and install(connect=...): processes send to a collector that owns the sinks."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import child_env, run_python

FMT = "%(process)d|%(name)s|%(message)s"
TOKEN = "serve-test-token-0123456789"

CLIENT = r"""
import logging, multiprocessing, os, sys
import logfunnel

def child(tag):
    for i in range(50):
        logging.getLogger("client.child").warning("%s %d", tag, i)

if __name__ == "__main__":
    funnel = logfunnel.install(connect=sys.argv[1], token=sys.argv[2], fallback=sys.argv[3])
    for i in range(50):
        logging.getLogger("client.main").warning("main %d", i)
    for method in ("spawn", "fork"):
        p = multiprocessing.get_context(method).Process(target=child, args=(method,))
        p.start(); p.join()
    reachable = sys.argv[4] == "reachable"
    assert funnel.flush(timeout=30 if reachable else 1) is reachable, "the barrier at the collector"
    assert funnel.shutdown() is reachable
    assert "LOGFUNNEL_ADDRESS" not in os.environ
"""

PLAIN = r"""
import logging
for i in range(30):
    logging.getLogger("plain").warning("plain %d", i)  # no install(): LOGFUNNEL_CONNECT
"""


class Collector:
    """A `logfunnel serve` process on loopback, writing to one file."""

    def __init__(self, tmp: Path, extra: tuple[str, ...] = ()) -> None:
        """Start the collector and read the address it prints."""
        self.log = tmp / "collected.log"
        token_file = tmp / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        command = [sys.executable, "-m", "logfunnel", "serve", "--listen", "tcp:127.0.0.1:0",
                   "--token-file", str(token_file), "--file", str(self.log), "--fmt", FMT,
                   *extra]  # fmt: skip
        self.proc = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the process prints it or exits
        assert "listening on tcp:" in line, (line, self.proc.stderr.read() if self.proc.stderr else "")
        self.address = line.split("listening on ", 1)[1].strip()
        self.url = "tcp://" + self.address.removeprefix("tcp:")

    def stop(self) -> str:
        """Stop it with SIGTERM (it drains); return its stderr."""
        self.proc.terminate()
        stderr = self.proc.communicate(timeout=60)[1]
        assert self.proc.returncode == 0, stderr
        return stderr

    def messages(self, logger: str) -> collections.Counter[str]:
        """Return the messages of ``logger`` in the collected file, counted."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return collections.Counter(x.rsplit("|", 1)[1] for x in lines if f"|{logger}|" in x)


def _run_client(tmp: Path, url: str, token: str, outcome: str) -> Path:
    """Run CLIENT against ``url``; return its fallback file."""
    script = tmp / "client.py"
    script.write_text(CLIENT)
    fallback = tmp / "fallback.log"
    run_python(str(script), url, token, str(fallback), outcome, timeout=120)
    return fallback


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    serve = Collector(tmp_path)
    yield serve
    if serve.proc.poll() is None:
        serve.stop()


def test_a_connected_program_and_its_children_land_once_at_the_collector(
    collector: Collector, tmp_path: Path
) -> None:
    """install(connect=) in a program: its records and its spawn and fork children's, once each."""
    fallback = _run_client(tmp_path, collector.url, TOKEN, "reachable")
    collector.stop()
    main, children = collector.messages("client.main"), collector.messages("client.child")
    assert main == collections.Counter(f"main {i}" for i in range(50))
    assert children == collections.Counter(f"{m} {i}" for m in ("spawn", "fork") for i in range(50))
    assert not fallback.exists() or fallback.read_text() == ""


def test_logfunnel_connect_in_the_environment_needs_no_install(
    collector: Collector, tmp_path: Path
) -> None:
    """A program that never calls install() sends every record with LOGFUNNEL_CONNECT set."""
    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    env = child_env(LOGFUNNEL_CONNECT=collector.url, LOGFUNNEL_TOKEN=TOKEN)
    run_python(str(script), env=env, timeout=60)
    collector.stop()
    assert collector.messages("plain") == collections.Counter(f"plain {i}" for i in range(30))


def test_a_wrong_token_is_refused_and_the_records_go_to_the_fallback(
    collector: Collector, tmp_path: Path
) -> None:
    """A client with the wrong token: nothing reaches the collector, every record is kept."""
    fallback = _run_client(tmp_path, collector.url, "wrong-token-0123456789", "refused")
    collector.stop()
    assert collector.messages("client.main") == collections.Counter()
    kept = fallback.read_text()
    assert all(f"main {i}" in kept for i in range(50))


def test_a_collector_down_at_start_loses_nothing_silently(tmp_path: Path) -> None:
    """No collector listening: install(connect=) still works, every record goes to the fallback."""
    fallback = _run_client(tmp_path, "tcp://127.0.0.1:1", TOKEN, "down")
    kept = fallback.read_text()
    assert all(f"main {i}" in kept for i in range(50))
    assert all(f"{m} {i}" in kept for m in ("spawn", "fork") for i in range(50))
    assert "cannot reach the log writer" in kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connect": "http://x:1", "token": TOKEN}, "give tcp://HOST:PORT"),
        ({"connect": "tcp://x:1", "token": TOKEN, "file": "x.log"}, "leave out file="),
        ({"connect": "tcp://x:1"}, "needs the collector's token"),
    ],
)
def test_wrong_connect_options_fail_at_install(
    kwargs: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect= checks its address, its token, and that no sink is asked for here."""
    import logfunnel  # noqa: PLC0415

    monkeypatch.delenv("LOGFUNNEL_TOKEN", raising=False)
    with pytest.raises(ValueError, match=message):
        logfunnel.install(**kwargs)  # type: ignore[arg-type]
    assert logfunnel.current() is None


def test_serve_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    """A token file readable by group or others is refused, saying how to fix it."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    proc = run_python("-m", "logfunnel", "serve", "--listen", "tcp:127.0.0.1:0",
                      "--token-file", str(token_file), check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "chmod 600" in proc.stderr
    assert os.stat(token_file).st_mode & 0o777 == 0o644


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair: 10.77.0.1 (collector), 10.77.0.2 (client)."""
    tag = f"lf{os.getpid() % 100000}"
    collector, client = f"{tag}c", f"{tag}p"
    made = _ip("netns", "add", collector)
    if made.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
    try:
        _ip("netns", "add", client)
        steps = [
            ("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b"),
            ("link", "set", f"{tag}a", "netns", collector),
            ("link", "set", f"{tag}b", "netns", client),
            ("-n", collector, "addr", "add", "10.77.0.1/24", "dev", f"{tag}a"),
            ("-n", client, "addr", "add", "10.77.0.2/24", "dev", f"{tag}b"),
            ("-n", collector, "link", "set", f"{tag}a", "up"),
            ("-n", client, "link", "set", f"{tag}b", "up"),
            ("-n", collector, "link", "set", "lo", "up"),
            ("-n", client, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the namespaces: ip {' '.join(step)}: {done.stderr}")
        yield collector, client
    finally:
        _ip("netns", "del", client)
        _ip("netns", "del", collector)


def test_a_client_in_another_network_namespace_reaches_the_collector(
    two_hosts: tuple[str, str], tmp_path: Path
) -> None:
    """Two hosts on one machine (netns + veth): every record of the client and its children lands."""
    collector_ns, client_ns = two_hosts
    log, token_file = tmp_path / "collected.log", tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    serve = subprocess.Popen(
        ["ip", "netns", "exec", collector_ns, sys.executable, "-m", "logfunnel", "serve",
         "--listen", "tcp:10.77.0.1:0", "--token-file", str(token_file), "--file", str(log),
         "--fmt", FMT],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        assert "listening on tcp:10.77.0.1:" in line, line
        url = "tcp://" + line.split("listening on tcp:", 1)[1].strip()
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        fallback = tmp_path / "fallback.log"
        client = subprocess.run(
            ["ip", "netns", "exec", client_ns, sys.executable, str(script), url, TOKEN,
             str(fallback), "reachable"],
            env=child_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
    finally:
        serve.terminate()
        serve.communicate(timeout=60)
    lines = log.read_text().splitlines()
    main = collections.Counter(x.rsplit("|", 1)[1] for x in lines if "|client.main|" in x)
    children = collections.Counter(x.rsplit("|", 1)[1] for x in lines if "|client.child|" in x)
    assert main == collections.Counter(f"main {i}" for i in range(50))
    assert children == collections.Counter(f"{m} {i}" for m in ("spawn", "fork") for i in range(50))
