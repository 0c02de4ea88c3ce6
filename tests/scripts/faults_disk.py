"""A sink on a full disk: RLIMIT_FSIZE in the writer's process, then space comes back.

Usage: python faults_disk.py LOGDIR FULL RESUMED

A thread host writes to two file sinks: ``full.log``, already 1 MiB long, and
``other.log``, new.  The process's file size limit is set 4 KiB above
``full.log``'s size (SIGXFSZ ignored, so ``write()`` fails with EFBIG, as it
would with ENOSPC), so ``full.log`` fills up almost at once while
``other.log`` stays far below the limit.  A forked worker logs FULL records;
then the limit is lifted and another worker logs RESUMED records.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import resource
import signal
import sys
from typing import Any

from faults_common import FORMAT, emit_report, rec

import logfunnel

CTX: Any = multiprocessing.get_context("fork")
HEADROOM = 4096


def worker(tag: str, records: int) -> None:
    """Log ``records`` numbered records."""
    log = logging.getLogger("faults.disk")
    for seq in range(records):
        rec(log, tag, seq, 40)


def run_worker(tag: str, records: int) -> int | None:
    """Run one worker to the end; return its exit code."""
    proc = CTX.Process(target=worker, args=(tag, records))
    proc.start()
    proc.join(60)
    return proc.exitcode  # type: ignore[no-any-return]


def main() -> None:
    """Fill the disk under one sink, log, give the space back, log again."""
    logdir, full, resumed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    full_path = os.path.join(logdir, "full.log")
    with open(full_path, "w", encoding="utf-8") as prefill:
        prefill.writelines(
            f"0|prefill|faults.fill|INFO|rec fill {i} pad=1000 {'x' * 1000}\n" for i in range(1024)
        )
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(full_path) + HEADROOM, hard))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers = []
    for name in ("full.log", "other.log"):
        handler = logging.FileHandler(os.path.join(logdir, name), encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        handlers.append(handler)
    funnel = logfunnel.install()
    codes = [run_worker("full", full)]
    flushed = funnel.flush(30)
    print("--- space returns ---", file=sys.stderr, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    codes.append(run_worker("resumed", resumed))
    flushed = funnel.flush(30) and flushed
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown()
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
    emit_report({"exitcodes": codes, "stats": stats, "flushed": flushed, "drained": drained})


if __name__ == "__main__":
    main()
