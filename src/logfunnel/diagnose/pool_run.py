"""Running the article's pool program under a watchdog: start, watch for a stall, dump, kill.

``repro`` tells the story; this module runs the programs it tells about.  A
``PoolRun`` is what one run saw: the cycles that began and ended, the records
that reached the log, whether it hung, and the stack dump of the stuck child.
Owns nothing beyond a run: each one starts its own process group and kills
what is left of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Final

from logfunnel._core.rundir import proc_stat
from logfunnel.diagnose import seed_programs as _seed_programs

_ABOUT: Final = re.compile(r"^About to log\.\.\. \(cycle (\d+), pid (\d+)\)$")
_LOGGED: Final = re.compile(r"^\.\.\.logged \(cycle (\d+)\)$")
_CHILD_RECORD: Final = re.compile(r"hello, I did something \(cycle (\d+)\)")
_PARENT_RECORD: Final = "hello, I just did something"
THREADS_LINE: Final = re.compile(r"The (parent|child) process has (\d+) threads")
# A faulthandler frame line: '  File "/.../threading.py", line 272 in __enter__'.
_FRAME: Final = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
THREADS_TIMEOUT: Final = 15.0
# The fixed run must never be judged stuck by a slow machine: it gets a
# longer no-progress bound than the broken run, whose stall is the point.
FIXED_STALL_FACTOR: Final = 4.0
_DUMP_WAIT: Final = 3.0
_KILL_WAIT: Final = 5.0


def start(program: Path, stderr: int | IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``program`` in its own directory and session (so its whole group can be killed)."""
    return subprocess.Popen(
        [sys.executable, "-u", program.name],
        cwd=program.parent,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )


def _environment() -> dict[str, str]:
    """Return the environment for a sandboxed program: no funnel of ours, this logfunnel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    # The fixed program imports logfunnel: make it this very copy, even when it
    # was imported from a source tree rather than installed.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # a pool worker is killed with its buffer unflushed
    return env


def _descendants(pid: int) -> list[int]:
    """Return the pids of every descendant of ``pid``, read from /proc (no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = proc_stat(entry) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the program's whole process group (it runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(_KILL_WAIT)


@dataclasses.dataclass
class PoolRun:
    """What the watchdog saw of one run of the pool program."""

    cycles: int
    completed: int = 0
    finished: bool = False
    returncode: int | None = None
    stalled: bool = False
    timed_out: bool = False
    stuck_cycle: int | None = None
    stuck_pid: int | None = None
    dump: str = ""
    elapsed: float = 0.0
    stderr: str = ""
    child_records: Counter[int] = dataclasses.field(default_factory=Counter)
    parent_records: int = 0

    @property
    def hung(self) -> bool:
        """Return True if the program stopped making progress."""
        return self.stalled


def _request_dump(pids: list[int], stacks: Path, deadline: float) -> str:
    """Send SIGUSR1 to ``pids`` and return what faulthandler wrote to ``stacks``."""
    start = stacks.stat().st_size if stacks.exists() else 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)
    wanted = len(pids)
    text = ""
    # faulthandler writes from the signal handler, at once; every dump ends
    # with the main thread's bottom frame, "<module>" (or the pool's
    # bootstrap in a child), so wait for that many ends, bounded.
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), stacks.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        if text.count(" in <module>") >= wanted:
            break
        time.sleep(0.05)
    return text


def run_pool_program(
    workdir: Path,
    cycles: int,
    *,
    fixed: bool,
    stall: float,
    limit: float,
    text: str | None = None,
) -> PoolRun:
    """Run the article's pool program (or ``text``, a variant of it) in ``workdir``, watched."""
    workdir.mkdir()
    program = workdir / ("fixed.py" if fixed else "article.py")
    if text is None:
        text = _seed_programs.pool_program(cycles, fixed=fixed)
    program.write_text(text, encoding="utf-8")
    stacks = workdir / "stacks.txt"
    run = PoolRun(cycles=cycles)
    started = time.monotonic()
    hard_deadline = started + limit
    with (workdir / "stderr.txt").open("wb") as stderr_file:
        proc = start(program, stderr_file)
    try:
        _watch(proc, run, stall, hard_deadline)
        if run.stalled or run.timed_out:
            if run.stuck_pid is not None and run.stuck_pid in _descendants(proc.pid):
                pids = [run.stuck_pid]
            else:  # stuck somewhere else: ask every process of the program
                pids = [proc.pid, *_descendants(proc.pid)]
            run.dump = _request_dump(pids, stacks, time.monotonic() + _DUMP_WAIT)
        else:
            try:
                run.returncode = proc.wait(max(0.1, hard_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.timed_out = True
    finally:
        kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    run.elapsed = time.monotonic() - started
    run.stderr = (workdir / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    _count_records(workdir / "out.log", run)
    return run


def _watch(proc: subprocess.Popen[bytes], run: PoolRun, stall: float, deadline: float) -> None:
    """Follow the program's markers until it ends, stalls for ``stall`` s, or ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    open_cycle: tuple[int, int] | None = None
    last_progress = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now >= deadline:
                run.timed_out = True
                break
            if now >= last_progress + stall:
                run.stalled = True
                break
            if not selector.select(min(deadline, last_progress + stall) - now):
                continue
            data = os.read(fd, 65536)
            if not data:
                return  # the program closed its output: it ended
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                last_progress = time.monotonic()
                if about := _ABOUT.match(line):
                    open_cycle = (int(about[1]), int(about[2]))
                elif (logged := _LOGGED.match(line)) and open_cycle is not None:
                    run.completed = int(logged[1]) + 1
                    open_cycle = None
                elif line == "done":
                    run.finished = True
    if open_cycle is not None:
        run.stuck_cycle, run.stuck_pid = open_cycle
    else:
        run.stuck_cycle = run.completed


def _count_records(out_log: Path, run: PoolRun) -> None:
    """Count the children's and the parent thread's records in ``out.log``."""
    if not out_log.exists():
        return
    with out_log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(_PARENT_RECORD):
                run.parent_records += 1
            elif match := _CHILD_RECORD.search(line):
                run.child_records[int(match[1])] += 1


# -- reporting ---------------------------------------------------------------------------
