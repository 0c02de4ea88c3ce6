"""``_hosts``: waiting for a writer process to end, woken by its exit.

Real child processes: one that waits on its stdin until the test closes it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from logfunnel import _hosts


def test_waiting_for_an_exit_times_out_then_returns_once_the_process_left() -> None:
    """A live process: TimeoutExpired after the timeout; once it exits: its status, reaped."""
    child = [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(7)"]
    with subprocess.Popen(child, stdin=subprocess.PIPE) as process:
        with pytest.raises(subprocess.TimeoutExpired):
            _hosts._wait_exit(process, 0.05)
        assert process.returncode is None
        assert process.stdin is not None
        process.stdin.close()
        _hosts._wait_exit(process, 60)
        assert process.returncode == 7


def test_waiting_for_a_process_someone_else_reaped_still_returns() -> None:
    """A pid already reaped (a program's own waitpid(-1)): no pidfd, Popen's wait answers."""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as process:
        os.waitpid(process.pid, 0)  # as a SIGCHLD handler of the program might
        _hosts._wait_exit(process, 60)
        assert process.returncode is not None
