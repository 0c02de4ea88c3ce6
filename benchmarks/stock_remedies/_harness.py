"""Run one experiment program in a sandbox, bounded, and never leave a process behind.

Every program runs in a fresh temporary directory (its working directory, where
its out.log lands), in a session of its own (``start_new_session=True``), so
that on timeout -- a hang is an expected outcome here -- ``os.killpg`` ends it
together with every child it forked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@dataclasses.dataclass
class Run:
    returncode: int | None  # None: killed by the watchdog
    stdout: str
    stderr: str
    elapsed: float
    workdir: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def lines(self, pattern: str = "") -> list[str]:
        """Lines of every out.log* file (rotation included) containing ``pattern``."""
        found: list[str] = []
        for path in sorted(self.workdir.glob("out.log*")):
            with path.open(encoding="utf-8", errors="replace") as f:
                found.extend(line for line in f if pattern in line)
        return found


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Default SIGTERM would skip run_program's finally: exit through it instead,
    # so the program under test is killed with us.
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_program(
    text: str, timeout: float, *, name: str = "program.py", args: list[str] | None = None
) -> Run:
    """Run ``text`` with this interpreter in a new temporary directory, bounded by ``timeout``."""
    workdir = Path(tempfile.mkdtemp(prefix="stock-remedies-"))
    (workdir / name).write_text(text, encoding="utf-8")
    started = time.monotonic()
    # Files, not pipes: children the program leaves behind (stuck at their own
    # exit, or a listener process) would hold a pipe open after it ended.
    with (workdir / "stdout.txt").open("wb") as out, (workdir / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-u", name, *(args or [])],
            cwd=workdir,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        returncode: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        # The program's own children (pool workers, a listener process) are in
        # its process group even when the program itself has exited.
        kill_group(proc.pid)
        proc.wait()
    return Run(
        returncode,
        (workdir / "stdout.txt").read_text(encoding="utf-8", errors="replace"),
        (workdir / "stderr.txt").read_text(encoding="utf-8", errors="replace"),
        time.monotonic() - started,
        workdir,
    )


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def header(title: str) -> None:
    """Print the experiment's title, the command that ran it, and the machine."""
    script = f"benchmarks/stock_remedies/{Path(sys.argv[0]).name}"
    print(f"# {title}")
    print(f"# command: {' '.join(['python', script, *sys.argv[1:]])}")
    print(
        f"# Python {platform.python_version()} ({sys.executable}), {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
