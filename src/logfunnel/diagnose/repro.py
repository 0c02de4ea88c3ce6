"""``logfunnel repro``: the seed article's hang, reproduced under a watchdog, then fixed.

Three steps, each a real program run in a sandbox (its own temporary directory
as working directory, its own session so the whole process group can be
killed, no ``LOGFUNNEL_*`` variables inherited):

1. the article's thread-count demo: the parent has 2 threads, the forked
   child 1;
2. the article's ``multiprocessing.Pool`` program (root level raised to INFO,
   fork start method asked for by name).  A watchdog reads the markers the
   children print; when a child printed ``About to log...`` and its
   ``...logged`` does not follow within a few seconds, the program is stuck.
   The watchdog then sends that child SIGUSR1: the program registered
   ``faulthandler`` for it at start, and a forked child inherits both the
   signal handler and the file, so the child writes its own Python stack
   without any external tool.  The frame blocked acquiring the queue's lock is
   pointed out, and the process group is killed;
3. the same program with ``import logfunnel`` and ``logfunnel.install()``,
   for ``--cycles`` pool cycles: it must finish, and ``out.log`` must hold
   every child's record exactly once.  Only this step decides the exit code.

The program texts are in ``_seed_programs``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

from logfunnel.diagnose import seed_programs as _seed_programs
from logfunnel.diagnose.stacks import lock_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

from logfunnel.diagnose import pool_run as _pool_run
from logfunnel.diagnose.pool_run import PoolRun


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="logfunnel repro",
        description=(
            "Reproduce the multiprocessing.Pool + QueueHandler hang of the seed article, "
            "show the stuck child's stack, then run the same program with "
            "logfunnel.install() and count every child's record in out.log."
        ),
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=100,
        help="pool cycles for each program run (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="bound on the whole command, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=3.0,
        help="seconds without progress after which the article's program counts as stuck "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the sandbox directory (programs, out.log, stacks.txt) and print its path",
    )
    args = parser.parse_args(list(argv))
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if args.timeout <= 0 or args.stall <= 0:
        parser.error("--timeout and --stall must be positive")
    return args


# -- running a program under a watchdog ---------------------------------------------------


def _heading(title: str) -> None:
    print()
    print(f"== {title} ==")


def _say(text: str, indent: str = "") -> None:
    for paragraph in text.split("\n"):
        print(textwrap.fill(paragraph, 96, initial_indent=indent, subsequent_indent=indent))


def _show_dump(dump: str) -> tuple[int, str] | None:
    """Print a faulthandler dump, marking the lock-acquisition frame; return that frame."""
    found = lock_frame(dump)
    for index, line in enumerate(dump.rstrip().splitlines()):
        mark = "   <-- blocked here, acquiring a lock" if found and index == found[0] else ""
        print(f"    {line.rstrip()}{mark}")
    return found


def _show_threads(workdir: Path, deadline: float) -> bool:
    _heading("1. fork() copies memory, but only the thread that called it")
    program = workdir / "threads.py"
    program.write_text(_seed_programs.THREADS_PROGRAM, encoding="utf-8")
    _say(
        "The article's demo, run for real: start a thread that sleeps, call os.fork(), and "
        "count threads on each side."
    )
    timeout = max(1.0, min(_pool_run.THREADS_TIMEOUT, deadline - time.monotonic()))
    proc = _pool_run.start(program, subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _pool_run.kill_group(proc)
        out, err = proc.communicate()
    finally:
        _pool_run.kill_group(proc)
    counts = {}
    # Parent and child print at the same moment into one unbuffered pipe, and
    # print() writes the text and its newline separately: the two sentences
    # can interleave on a line, so find them anywhere in the output.
    for match in _pool_run.THREADS_LINE.finditer(out.decode("utf-8", "replace")):
        counts[match[1]] = int(match[2])
        print(f"    {match[0]}")
    for raw in err.decode("utf-8", "replace").splitlines():
        if raw.strip():  # 3.12+ warns here that fork() in a threaded process may deadlock
            print(f"    (stderr) {raw.strip()}")
    if "parent" not in counts or "child" not in counts:
        _say(f"The demo did not print both counts (exit code {proc.returncode}).")
        return False
    print(f"thread counts: parent {counts['parent']}, child {counts['child']}")
    _say(
        "The child is a copy of the parent's memory with one thread in it: every other "
        "thread is gone, mid-instruction. Whatever lock such a thread held at that instant "
        "is held in the child too, and nothing there will ever release it."
    )
    return True


def _show_article_run(run: PoolRun, stall: float) -> None:
    _heading("2. The article's program: Pool + QueueHandler + a logging thread")
    _say(
        "setup_logging() puts a QueueHandler over a queue.Queue on the root logger, a "
        "QueueListener thread writes the queue to out.log, and a parent thread logs in a loop; "
        "the main thread runs `with Pool() as pool: pool.apply(runs_in_subprocess)` in a loop."
    )
    _say(
        "Note: as printed in the article, the root logger stays at WARNING, so every "
        "logging.info() is filtered out: nothing is logged, and nothing hangs. Run here with "
        "the root level at INFO. Other changes to the article's text:"
    )
    for change in _seed_programs.CHANGES[1:]:
        _say(f"- {change}", "    ")
    print()
    print(
        f"ran up to {run.cycles} pool cycles (fork start method), watchdog: no progress for "
        f"{stall:g} s = stuck"
    )
    if run.hung:
        who = f"child pid {run.stuck_pid}" if run.stuck_pid is not None else "the program"
        print(
            f"HANG DETECTED at pool cycle {run.stuck_cycle} (after {run.completed} complete "
            f"cycles): {who} printed 'About to log...' and no '...logged' followed "
            f"within {stall:g} s."
        )
        if run.dump:
            print(f"Python stack of {who}, written by faulthandler on SIGUSR1:")
            found = _show_dump(run.dump)
            if found is not None:
                print(f"lock-acquisition frame: {found[1]}")
        else:
            print("(the stuck process wrote no stack within the bound)")
        _say(
            "Why: os.fork() copied the parent's memory, including the queue.Queue and its "
            "mutex, but only the thread that called fork(). At that instant the parent's "
            "logging thread was inside Queue.put(), holding the queue's mutex. In the child "
            "that thread does not exist, so the mutex stays locked forever, and the child's "
            "first logging.info() -> QueueHandler.emit() -> Queue.put() -> "
            "Condition.__enter__() waits for it forever. pool.apply() waits for the child, "
            "so the whole batch job stops. logging re-creates its own locks in a forked "
            "child (since Python 3.8), but not the queue's."
        )
    elif run.finished:
        print(
            f"The hang did not reproduce within {run.cycles} cycles on this run "
            f"({run.elapsed:.1f} s). It depends on timing; run again, or with more --cycles."
        )
    else:
        print(
            f"The program neither hung nor finished within the bound ({run.elapsed:.1f} s, "
            f"{run.completed} cycles complete); stopped it."
        )
    children = sum(run.child_records.values())
    print(
        f"child records in out.log: {children} (of {run.completed} children that returned "
        f"from logging.info); parent-thread records: {run.parent_records:,}"
    )
    if run.completed and not children:
        _say(
            "Even the children that did not hang lost their record: each logged into its own "
            "copy of the queue, which no listener thread reads."
        )


def _show_fixed_run(run: PoolRun) -> bool:
    _heading("3. The same program with logfunnel: `import logfunnel` + `logfunnel.install()`")
    _say(
        "One line after setup_logging(): funnel = logfunnel.install(). At the end the "
        "program stops its logging thread, calls funnel.flush() (every child's record has "
        "reached the parent's QueueHandler) and listener.stop() (the queue is drained into "
        "out.log); then out.log is counted."
    )
    missing = [c for c in range(run.cycles) if run.child_records[c] == 0]
    twice = sorted(c for c, n in run.child_records.items() if n > 1)
    unexpected = sorted(c for c in run.child_records if not 0 <= c < run.cycles)
    print(
        f"ran {run.completed} of {run.cycles} pool cycles in {run.elapsed:.1f} s; "
        f"exit code {run.returncode}"
    )
    print(
        f"child records in out.log: {sum(run.child_records.values())} for {run.cycles} "
        f"cycles; missing {len(missing)}, more than once {len(twice)}"
        + (f" (missing cycles {missing[:10]})" if missing else "")
        + (f" (repeated cycles {twice[:10]})" if twice else "")
    )
    print(f"parent-thread records in out.log: {run.parent_records:,}")
    ok = (
        run.finished
        and run.returncode == 0
        and run.completed == run.cycles
        and not missing
        and not twice
        and not unexpected
    )
    if ok:
        print(f"every child's record is in out.log exactly once: {run.cycles} of {run.cycles}")
        _say(
            "What changed: in each forked child logfunnel's at-fork hook set the inherited "
            "QueueHandler aside (its queue's mutex may be held by a thread that is not there) "
            "and put a FunnelHandler in its place; the child opened its own connection to the "
            "writer thread in the parent, which handed the record to the parent's own "
            "QueueHandler, where the listener thread writes it to out.log."
        )
        return True
    if run.hung or run.timed_out:
        print("FAILED: the fixed program stopped making progress.")
        if run.dump:
            print("Python stacks, written by faulthandler on SIGUSR1:")
            _show_dump(run.dump)
    else:
        print("FAILED: the fixed program did not finish cleanly, or out.log is not exact.")
    if run.stderr.strip():
        print("its standard error (last lines):")
        for line in run.stderr.strip().splitlines()[-15:]:
            print(f"    {line}")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``logfunnel repro``; return 0 if the fixed program passed, 1 if not."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    deadline = started + args.timeout
    sandbox = Path(tempfile.mkdtemp(prefix="logfunnel-repro-"))
    print("logfunnel repro: the multiprocessing.Pool logging hang of the seed article")
    print(
        f"Python {platform.python_version()} ({sys.executable}), {platform.system()}, "
        f"{os.cpu_count()} CPUs; sandbox {sandbox}"
    )
    try:
        _show_threads(sandbox, deadline)
        # The broken run gets at most a third of the budget: its hang is
        # usually seen within a few cycles, and the fixed run needs the rest.
        article_limit = max(args.stall + 2.0, (deadline - time.monotonic()) / 3)
        article = _pool_run.run_pool_program(
            sandbox / "article", args.cycles, fixed=False, stall=args.stall, limit=article_limit
        )
        _show_article_run(article, args.stall)
        fixed_limit = max(1.0, deadline - time.monotonic() - 1.0)
        fixed = _pool_run.run_pool_program(
            sandbox / "fixed",
            args.cycles,
            fixed=True,
            stall=min(fixed_limit, args.stall * _pool_run.FIXED_STALL_FACTOR),
            limit=fixed_limit,
        )
        ok = _show_fixed_run(fixed)
    finally:
        if args.keep:
            print(f"\nsandbox kept: {sandbox}")
        else:
            shutil.rmtree(sandbox, ignore_errors=True)
    _heading("Result")
    hang = "reproduced" if article.hung else "not reproduced on this run"
    print(f"article's program: hang {hang}")
    print(f"with logfunnel.install(): {'PASS' if ok else 'FAIL'}")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
