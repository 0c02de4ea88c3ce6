"""Log from N processes through a rotating file sink until it rotated by time, then stop.

Usage: rotation_run.py DIR HOST PROCESSES MIN_RECORDS OPTIONS_JSON

Each process (spawn and fork, alternately) logs ``rec pK I pc=I`` until the
installer tells it to stop, and reports how many it logged.  The installer
stops them once every process logged at least MIN_RECORDS and rotated files
of at least two periods exist (``when="S"``: a deadline-bounded wait on that
condition, never a sleep for the clock), then prints the counts as JSON.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import sys
import time
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Literal

import logfunnel

FMT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"
PERIOD = re.compile(r"app\.log\.(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})(\.\d+)?(\.gz)?$")


def work(tag: str, stop: Any, count: Synchronized[int]) -> None:
    log = logging.getLogger(f"w.{tag}")
    i = 0
    while not stop.is_set():
        for _ in range(50):
            log.info("rec %s %d pc=%d", tag, i, i)
            i += 1
        count.value = i


def periods(directory: str) -> set[str]:
    return {m.group(1) for name in os.listdir(directory) if (m := PERIOD.match(name))}


def main() -> None:
    directory, processes, least = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    host: Literal["thread", "process"] = "process" if sys.argv[2] == "process" else "thread"
    options: dict[str, Any] = json.loads(sys.argv[5])
    funnel = logfunnel.install(
        file=os.path.join(directory, "app.log"), fmt=FMT, level="INFO", host=host, **options
    )
    contexts = (multiprocessing.get_context("spawn"), multiprocessing.get_context("fork"))
    stop = multiprocessing.get_context("spawn").Event()
    counts = []
    children = []
    for k in range(processes):
        context = contexts[k % 2]
        count = context.Value("q", 0)
        child = context.Process(target=work, args=(f"p{k}", stop, count), name=f"Worker-{k}")
        child.start()
        counts.append(count)
        children.append(child)
    deadline = time.monotonic() + float(os.environ.get("ROTATION_DEADLINE", "60"))
    while not (
        len(periods(directory)) >= 2 and all(c.value >= least for c in counts)
    ):
        if time.monotonic() > deadline:
            stop.set()
            sys.exit(f"no rotation by time in time: {sorted(os.listdir(directory))}")
        stop.wait(0.02)  # polling the directory; bounded by the deadline
    stop.set()
    for child in children:
        child.join(60)
        assert child.exitcode == 0, child.exitcode
    assert funnel.flush(timeout=60)
    funnel.shutdown()
    print(json.dumps({f"p{k}": c.value for k, c in enumerate(counts)}))


if __name__ == "__main__":
    main()
