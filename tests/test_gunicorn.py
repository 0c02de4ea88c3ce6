"""gunicorn: request records of every worker land once, under `logfunnel run`, with --daemon too.

A real gunicorn (a test extra) serves on a Unix socket; the test speaks HTTP to
it over that socket, so no TCP port is needed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env
from writer_processes import alive, funnel_entries, wait_until, writer_pids

pytest.importorskip("gunicorn", reason="gunicorn is a test extra: pip install -e '.[test]'")

REQUESTS = 40
FMT = "%(process)d|%(name)s|%(message)s"
APP = """
import logging, os
log = logging.getLogger("app.request")
logging.getLogger("app.boot").warning("worker %d loaded the app", os.getpid())  # in each worker
def app(environ, start_response):
    log.warning("request %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [str(os.getpid()).encode()]
"""
CONF = """
import logfunnel

def when_ready(server):
    # In the master once it is ready (after --daemon's forks), before it forks a
    # worker: every worker, and every one it replaces, inherits the funnel.
    logfunnel.install(file={log!r}, level="INFO", fmt={fmt!r})
"""


def _get(path: Path, target: str, deadline: float) -> int:
    """GET ``target`` over the Unix socket at ``path``; return the worker's pid."""
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())  # no chunking
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
            return int(reply.rsplit(b"\r\n\r\n", 1)[1])
        except (FileNotFoundError, ConnectionRefusedError):
            assert time.monotonic() < deadline, "gunicorn did not start listening"
            time.sleep(0.05)  # polling for the socket to appear; bounded by the deadline


def _requests(log: Path) -> collections.Counter[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return collections.Counter(line.rsplit("|", 1)[1] for line in lines if "|app.request|" in line)


def _wait_gone(pid: int, deadline: float) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"gunicorn master {pid} did not exit"
        time.sleep(0.05)  # polling a process that is not our child; bounded by the deadline


def _funnel_dirs(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("logfunnel-"))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def _check(log: Path, pids: set[int]) -> None:
    requests = _requests(log)
    assert set(requests) == {f"request /r{i}" for i in range(REQUESTS)}
    assert all(n == 1 for n in requests.values()), requests.most_common(3)
    lines = log.read_text().splitlines()
    served = {int(line.split("|", 1)[0]) for line in lines if "|app.request|" in line}
    assert served == pids  # each record names the worker that answered
    booted = {line.split("|", 1)[0] for line in lines if "|app.boot|" in line}
    assert len(booted) == 2, f"both workers' records: {booted}"


def test_logfunnel_run_gunicorn_delivers_every_workers_records(app_dir: Path) -> None:
    """`logfunnel run --file F -m gunicorn -w 2`: every request record once, both workers."""
    log, sock = app_dir / "all.log", app_dir / "g.sock"
    command = [sys.executable, "-m", "logfunnel", "run", "--file", str(log), "--fmt", FMT,
               "-m", "gunicorn", "-w", "2", "-b", f"unix:{sock}", "app:app"]  # fmt: skip
    env = child_env(TMPDIR=str(app_dir / "tmp"))
    proc = subprocess.Popen(command, cwd=app_dir, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        pids = {_get(sock, f"/r{i}", deadline) for i in range(REQUESTS)}
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=60)[1]
    _check(log, pids)
    assert "cannot reach the log writer" not in stderr
    assert _funnel_dirs(app_dir / "tmp") == []


def test_gunicorn_daemon_with_when_ready_is_quiet_and_clean(app_dir: Path) -> None:
    """--daemon with install() in when_ready: every record once, nothing said, nothing left."""
    log, sock, pidfile = app_dir / "all.log", app_dir / "g.sock", app_dir / "g.pid"
    (app_dir / "conf.py").write_text(CONF.format(log=str(log), fmt=FMT))
    command = [sys.executable, "-m", "gunicorn", "-c", "conf.py", "--daemon", "-w", "2",
               "-b", f"unix:{sock}", "--pid", str(pidfile),
               "--error-logfile", str(app_dir / "error.log"), "app:app"]  # fmt: skip
    env = child_env(TMPDIR=str(app_dir / "tmp"))
    subprocess.run(command, cwd=app_dir, env=env, check=True, timeout=60)
    deadline = time.monotonic() + 60
    pids = {_get(sock, f"/r{i}", deadline) for i in range(REQUESTS)}
    master = int(pidfile.read_text())
    os.kill(master, signal.SIGTERM)
    _wait_gone(master, time.monotonic() + 60)
    _check(log, pids)
    assert "cannot reach the log writer" not in (app_dir / "error.log").read_text()
    assert _funnel_dirs(app_dir / "tmp") == []


def _booted(log: Path) -> set[int]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {int(line.split("|", 1)[0]) for line in lines if "|app.boot|" in line}


def test_logfunnel_run_gunicorn_daemon_delivers_everything_then_leaves_nothing(
    app_dir: Path,
) -> None:
    """`run --file F -m gunicorn --daemon`: back to the shell, every record once, then clean.

    The process that started the writer leaves at once (gunicorn's daemonize:
    fork, ``os._exit``); the writer serves the daemon's master and workers, a
    replaced worker included, and once the daemon is stopped it drains, ends and
    removes its directory.  ``--enable-stdio-inheritance`` keeps the daemon's
    standard error in a file: a record sent to the fallback would show there.
    """
    log, sock, pidfile = app_dir / "all.log", app_dir / "g.sock", app_dir / "g.pid"
    tmp = app_dir / "tmp"
    try:
        _daemon_under_run(app_dir, log, sock, pidfile)
    finally:  # a failed test leaves no daemon behind
        _kill_leftovers(pidfile, tmp)


def _daemon_under_run(app_dir: Path, log: Path, sock: Path, pidfile: Path) -> None:
    tmp, err = app_dir / "tmp", app_dir / "stderr.txt"
    command = [sys.executable, "-m", "logfunnel", "run", "--file", str(log), "--level", "INFO",
               "--fmt", FMT, "-m", "gunicorn", "--daemon", "--enable-stdio-inheritance",
               "-w", "2", "-b", f"unix:{sock}", "--pid", str(pidfile), "app:app"]  # fmt: skip
    with err.open("w") as stderr:
        done = subprocess.run(command, cwd=app_dir, env=child_env(TMPDIR=str(tmp)),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                              timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, err.read_text()
    deadline = time.monotonic() + 60
    targets = [f"/r{i}" for i in range(REQUESTS // 2)]
    pids = {_get(sock, target, deadline) for target in targets}
    wait_until(lambda: pidfile.exists() and len(_booted(log)) == 2, 60, "both workers booted")
    master = int(pidfile.read_text())
    first = _booted(log)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)  # gunicorn replaces it
    wait_until(lambda: len(_booted(log)) == 3, 60, "the replacement worker's record")
    (replacement,) = _booted(log) - first
    while replacement not in pids:  # until the replacement answered a request too
        assert time.monotonic() < deadline, f"worker {replacement} never answered"
        targets.append(f"/r{len(targets)}")
        pids.add(_get(sock, targets[-1], deadline))
    writers = writer_pids(tmp)
    assert writers, "the writer process outlived `logfunnel run`, serving the daemon"
    os.kill(master, signal.SIGTERM)
    wait_until(lambda: not alive(master), 60, f"gunicorn master {master} gone")
    wait_until(lambda: not writer_pids(tmp), 30, f"the writer processes {writers} gone")
    assert funnel_entries(tmp) == []  # its directory, and F's entry in the file registry
    lines = log.read_text().splitlines()
    requests = _requests(log)
    assert set(requests) == {f"request {t}" for t in targets}
    assert all(n == 1 for n in requests.values()), requests.most_common(3)
    served = {int(line.split("|", 1)[0]) for line in lines if "|app.request|" in line}
    assert served == pids  # each record names the worker that answered
    for pid in (*first, replacement):  # gunicorn's own records, the workers' and the master's
        assert f"{pid}|gunicorn.error|Booting worker with pid: {pid}" in lines
    for pid in (*first - {victim}, replacement):
        assert f"{pid}|gunicorn.error|Worker exiting (pid: {pid})" in lines
    masters = [line for line in lines if line.startswith(f"{master}|gunicorn.error|")]
    assert f"{master}|gunicorn.error|Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?" in masters
    assert masters[-1] == f"{master}|gunicorn.error|Shutting down: Master"  # drained at the end
    said = err.read_text()
    assert "cannot reach the log writer" not in said
    assert "request /r" not in said  # no record went to the fallback


def _kill_leftovers(pidfile: Path, tmp: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.killpg(os.getpgid(int(pidfile.read_text())), signal.SIGKILL)  # master and workers
    for pid in writer_pids(tmp):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
