"""Scenarios for the coverage matrix: each installs a funnel, makes processes log, shuts down.

Usage: python scenario.py NAME METHOD HOST LOGFILE

Every record's message is ``rec TAG I pc=N``: TAG names the task, I counts the
records of that task, and N counts every record of the logging process, so a
test can check that each record arrived once and that each process's records
kept their order.  The scenario prints ``{"expected": {TAG: count}}`` as JSON.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import logfunnel

FORMAT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"
RECORDS = 40
_counter = itertools.count()
_counter_lock = threading.Lock()


def _new_counter_lock() -> None:
    # A parent thread may hold the lock at fork time: the child needs its own,
    # or it hangs exactly like the seed program did.
    global _counter_lock  # noqa: PLW0603
    _counter_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_counter_lock)


def log_task(tag: str, records: int = RECORDS) -> int:
    """Log ``records`` numbered records; return this process's pid."""
    log = logging.getLogger(f"scenario.{tag.split('-', maxsplit=1)[0]}")
    for i in range(records):
        with _counter_lock:  # pc must follow the order in which records are sent
            log.info("rec %s %d pc=%d", tag, i, next(_counter))
    return os.getpid()


def _log_star(args: tuple[str, int]) -> int:
    return log_task(*args)


def nested_parent(method: str, tag: str) -> None:
    """Create a pool from inside a child process (a non-daemonic Process)."""
    log_task(f"{tag}-outer")
    with multiprocessing.get_context(method).Pool(2) as pool:
        pool.map(_log_star, [(f"{tag}-inner{i}", RECORDS) for i in range(3)])


def killed_worker(tag: str, logged: Any) -> None:
    """Log, report that the calls returned, then wait to be killed."""
    log_task(tag)
    logged.set()
    threading.Event().wait(60)  # SIGKILLed long before this ends


def scenario(name: str, method: str) -> dict[str, int]:
    """Run one scenario; return the expected record count per tag."""
    ctx: Any = multiprocessing.get_context(method)
    expected: dict[str, int] = {}
    if name == "pool":
        tags = [f"pool{i}" for i in range(6)]
        # Leaving the with block terminates the pool right after the results.
        with ctx.Pool(2) as pool:
            pool.map(_log_star, [(t, RECORDS) for t in tags])
        expected.update(dict.fromkeys(tags, RECORDS))
    elif name == "executor":
        tags = [f"exec{i}" for i in range(6)]
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
            list(executor.map(log_task, tags))
        expected.update(dict.fromkeys(tags, RECORDS))
    elif name == "process":
        procs = [ctx.Process(target=log_task, args=(f"proc{i}",)) for i in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        expected.update({f"proc{i}": RECORDS for i in range(3)})
    elif name == "nested":
        proc = ctx.Process(target=nested_parent, args=(method, "nest"))
        proc.start()
        proc.join()
        expected["nest-outer"] = RECORDS
        expected.update({f"nest-inner{i}": RECORDS for i in range(3)})
    elif name == "subprocess":
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import scenario; scenario.log_task('sub')"
        )
        subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], check=True)
        expected["sub"] = RECORDS
    elif name == "joblib":
        import joblib  # noqa: PLC0415 - a test extra

        # loky pickles functions of __main__ by value, lock and all: hand it
        # the same function from an importable module instead.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import scenario as importable  # noqa: PLC0415

        tags = [f"job{i}" for i in range(4)]
        joblib.Parallel(n_jobs=2, backend="loky")(
            joblib.delayed(importable.log_task)(t) for t in tags
        )
        expected.update(dict.fromkeys(tags, RECORDS))
    elif name == "threads":
        # The main process and extra threads log while a pool's workers do.
        stop = threading.Event()
        threads = [threading.Thread(target=log_task, args=(f"thread{i}", 500)) for i in range(3)]
        for t in threads:
            t.start()
        with ctx.Pool(2) as pool:
            pool.map(_log_star, [(f"tpool{i}", RECORDS) for i in range(4)])
        log_task("main")
        for t in threads:
            t.join()
        stop.set()
        expected.update({f"thread{i}": 500 for i in range(3)})
        expected.update({f"tpool{i}": RECORDS for i in range(4)})
        expected["main"] = RECORDS
    elif name == "sigkill":
        logged = ctx.Event()
        proc = ctx.Process(target=killed_worker, args=("killed", logged))
        proc.start()
        if not logged.wait(30):
            msg = "the worker did not log in time"
            raise RuntimeError(msg)
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join()
        expected["killed"] = RECORDS
    else:
        msg = f"unknown scenario {name}"
        raise SystemExit(msg)
    return expected


def main() -> None:
    """Install, run the scenario, flush, shut down, print what was expected."""
    name, method, host, path = sys.argv[1:5]
    funnel = logfunnel.install(file=path, level="INFO", fmt=FORMAT, host=host)  # type: ignore[arg-type]
    expected = scenario(name, method)
    flushed = funnel.flush()
    stats = dataclasses.asdict(funnel.stats())
    funnel.shutdown()
    print(json.dumps({"expected": expected, "flushed": flushed, "stats": stats}))


if __name__ == "__main__":
    main()
