"""Sinks that raise in a thread host: an ``emit`` that raises, and filters that raise.

Usage: python faults_raise.py LOGDIR ORDER

The root logger has ``good.log`` and a ``RaisingHandler`` (whose ``emit``
always raises); the logger ``faults.filtered`` has an ``OddRaisingFilter``;
``sieve.log`` is a file sink with an ``OddRaisingFilter`` of its own.  ORDER
``sieve-first`` puts ``sieve.log`` before ``good.log`` on the root logger,
``sieve-last`` after it.  A forked worker logs 100 records on each of
``faults.emit``, ``faults.filtered`` and ``faults.plain``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
from typing import Any

from faults_common import FORMAT, OddRaisingFilter, RaisingHandler, emit_report, rec

import logfunnel

CTX: Any = multiprocessing.get_context("fork")


def worker() -> None:
    """Log 100 records on each of three loggers."""
    for name in ("emit", "filtered", "plain"):
        log = logging.getLogger(f"faults.{name}")
        for seq in range(100):
            rec(log, name, seq)


def main() -> None:
    """Set up the raising sinks, install, let a child log through them."""
    logdir, order = sys.argv[1], sys.argv[2]
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    good = logging.FileHandler(os.path.join(logdir, "good.log"), encoding="utf-8")
    sieve = logging.FileHandler(os.path.join(logdir, "sieve.log"), encoding="utf-8")
    sieve.addFilter(OddRaisingFilter())
    raising = RaisingHandler()
    handler: logging.Handler
    for handler in (good, sieve):
        handler.setFormatter(logging.Formatter(FORMAT))
    handlers: list[logging.Handler] = (
        [sieve, good, raising] if order == "sieve-first" else [good, raising, sieve]
    )
    for handler in handlers:
        root.addHandler(handler)
    logging.getLogger("faults.filtered").addFilter(OddRaisingFilter())
    # Only the emit logger's records reach the raising sink.
    raising.addFilter(lambda record: record.name == "faults.emit")
    funnel = logfunnel.install()
    proc = CTX.Process(target=worker)
    proc.start()
    proc.join(60)
    flushed = funnel.flush(30)
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown()
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
    emit_report({"exitcode": proc.exitcode, "stats": stats, "flushed": flushed, "drained": drained})


if __name__ == "__main__":
    main()
