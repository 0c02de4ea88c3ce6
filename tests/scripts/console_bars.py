"""Pool workers log to the console while the main process draws a tqdm or rich progress bar.

Usage: console_bars.py tqdm|rich thread|process TASKS

Each task logs three records (``rec TASK SEQ`` and a pad), paced by short
waits so they arrive while the bar redraws; every fifth task's last record is
a warning.  The bar advances as tasks complete.  Before the bar closes,
``flush()`` waits until every record is written, so the finished bar is the
last thing drawn.  Then ``END-MARKER`` on standard output, after shutdown.
"""

import logging
import multiprocessing
import sys
import threading
from typing import Literal

import logfunnel

PAD = "x" * 24


def task(i: int) -> int:
    log = logging.getLogger("app")
    pause = threading.Event()
    for seq in range(3):
        if seq == 2 and i % 5 == 0:
            log.warning("rec %d %d %s", i, seq, PAD)
        else:
            log.info("rec %d %d %s", i, seq, PAD)
        pause.wait(0.02)  # the workload's pace: records interleave with bar redraws
    return i


def main() -> None:
    lib, tasks = sys.argv[1], int(sys.argv[3])
    host: Literal["thread", "process"] = "process" if sys.argv[2] == "process" else "thread"
    with logfunnel.install(console=True, level="INFO", host=host) as funnel:
        logging.getLogger("app").info("rec -1 0 %s", PAD)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            if lib == "tqdm":
                from tqdm import tqdm  # noqa: PLC0415 - only the library under test is imported

                with tqdm(total=tasks, desc="tasks", ncols=90, mininterval=0) as bar:
                    for _ in pool.imap_unordered(task, range(tasks)):
                        bar.update(1)
                    assert funnel.flush(timeout=30)
            else:
                from rich.progress import Progress  # noqa: PLC0415 - likewise

                with Progress() as progress:
                    job = progress.add_task("tasks", total=tasks)
                    for _ in pool.imap_unordered(task, range(tasks)):
                        progress.advance(job)
                    assert funnel.flush(timeout=30)
    print("END-MARKER", lib, host, flush=True)


if __name__ == "__main__":
    main()
