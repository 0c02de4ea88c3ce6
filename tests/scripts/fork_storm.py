"""A fork storm: threads log through several handlers while the main thread forks children.

Usage: python fork_storm.py LOGDIR FORKS HOST

Three threads log continuously through three kinds of handler (a FileHandler
on the root logger, a StreamHandler over a buffered file on the ``storm``
logger, a QueueHandler feeding a QueueListener), while the main thread forks
children as fast as it can.  Every child logs three records; half leave with
``sys.exit`` (full interpreter finalisation, the path on which an inherited
buffer would be flushed a second time), half with ``os._exit`` (as pool
workers do).  Prints a JSON report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import warnings
from typing import Any

import logfunnel

FORMAT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"


def main() -> None:
    """Set up the handlers, install, storm, report."""
    logdir, forks, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    formatter = logging.Formatter(FORMAT)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    listener = None
    if host == "thread":
        file_a = logging.FileHandler(os.path.join(logdir, "a.log"))
        stream_b = logging.StreamHandler(open(os.path.join(logdir, "b.log"), "a"))  # noqa: SIM115
        log_queue: queue.Queue[Any] = queue.Queue()
        file_c = logging.FileHandler(os.path.join(logdir, "c.log"))
        for handler in (file_a, stream_b, file_c):
            handler.setFormatter(formatter)
        listener = logging.handlers.QueueListener(log_queue, file_c)
        listener.start()
        root.addHandler(file_a)
        root.addHandler(logging.handlers.QueueHandler(log_queue))
        logging.getLogger("storm").addHandler(stream_b)
        funnel = logfunnel.install()
    else:
        funnel = logfunnel.install(file=os.path.join(logdir, "a.log"), fmt=FORMAT, host="process")

    stop = threading.Event()
    counts = [0, 0, 0]

    def spin(k: int) -> None:
        log = logging.getLogger(f"storm.t{k}")
        while not stop.is_set():
            log.info("rec t%d %d pc=%d", k, counts[k], counts[k])
            counts[k] += 1

    threads = [threading.Thread(target=spin, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    pids = []
    # Python 3.12+ warns that fork() with threads may deadlock the child: it
    # is the very situation this test builds.  Record the warnings (counted in
    # the report), rather than hiding them.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        for i in range(forks):
            pid = os.fork()
            if pid == 0:
                child = logging.getLogger("storm.child")
                for j in range(3):
                    child.info("rec child%d %d pc=%d", i, j, j)
                if i % 2:
                    os._exit(0)
                sys.exit(0)
            pids.append(pid)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    stop.set()
    for thread in threads:
        thread.join()
    flushed = funnel.flush()
    if listener is not None:
        listener.stop()  # drains the queue into c.log
    stats = dataclasses.asdict(funnel.stats())
    funnel.shutdown()
    fork_warnings = sum(
        1 for w in caught if issubclass(w.category, DeprecationWarning) and "fork" in str(w.message)
    )
    print(
        json.dumps(
            {
                "spins": counts,
                "failed_children": failed,
                "flushed": flushed,
                "fork_warnings": fork_warnings,
                "stats": stats,
            }
        )
    )


if __name__ == "__main__":
    main()
