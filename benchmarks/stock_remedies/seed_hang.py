"""Experiment 1: the article's Pool program, at INFO, hangs; and loses its children's records.

Runs the program of ``logfunnel.diagnose.seed_programs.pool_program`` (the article's, with
the root level at INFO, cycle numbers, and a faulthandler hook) ``--runs`` times,
each for at most ``--cycles`` pool cycles, under the watchdog of ``logfunnel
repro``: a child that printed "About to log..." without "...logged" within
``--stall`` seconds is stuck; it is asked for its stack (SIGUSR1) and the
process group is killed.  Reports, per run, the cycle at which it hung, the
frame it was blocked in, and the children's records found in out.log.

A control run uses the article's text as printed (root level left at WARNING).

    python benchmarks/stock_remedies/seed_hang.py [--runs 10] [--cycles 200] [--stall 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import header

from logfunnel.diagnose import pool_run as _pool_run
from logfunnel.diagnose import seed_programs as _seed_programs
from logfunnel.diagnose import stacks as _stacks

_LEVEL_LINE = "    logging.getLogger().setLevel(logging.INFO)\n"


def _blocked_in(dump: str) -> str:
    """Name a dump's lock frame and its caller: 'threading.py:272 __enter__ <- queue.py:133 put'."""
    found = _stacks.lock_frame(dump) if dump else None
    if found is None:
        return "no stack"
    names = []
    for line in dump.splitlines()[found[0] : found[0] + 2]:
        frame = _pool_run._FRAME.match(line)
        if frame:
            names.append(f"{Path(frame['file']).name}:{frame['line']} {frame['func']}")
    return " <- ".join(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--control-cycles", type=int, default=50)
    parser.add_argument("--stall", type=float, default=3.0)
    args = parser.parse_args()
    header("Experiment 1: the article's Pool + QueueHandler program")
    base = Path(tempfile.mkdtemp(prefix="seed-hang-"))
    try:
        # A cycle takes 0.1-0.2 s here; the bound leaves room for slow machines.
        limit = args.cycles * 0.5 + args.stall + 10
        hangs: list[int] = []
        children_logged = 0
        child_records = 0
        frames: dict[str, int] = {}
        print(
            f"\n## {args.runs} runs, root level INFO, at most {args.cycles} cycles, "
            f"stall {args.stall:g} s"
        )
        for i in range(args.runs):
            run = _pool_run.run_pool_program(
                base / f"run{i}", args.cycles, fixed=False, stall=args.stall, limit=limit
            )
            frame = _blocked_in(run.dump)
            records = sum(run.child_records.values())
            children_logged += run.completed
            child_records += records
            if run.hung:
                hangs.append(run.completed)
                frames[frame] = frames.get(frame, 0) + 1
                state = (
                    f"HUNG at cycle {run.stuck_cycle} (after {run.completed} complete cycles), "
                    f"in {frame}"
                )
            elif run.finished:
                state = f"finished {run.completed} cycles without hanging"
            else:
                state = f"stopped at the time bound after {run.completed} cycles"
            print(
                f"run {i + 1:2}: {state}; child records in out.log: {records} of {run.completed} "
                f"returned calls; {run.elapsed:.1f} s"
            )
            shutil.rmtree(base / f"run{i}", ignore_errors=True)
        print(f"\nhung: {len(hangs)} of {args.runs} runs")
        if hangs:
            print(
                f"complete cycles before the hang: median {statistics.median(hangs):g}, "
                f"min {min(hangs)}, max {max(hangs)}; all: {sorted(hangs)}"
            )
            print(f"blocked frame (innermost lock frame of the stuck child): {frames}")
        print(
            f"child records in out.log: {child_records}, of {children_logged} children whose "
            f"logging.info() returned"
        )

        print(
            f"\n## control: the article's text as printed (root level WARNING), "
            f"{args.control_cycles} cycles"
        )
        text = _seed_programs.pool_program(args.control_cycles, fixed=False)
        assert _LEVEL_LINE in text
        text = text.replace(_LEVEL_LINE, "")
        run = _pool_run.run_pool_program(
            base / "control",
            args.control_cycles,
            fixed=False,
            stall=args.stall,
            limit=args.control_cycles * 0.5 + args.stall + 10,
            text=text,
        )
        out_log = base / "control" / "out.log"
        lines = len(out_log.read_text().splitlines()) if out_log.exists() else 0
        print(
            f"control: {'HUNG' if run.hung else 'no hang'}; {run.completed} of "
            f"{args.control_cycles} cycles; lines in out.log: {lines} "
            f"(parent thread's: {run.parent_records}, "
            f"children's: {sum(run.child_records.values())})"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
