"""Shutdown races: shutdown() under load, exit with daemon threads logging, pools terminated.

Usage: python faults_shutdown.py during LOGDIR HOST WORKERS
       python faults_shutdown.py atexit LOGDIR THREADS
       python faults_shutdown.py pool LOGDIR

``during``: WORKERS forked workers log in a tight loop (fallback: a file);
once each has 200 returned calls the main thread snapshots every worker's
last returned SEQ and calls ``shutdown()``; the workers keep logging for a
while, then stop.  ``atexit``: a process host; THREADS daemon threads of the
main process log in a tight loop while the main thread returns, so
``shutdown()`` runs at interpreter exit; an ``atexit`` hook that runs first
prints the snapshot.  ``pool``: three ``Pool`` workers log in a tight loop
until ``Pool.terminate()``; then four children log 50 records each and leave
with ``os._exit(0)``.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from faults_common import (
    FORMAT,
    GateHandler,
    emit_report,
    proc_state,
    rec,
    scripts_on_pythonpath,
    wait_until,
)

import logfunnel

CTX: Any = multiprocessing.get_context("fork")
STOP_AFTER_SHUTDOWN = 300  # records each worker logs once shutdown() has returned


def loop_worker(slot: int, last: Any, stop: Any) -> None:
    """Log until told to stop, storing each returned SEQ."""
    log = logging.getLogger("faults.shutdown")
    seq = 0
    while not stop.is_set():
        rec(log, f"w{slot}", seq)
        last[slot] = seq
        seq += 1
    # A few more, all logged after shutdown() returned: they go to the fallback.
    for _ in range(STOP_AFTER_SHUTDOWN):
        rec(log, f"w{slot}", seq)
        last[slot] = seq
        seq += 1


def during(logdir: str, host: str, workers: int) -> None:
    """Shut down while workers log; report the snapshot taken just before."""
    funnel = logfunnel.install(
        file=os.path.join(logdir, "sink.log"),
        fmt=FORMAT,
        level="INFO",
        host=host,  # type: ignore[arg-type]
        fallback=os.path.join(logdir, "fallback.log"),
    )
    last = CTX.Array("q", [-1] * workers, lock=False)
    stop = CTX.Event()
    procs = [CTX.Process(target=loop_worker, args=(i, last, stop)) for i in range(workers)]
    for proc in procs:
        proc.start()
    wait_until(lambda: min(last) >= 200, 30, "every worker to log 200 records")
    snapshot = list(last)
    started = time.monotonic()
    drained = funnel.shutdown(timeout=10)
    shutdown_seconds = time.monotonic() - started
    stop.set()
    for proc in procs:
        proc.join(60)
    emit_report(
        {
            "snapshot": snapshot,
            "final": list(last),
            "exitcodes": [p.exitcode for p in procs],
            "pids": [p.pid for p in procs],
            "shutdown_seconds": round(shutdown_seconds, 3),
            "drained": drained,
        }
    )


def log_forever(logger: str, tag: str, last: Any, slot: int) -> None:
    """Log records TAG 0, 1, 2, ... until the process ends, storing each returned SEQ in LAST[SLOT]."""
    log = logging.getLogger(logger)
    seq = 0
    while True:
        rec(log, tag, seq)
        last[slot] = seq
        seq += 1


def atexit_run(logdir: str, threads: int) -> None:
    """Return from the main thread while daemon threads log; shutdown runs at exit."""
    logfunnel.install(
        file=os.path.join(logdir, "sink.log"), fmt=FORMAT, level="INFO", host="process"
    )
    last = [-1] * threads
    for k in range(threads):
        threading.Thread(
            target=log_forever, args=("faults.atexit", f"t{k}", last, k), daemon=True
        ).start()
    wait_until(lambda: min(last) >= 200, 30, "every thread to log 200 records")

    # Registered after logfunnel's own exit hook, so it runs before it.
    @atexit.register
    def snapshot() -> None:
        print(json.dumps({"snapshot": list(last)}), flush=True)


def pool_task(slot: int) -> None:
    """Log until the pool is terminated, storing each returned SEQ in LAST."""
    log_forever("faults.pool", f"p{slot}", LAST, slot)


def exit_child(slot: int) -> None:
    """Log 50 records and leave without any clean-up."""
    log = logging.getLogger("faults.exit")
    for seq in range(50):
        rec(log, f"x{slot}", seq)
    os._exit(0)


LAST: Any = None


def pool(logdir: str) -> None:
    """Terminate a pool mid-task, then let children leave with os._exit."""
    global LAST  # noqa: PLW0603 - inherited by the forked pool workers
    funnel = logfunnel.install(file=os.path.join(logdir, "sink.log"), fmt=FORMAT, level="INFO")
    LAST = CTX.Array("q", [-1] * 3, lock=False)
    workers = CTX.Pool(3)
    for slot in range(3):
        workers.apply_async(pool_task, (slot,))
    wait_until(lambda: min(LAST) >= 100, 30, "every pool task to log 100 records")
    workers.terminate()
    workers.join()
    snapshot = list(LAST)
    children = [CTX.Process(target=exit_child, args=(i,)) for i in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    flushed = funnel.flush(30)
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown()
    emit_report(
        {
            "last": snapshot,
            "exitcodes": [c.exitcode for c in children],
            "stats": stats,
            "flushed": flushed,
            "drained": drained,
        }
    )


def stuck_child() -> None:
    """Log the one record the sink hangs on."""
    logging.getLogger("faults.stuck").info("stuck here")


def stuck(logdir: str, host: str) -> None:
    """Shut down while the writer hangs in a sink; report how long shutdown() took."""
    entered = os.path.join(logdir, "entered")
    left = os.path.join(logdir, "left")
    if host == "thread":
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        gate = GateHandler()
        root.addHandler(gate)
        funnel = logfunnel.install()
        gate.gate.clear()
    else:
        scripts_on_pythonpath()
        config = {
            "version": 1,
            "handlers": {
                "stuck": {
                    "()": "faults_common.StuckHandler",
                    "entered": entered,
                    "left": left,
                    "seconds": 30,
                }
            },
            "root": {"handlers": ["stuck"], "level": "INFO"},
        }
        funnel = logfunnel.install(config=config, host="process")
    writer_pid = funnel.stats().pid
    child = CTX.Process(target=stuck_child)
    child.start()
    child.join(30)
    if host == "thread":
        wait_until(gate.entered.is_set, 30, "the writer to hang in the sink")
    else:
        wait_until(lambda: os.path.exists(entered), 30, "the writer to hang in the sink")
    started = time.monotonic()
    drained = funnel.shutdown(timeout=2)
    shutdown_seconds = time.monotonic() - started
    # Whether the sink's hang (30 s, or GATE_WAIT) was still going on when shutdown()
    # returned: a shutdown that waited for the writer would only return after it.
    hang_over = gate.left.is_set() if host == "thread" else os.path.exists(left)
    writer_alive = False
    if host == "thread":
        gate.gate.set()
    elif writer_pid != os.getpid():
        try:
            writer_alive = proc_state(writer_pid) not in ("Z", "X")
        except FileNotFoundError:
            writer_alive = False
        if writer_alive:  # clean up the orphan this test made
            os.kill(writer_pid, signal.SIGKILL)
    emit_report(
        {
            "exitcode": child.exitcode,
            "drained": drained,
            "shutdown_seconds": round(shutdown_seconds, 3),
            "hang_over_at_return": hang_over,
            "writer_alive_after_shutdown": writer_alive,
        }
    )


if __name__ == "__main__":
    if sys.argv[1] == "during":
        during(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "stuck":
        stuck(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "atexit":
        atexit_run(sys.argv[2], int(sys.argv[3]))
    else:
        pool(sys.argv[2])
