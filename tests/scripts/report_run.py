"""A mixed run for the report: spawn pool workers log steadily, one stalls, some warn and fail.

Usage: report_run.py OUT.jsonl STALL_SECONDS [host]

Worker tasks log ``rec`` records paced by short waits (the workload's own
pace, so the timeline has a width); the task ``stall`` logs, then stops for
STALL_SECONDS (the stall the report must show), then logs again.  Prints
what it logged per level as one JSON object on stdout, for the test to
compare with the report.
"""

import json
import logging
import multiprocessing
import sys
import threading
from typing import Literal

import logfunnel


def task(kind: str, index: int, stall: float) -> dict[str, int]:
    log = logging.getLogger(f"app.{kind}")
    counts = {"INFO": 0, "WARNING": 0, "ERROR": 0}
    pause = threading.Event()
    if kind == "stall":
        log.info("stall task %d: about to wait for the database", index)
        counts["INFO"] += 1
        pause.wait(stall)  # the stall itself: the workload under test, not a synchronisation
        log.warning("stall task %d: resumed after %.1f s", index, stall)
        counts["WARNING"] += 1
        return counts
    for seq in range(40):
        if seq % 13 == 12:
            log.warning("rec %d %d: slow response", index, seq)
            counts["WARNING"] += 1
        elif seq == 30 and index % 2:
            log.error("rec %d %d: request failed", index, seq)
            counts["ERROR"] += 1
        else:
            log.info("rec %d %d", index, seq)
            counts["INFO"] += 1
        pause.wait(0.01)  # pace: records spread over time, as real work does
    return counts


def main() -> None:
    out, stall = sys.argv[1], float(sys.argv[2])
    host: Literal["thread", "process"] = "process" if sys.argv[3:] == ["process"] else "thread"
    totals = {"INFO": 0, "WARNING": 0, "ERROR": 0}
    with logfunnel.install(file=out, json=True, level="INFO", host=host):
        logging.getLogger("main").info("starting the pool")
        totals["INFO"] += 1
        jobs = [("stall", 0, stall)] + [("steady", i, stall) for i in range(1, 9)]
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            for counts in pool.starmap(task, jobs, chunksize=1):
                for level, n in counts.items():
                    totals[level] += n
        logging.getLogger("main").error("one task stalled")
        totals["ERROR"] += 1
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
