"""Hang diagnosis: `logfunnel stacks` and `logfunnel run --hang-timeout` on a really stuck child."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import child_env, run_python

# A fork child inherits a lock its parent holds and blocks on it forever: the
# seed's failure in its plainest form.  The program waits (bounded) for the
# test to say it is done, so the stuck child is there to be asked.
STUCK_PROGRAM = """
import logging, multiprocessing, os, sys, threading
lock = threading.Lock()

def work(i):
    logging.getLogger("w").warning("worker %d about to block", i)
    lock.acquire()

if __name__ == "__main__":
    lock.acquire()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.map_async(work, [1])
        done = sys.argv[1]
        deadline = 60
        import time
        start = time.monotonic()
        while not os.path.exists(done) and time.monotonic() - start < deadline:
            time.sleep(0.05)
"""


def _wait_for(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text()):
            return content
        time.sleep(0.05)
    msg = f"{text!r} did not appear in {path} within {timeout} s"
    raise AssertionError(msg)


def test_stacks_command_points_at_the_lock_wait(tmp_path: Path) -> None:
    """`logfunnel stacks PID` prints every attached process, marking the child stuck on a lock."""
    program, log, done = tmp_path / "stuck.py", tmp_path / "out.log", tmp_path / "done"
    program.write_text(STUCK_PROGRAM)
    cmd = [
        sys.executable,
        "-m",
        "logfunnel",
        "run",
        "--file",
        str(log),
        "--",
        str(program),
        str(done),
    ]
    with subprocess.Popen(
        cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            _wait_for(log, "about to block", 30)
            result = run_python("-m", "logfunnel", "stacks", str(proc.pid), timeout=30)
        finally:
            done.touch()
            proc.communicate(timeout=60)
    out = result.stdout
    assert out.count("=== process ") >= 2, out
    assert "blocked acquiring a lock (at 'lock.acquire()')" in out
    assert 'stuck.py", line 7 in work' in out
    assert "thread(s) waiting on a lock" in out.splitlines()[-1]


def test_hang_timeout_logs_the_stacks_once(tmp_path: Path) -> None:
    """`run --hang-timeout` writes one stack dump into the log when records stop coming."""
    program, log, done = tmp_path / "stuck.py", tmp_path / "out.log", tmp_path / "done"
    program.write_text(STUCK_PROGRAM)
    cmd = [
        sys.executable, "-m", "logfunnel", "run", "--file", str(log), "--hang-timeout", "1",
        "--", str(program), str(done),
    ]  # fmt: skip
    with subprocess.Popen(
        cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            content = _wait_for(log, "thread(s) waiting on a lock", 30)
        finally:
            done.touch()
            proc.communicate(timeout=60)
    assert content.count("nothing was logged for") == 1
    assert "blocked acquiring a lock (at 'lock.acquire()')" in content


def test_stacks_without_a_funnel_says_so() -> None:
    """`logfunnel stacks PID` for a process attached to no funnel exits 2 saying so."""
    proc = run_python("-m", "logfunnel", "stacks", str(2**22 + 1), check=False)
    assert proc.returncode == 2
    assert "no funnel found" in proc.stderr


def test_a_directory_left_by_a_killed_installer_is_not_a_funnel(tmp_path: Path) -> None:
    """A stale funnel directory with a stack file of a live pid (pid reuse) is not reported."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from logfunnel.diagnose.stacks import find_funnels  # noqa: PLC0415

    stale = Path(tempfile.mkdtemp(prefix="logfunnel-", dir="/tmp"))
    try:
        (stale / "stacks").mkdir()
        (stale / "stacks" / f"{os.getpid()}.txt").touch()  # no writer.sock listens there
        assert not any(str(stale) in address for address in find_funnels(os.getpid()))
    finally:
        (stale / "stacks" / f"{os.getpid()}.txt").unlink()
        (stale / "stacks").rmdir()
        stale.rmdir()
