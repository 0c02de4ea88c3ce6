"""`logfunnel run`'s writer process outlives the run process while the program's processes live.

The run process leaves without ``shutdown()`` (``os._exit()`` as a daemon's
first fork does, or SIGKILL); its forked processes go on logging into the
file, and once the last of them exits the writer drains, ends and removes its
directory.  A daemon that closes every descriptor (python-daemon's
``DaemonContext``) closes the lifeline too: the writer then ends, and what
the daemon logs afterwards goes to its fallback, said on its standard error,
as without a lifeline.  gunicorn's own daemon is in ``tests/test_gunicorn.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import child_env
from writer_processes import alive, funnel_entries, wait_until, writer_pids

if TYPE_CHECKING:
    from collections.abc import Iterator

FMT = "%(process)d|%(name)s|%(message)s"

DAEMON = """
    import logging, os, sys, time
    log = logging.getLogger("daemon")
    ready, pidfile = sys.argv[1], sys.argv[2]
    log.warning("before the fork")
    if os.fork():
        os._exit(0)  # as a daemon's first fork: no shutdown() in the run process
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # as gunicorn --daemon does: nothing of the caller's stays open
        os.dup2(devnull, fd)
    with open(pidfile + ".new", "w") as out:
        out.write(str(os.getpid()))
    os.rename(pidfile + ".new", pidfile)
    deadline = time.monotonic() + 60
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.02)  # the test says when; bounded
    for i in range(50):
        log.warning("daemon %d", i)
"""

CLOSER = """
    import logging, os, sys, time
    log = logging.getLogger("closer")
    err, pidfile = sys.argv[1], sys.argv[2]
    funnel_dir = os.path.dirname(os.environ["LOGFUNNEL_ADDRESS"].removeprefix("unix:"))
    log.warning("before the fork")
    if os.fork():
        os._exit(0)
    os.setsid()
    log.warning("in the daemon")
    with open(pidfile + ".new", "w") as out:
        out.write(str(os.getpid()))
    os.rename(pidfile + ".new", pidfile)
    stderr = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(stderr, 2)
    os.closerange(3, 65536)  # python-daemon's DaemonContext: all it did not keep
    deadline = time.monotonic() + 20
    while os.path.exists(funnel_dir) and time.monotonic() < deadline:
        time.sleep(0.02)  # the writer ends once nothing holds the lifeline; bounded
    log.warning("after closing every descriptor")
"""

CHILD = """
    import logging, os, sys, time
    log = logging.getLogger("child")
    ready = sys.argv[1]
    if os.fork() == 0:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.02)  # the test kills the run process first; bounded
        for i in range(50):
            log.warning("orphan %d", i)
        os._exit(0)
    log.warning("parent waits")
    time.sleep(60)  # killed by the test
"""


def _script(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(source))
    return path


def _messages(log: Path) -> list[str]:
    return [line.split("|", 2)[2] for line in log.read_text().splitlines()] if log.exists() else []


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _daemon_pid(pidfile: Path) -> int:
    wait_until(pidfile.exists, 30, "the daemon wrote its pid")
    return int(pidfile.read_text())


@contextlib.contextmanager
def _daemon_run(tmp_path: Path, source: str, arg: Path) -> Iterator[tuple[int, Path, Path]]:
    """Run ``source`` under ``run --file`` as a caller capturing its output; yield its daemon.

    Yields the daemon's pid, the log and the run's ``TMPDIR``; ``source`` gets
    ``arg`` and the pid file.  Pipes: ``run`` returns only once nothing holds
    them (the writer lets go of them too), so its standard error is asserted
    empty.  The daemon and any writer are killed at the end, whatever happened.
    """
    log, tmp, pidfile = tmp_path / "f.log", tmp_path / "tmp", tmp_path / "pid"
    tmp.mkdir()
    program = _script(tmp_path, source)
    command = [sys.executable, "-m", "logfunnel", "run", "--file", str(log), "--fmt", FMT,
               str(program), str(arg), str(pidfile)]  # fmt: skip
    try:
        done = subprocess.run(command, env=child_env(TMPDIR=str(tmp)), capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        yield _daemon_pid(pidfile), log, tmp
    finally:
        with contextlib.suppress(OSError, ValueError):
            _kill({int(pidfile.read_text())})
        _kill(writer_pids(tmp))


def test_run_returns_at_once_and_its_writer_serves_the_daemon_until_it_exits(
    tmp_path: Path,
) -> None:
    """The caller of `run` (a `$(...)`, a pipe) is not held; the daemon's records all land."""
    ready = tmp_path / "ready"
    with _daemon_run(tmp_path, DAEMON, ready) as (daemon, log, tmp):
        assert alive(daemon)
        assert writer_pids(tmp), "the writer serves the daemon"
        ready.touch()
        wait_until(lambda: not alive(daemon), 30, "the daemon exited")
        wait_until(lambda: not writer_pids(tmp), 30, "the writer ended")
        assert funnel_entries(tmp) == []
        messages = _messages(log)
        assert messages == ["before the fork", *(f"daemon {i}" for i in range(50))]


def test_a_daemon_that_closes_every_descriptor_ends_the_writer_and_says_so_itself(
    tmp_path: Path,
) -> None:
    """python-daemon style: the lifeline closes, the writer ends, the rest goes to the fallback."""
    err = tmp_path / "err.txt"
    with _daemon_run(tmp_path, CLOSER, err) as (daemon, log, tmp):
        wait_until(lambda: not alive(daemon), 30, "the daemon exited")
        wait_until(lambda: not writer_pids(tmp), 30, "the writer ended")
        assert funnel_entries(tmp) == []
        assert _messages(log) == ["before the fork", "in the daemon"]
        said = err.read_text()
        assert "cannot reach the log writer" in said  # not lost silently: today's fallback
        assert "after closing every descriptor" in said


def test_a_killed_run_process_leaves_its_forked_children_a_writer(tmp_path: Path) -> None:
    """SIGKILL to the run process: its child's records still land, then nothing is left."""
    log, tmp, ready = tmp_path / "f.log", tmp_path / "tmp", tmp_path / "ready"
    tmp.mkdir()
    program = _script(tmp_path, CHILD)
    command = [sys.executable, "-m", "logfunnel", "run", "--file", str(log), "--fmt", FMT,
               str(program), str(ready)]  # fmt: skip
    proc = subprocess.Popen(command, env=child_env(TMPDIR=str(tmp)), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: "parent waits" in _messages(log), 30, "the program started")
        children = {int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                    .read_text().split()}  # fmt: skip
        proc.kill()
        proc.wait(timeout=30)
        ready.touch()
        wait_until(lambda: not any(alive(pid) for pid in children), 30, "the child exited")
        wait_until(lambda: not writer_pids(tmp), 30, "the writer ended")
        assert funnel_entries(tmp) == []
        assert _messages(log) == ["parent waits", *(f"orphan {i}" for i in range(50))]
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        _kill(writer_pids(tmp))
