"""Dask workers' records: the funnel (``dask.attach``) against ``Client.forward_logging()``.

Usage::

    python benchmarks/dask_logging.py            # ~1 min; rewrites its section of docs/engines.md
    python benchmarks/dask_logging.py --records 20000 --runs 5 --out /tmp/dask.md

Measured side by side in one run, each the median of ``--runs``, on a
``LocalCluster`` of 2 worker processes (1 thread each), tasks logging WARNING
records (so that ``forward_logging`` forwards them without a level set in the
task):

* **records/s delivered**: from submitting 2 tasks of ``--records`` records each
  until every record reached its destination (the funnel's file after a
  ``flush()`` barrier; the client's handler for ``forward_logging``);
* **a worker that dies**: a task logs 1,000 records then leaves by
  ``os._exit(1)`` (as a worker killed by the OOM killer or a segfault does), and
  how many of its 1,000 arrive.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- dask:begin -->", "<!-- dask:end -->"


def _log(records: int, tag: str, die: bool) -> int:
    import logging  # noqa: PLC0415 - runs in the worker
    import os  # noqa: PLC0415

    log = logging.getLogger("bench.task")
    for i in range(records):
        log.warning("%s %d", tag, i)
    if die:
        os._exit(1)
    return records


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "bench.task":
            self.count += 1


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling what another thread or process delivers; bounded
    return True


def run_once(way: str, records: int, workdir: str) -> tuple[float, int]:
    """Return (records/s of 2 tasks, records of a dying task that arrived)."""
    import distributed  # noqa: PLC0415

    import logfunnel  # noqa: PLC0415
    from logfunnel.integrations import dask as funnel_dask  # noqa: PLC0415

    log_path = Path(workdir) / f"{way}-{time.monotonic_ns()}.log"
    funnel = None
    counter = _Count()
    if way == "funnel":
        funnel = logfunnel.install(file=log_path, fmt="%(name)s|%(message)s",
                                   listen="tcp:127.0.0.1:0")  # fmt: skip
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")  # fmt: skip
    client = distributed.Client(cluster)
    try:
        if funnel is not None:
            funnel_dask.attach(client)

            def delivered() -> int:
                funnel.flush()
                text = log_path.read_text() if log_path.exists() else ""
                return text.count("bench.task|")
        else:
            logging.getLogger().addHandler(counter)
            client.forward_logging("bench.task", level=logging.WARNING)

            def delivered() -> int:
                return counter.count

        workers = sorted(client.scheduler_info()["workers"])
        start = time.perf_counter()
        futures = [client.submit(_log, records, f"w{i}", False, workers=[w], pure=False)
                   for i, w in enumerate(workers)]  # fmt: skip
        client.gather(futures)
        _wait(lambda: delivered() >= 2 * records, 120)
        rate = delivered() / (time.perf_counter() - start)
        before = delivered()
        dying = client.submit(_log, 1000, "dies", True, workers=[workers[0]], pure=False)
        _wait(lambda: dying.status != "pending", 60)
        _wait(lambda: delivered() - before >= 1000, 5)  # what can still come, comes by then
        survived = delivered() - before
    finally:
        client.close()
        cluster.close()
        logging.getLogger().removeHandler(counter)
        if funnel is not None:
            funnel.shutdown()
    return rate, survived


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "engines.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/dask_logging.py " + " ".join(argv or sys.argv[1:])
    results: dict[str, list[tuple[float, int]]] = {"funnel": [], "forward_logging": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.runs):
            for way, runs in results.items():  # interleaved: both see the same machine
                runs.append(run_once(way, args.records, workdir))
    rows = []
    for way, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        survived = statistics.median(s for _, s in runs)
        label = "`attach(client)` (the funnel)" if way == "funnel" else "`Client.forward_logging()`"
        rows.append(f"| {label} | {rate:,.0f} | {survived:,.0f} of 1,000 |")
    text = (
        f"Measured by `{command.strip()}` ({os.cpu_count()} cores shared with other work; "
        f"medians of {args.runs}; 2 workers x {args.records:,} WARNING records):\n\n"
        "| way | records/s delivered | records of a worker that dies by `os._exit` |\n"
        "|---|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    print(text)
    _sections.write(args.out, f"{BEGIN}\n{text}{END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
