"""``logfunnel demo``: the seed's scenario under every start method, checked line by line.

A parent thread logs in a loop while pools are created again and again (the
shape of the program that used to hang), under fork, spawn and forkserver;
every worker logs numbered records.  All of it goes through one funnel into a
rotating file.  Afterwards every rotated file is read back and each record is
accounted for: lost, duplicated and torn lines are counted, not assumed.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import logging
import multiprocessing
import multiprocessing.pool
import os
import re
import threading
import time
from dataclasses import dataclass, field

import logfunnel
from logfunnel._core.dispatch import Stats

FORMAT = "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(name)s: %(message)s"
METHODS = ("fork", "spawn", "forkserver")
_LINE = re.compile(
    r"^\S+ \S+ (?P<proc>\S+)\[(?P<pid>\d+)\] INFO (?P<name>\S+): "
    r"(?P<kind>task|parent) (?P<body>.*)$"
)
_TASK = re.compile(
    r"^method=(?P<method>\w+) cycle=(?P<cycle>\d+) task=(?P<task>\d+) seq=(?P<seq>\d+)$"
)


def demo_task(method: str, cycle: int, task: int, records: int) -> int:
    """Log ``records`` numbered records from a pool worker; return the worker's pid."""
    log = logging.getLogger(f"demo.{method}")
    for seq in range(records):
        log.info("task method=%s cycle=%d task=%d seq=%d", method, cycle, task, seq)
    return os.getpid()


def _star(args: tuple[str, int, int, int]) -> int:
    return demo_task(*args)


@dataclass
class MethodResult:
    """What one start method's pools produced."""

    expected: int = 0
    written: int = 0
    lost: int = 0
    duplicated: int = 0
    hangs: int = 0
    pids: set[int] = field(default_factory=set)
    seconds: float = 0.0


def run_demo(directory: str, cycles: int, workers: int, tasks: int, records: int) -> int:
    """Run the demo into ``directory``; print the summary; return 0 if nothing was lost."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "demo.log")
    for old in glob.glob(path + "*"):
        os.unlink(old)
    started = time.monotonic()
    funnel = logfunnel.install(
        file=path, level="INFO", fmt=FORMAT, max_bytes=512 * 1024, backups=200
    )
    stop = threading.Event()
    parent_count = 0

    def parent_thread() -> None:
        # The seed's parent thread: log in a loop while the main thread forks.
        nonlocal parent_count
        log = logging.getLogger("demo.parent")
        while not stop.is_set():
            log.info("parent seq=%d", parent_count)
            parent_count += 1
            stop.wait(0.0005)

    thread = threading.Thread(target=parent_thread, name="parent-logger")
    thread.start()
    results: dict[str, MethodResult] = {}
    try:
        for method in METHODS:
            result = results[method] = MethodResult()
            began = time.monotonic()
            context = multiprocessing.get_context(method)
            for cycle in range(cycles):
                jobs = [(method, cycle, task, records) for task in range(tasks)]
                with context.Pool(workers) as pool:
                    pending = pool.map_async(_star, jobs)
                    try:
                        result.pids.update(pending.get(timeout=60))
                    except multiprocessing.TimeoutError:
                        result.hangs += 1
                result.expected += tasks * records
            result.seconds = time.monotonic() - began
    finally:
        stop.set()
        thread.join()
        funnel.flush()
        stats = funnel.stats()
        funnel.shutdown()
    elapsed = time.monotonic() - started
    files = sorted(glob.glob(path + "*"))
    seen, parent_seen, torn, processes = _read_back(files)
    for method, result in results.items():
        method_seen = {k: n for k, n in seen.items() if k[0] == method}
        result.written = sum(method_seen.values())
        result.duplicated = sum(n - 1 for n in method_seen.values() if n > 1)
        result.lost = result.expected - len(method_seen)
    parent_lost = parent_count - len(parent_seen)
    parent_dup = sum(n - 1 for n in parent_seen.values() if n > 1)
    _print_summary(
        results, parent_count, parent_lost, parent_dup, torn, processes, files, elapsed, stats
    )
    total_lost = sum(r.lost for r in results.values()) + parent_lost
    total_bad = (
        total_lost + sum(r.duplicated + r.hangs for r in results.values()) + torn + parent_dup
    )
    return 0 if total_bad == 0 else 1


def _read_back(
    files: list[str],
) -> tuple[collections.Counter[tuple[str, int, int, int]], collections.Counter[int], int, set[int]]:
    seen: collections.Counter[tuple[str, int, int, int]] = collections.Counter()
    parent_seen: collections.Counter[int] = collections.Counter()
    torn = 0
    processes: set[int] = set()
    for name in files:
        with open(name, encoding="utf-8") as stream:
            for line in stream:
                match = _LINE.match(line.rstrip("\n"))
                if match is None:
                    torn += 1
                    continue
                processes.add(int(match["pid"]))
                if match["kind"] == "parent":
                    parent_seen[int(match["body"].removeprefix("seq="))] += 1
                    continue
                task = _TASK.match(match["body"])
                if task is None:
                    torn += 1
                    continue
                key = (task["method"], int(task["cycle"]), int(task["task"]), int(task["seq"]))
                seen[key] += 1
    return seen, parent_seen, torn, processes


def _print_summary(
    results: dict[str, MethodResult],
    parent_count: int,
    parent_lost: int,
    parent_dup: int,
    torn: int,
    processes: set[int],
    files: list[str],
    elapsed: float,
    stats: Stats,
) -> None:
    print("logfunnel demo: the seed's scenario (a parent thread logging while pools are")
    print("created again and again) under every start method, through one funnel.\n")
    header = (
        f"{'start method':<13}{'records':>9}{'written':>9}{'lost':>6}{'dup':>5}"
        f"{'hangs':>7}{'workers':>9}{'time':>8}"
    )
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        print(
            f"{method:<13}{r.expected:>9,}{r.written:>9,}{r.lost:>6}{r.duplicated:>5}"
            f"{r.hangs:>7}{len(r.pids):>9}{r.seconds:>7.1f}s"
        )
    print(
        f"{'parent thread':<13}{parent_count:>9,}{parent_count - parent_lost:>9,}"
        f"{parent_lost:>6}{parent_dup:>5}{0:>7}{1:>9}"
    )
    print()
    print(f"processes seen in the log: {len(processes)}")
    print(f"torn or unreadable lines:  {torn}")
    print(f"cut frames at the writer:  {stats.cut_frames}")
    print(
        f"files (rotated at 512 KiB): {len(files)} in {os.path.dirname(files[0]) if files else '?'}"
    )
    print(f"time taken: {elapsed:.1f}s")
    bad = (
        sum(r.lost + r.duplicated + r.hangs for r in results.values())
        + parent_lost
        + parent_dup
        + torn
    )
    print(
        "\nresult:",
        "every record landed exactly once, whole." if bad == 0 else "FAILED (see above)",
    )


def main(argv: list[str]) -> int:
    """Parse ``logfunnel demo`` options and run it."""
    import argparse  # noqa: PLC0415 - only the CLI needs it

    parser = argparse.ArgumentParser(prog="logfunnel demo", description=__doc__)
    parser.add_argument("--dir", default="logfunnel-demo", help="output directory")
    parser.add_argument("--cycles", type=int, default=10, help="pools created per start method")
    parser.add_argument("--workers", type=int, default=2, help="processes per pool")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per pool")
    parser.add_argument("--records", type=int, default=100, help="records per task")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return run_demo(args.dir, args.cycles, args.workers, args.tasks, args.records)
    return 130
