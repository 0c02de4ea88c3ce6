"""A slow or stuck sink, under ``on_full="block"`` and under ``on_full="drop"``.

Usage: python faults_slow.py block LOGDIR WORKERS RECORDS PAD DELAY EVERY
       python faults_slow.py drop LOGDIR WORKERS RECORDS PAD TIMEOUT
       python faults_slow.py drop-exit LOGDIR WORKERS RECORDS PAD TIMEOUT

``block``: a writer *process* whose only sink sleeps DELAY seconds every EVERY
records; WORKERS forked workers each log RECORDS records of PAD characters as
fast as they can.  The sink notes its process's memory (``SlowFileHandler``);
each worker reports its own peak memory and its longest logging call.

``drop``: a thread host whose sink blocks (``GateHandler``) while WORKERS
workers each log RECORDS records with ``on_full="drop"``; each measures its
longest logging call.  Once every worker is done the sink is unblocked, every
worker logs one more record (``after``), which carries its drop count to the
writer, and exits.  ``drop-exit``: the same, but the workers exit without
logging again after the sink was unblocked.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from faults_common import (
    FORMAT,
    GateHandler,
    emit_report,
    finish,
    log_timed,
    proc_status,
    rec,
    scripts_on_pythonpath,
    wait_until,
)

import logfunnel

CTX: Any = multiprocessing.get_context("fork")


def start_workers(
    workers: int, target: Callable[..., None], *args: Any
) -> tuple[list[Any], list[Any]]:
    """Start WORKERS processes running ``target(slot, *args, sender)``; return receivers and processes."""
    pipes, procs = [], []
    for slot in range(workers):
        receiver, sender = CTX.Pipe(duplex=False)
        proc = CTX.Process(target=target, args=(slot, *args, sender))
        proc.start()
        sender.close()
        pipes.append(receiver)
        procs.append(proc)
    return pipes, procs


def gather(pipes: list[Any], procs: list[Any]) -> list[Any]:
    """Receive each worker's one report, in slot order, then join every worker."""
    results = []
    for receiver in pipes:
        results.append(receiver.recv())
        receiver.close()
    for proc in procs:
        proc.join(30)
    return results


def block_worker(slot: int, records: int, pad: int, out: Any) -> None:
    """Log as fast as possible; report the longest call and peak memory (KiB)."""
    log = logging.getLogger("faults.slow")
    longest = log_timed(log, f"w{slot}", records, pad)
    out.send({"longest": longest, **proc_status()})
    out.close()


def block(logdir: str, workers: int, records: int, pad: int, delay: float, every: int) -> None:
    """Push WORKERS x RECORDS records through a slow sink in a writer process."""
    scripts_on_pythonpath()
    config = {
        "version": 1,
        "handlers": {
            "slow": {
                "()": "faults_common.SlowFileHandler",
                "filename": os.path.join(logdir, "slow.log"),
                "report": os.path.join(logdir, "writer-memory.json"),
                "delay": delay,
                "every": every,
            }
        },
        "root": {"handlers": ["slow"], "level": "INFO"},
    }
    funnel = logfunnel.install(config=config, host="process")
    started = time.monotonic()
    pipes, procs = start_workers(workers, block_worker, records, pad)
    results = gather(pipes, procs)
    logged_seconds = time.monotonic() - started
    flushed = funnel.flush(60)
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown(60)
    emit_report(
        {
            "workers": results,
            "exitcodes": [p.exitcode for p in procs],
            "seconds": round(logged_seconds, 2),
            "stats": stats,
            "flushed": flushed,
            "drained": drained,
        }
    )


def drop_worker(
    slot: int, records: int, pad: int, done: Any, resumed: Any, again: bool, out: Any
) -> None:
    """Log RECORDS records (the sink is stuck), then, once it flows, one more if ``again``."""
    log = logging.getLogger("faults.drop")
    longest = log_timed(log, f"w{slot}", records, pad)
    done.release()
    logged = records
    if again:
        if not resumed.wait(60):
            raise RuntimeError("the sink was never unblocked")
        start = time.perf_counter()
        rec(log, f"w{slot}", records)
        longest = max(longest, time.perf_counter() - start)
        logged += 1
    out.send({"longest": longest, "logged": logged, "pid": os.getpid()})
    out.close()


def drop(logdir: str, workers: int, records: int, pad: int, timeout: float, again: bool) -> None:
    """Log with on_full='drop' into a stuck sink; unblock it; report what each worker did."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    sink = logging.FileHandler(os.path.join(logdir, "drop.log"), encoding="utf-8")
    sink.setFormatter(logging.Formatter(FORMAT))
    gate = GateHandler()
    root.addHandler(gate)
    root.addHandler(sink)
    funnel = logfunnel.install(on_full="drop", full_timeout=timeout)
    gate.gate.clear()
    done = CTX.Semaphore(0)
    resumed = CTX.Event()
    started = time.monotonic()
    pipes, procs = start_workers(workers, drop_worker, records, pad, done, resumed, again)
    for _ in range(workers):
        if not done.acquire(timeout=120):
            raise RuntimeError("a worker never finished logging")
    stuck_seconds = time.monotonic() - started
    if not again:
        for proc in procs:
            proc.join(30)
    writer_blocked = gate.entered.is_set()
    # The writer waited at the closed gate all along: no wait of the sink gave up
    # (GATE_WAIT) before every worker had returned from all its calls.
    gate_timeouts = gate.timeouts
    gate.gate.set()
    # Flow resumes: everything the sockets held is written before this returns.
    flushed_before = funnel.flush(60)
    resumed.set()
    results = gather(pipes, procs)
    wait_until(lambda: all(p.exitcode is not None for p in procs), 30, "workers to exit")
    flushed, stats, drained = finish(funnel, root, [sink, gate], 60)
    emit_report(
        {
            "workers": results,
            "exitcodes": [p.exitcode for p in procs],
            "writer_blocked": writer_blocked,
            "gate_timeouts": gate_timeouts,
            "stuck_seconds": round(stuck_seconds, 2),
            "stats": stats,
            "flushed": flushed_before and flushed,
            "drained": drained,
        }
    )


if __name__ == "__main__":
    mode, logdir = sys.argv[1], sys.argv[2]
    n_workers, n_records, n_pad = (int(a) for a in sys.argv[3:6])
    if mode == "block":
        block(logdir, n_workers, n_records, n_pad, float(sys.argv[6]), int(sys.argv[7]))
    else:
        drop(logdir, n_workers, n_records, n_pad, float(sys.argv[6]), again=mode == "drop")
