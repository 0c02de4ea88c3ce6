"""Experiment 3: the article's second remedy, spawn: no hang, and no child record either.

Runs the article's Pool program (``logfunnel.diagnose.seed_programs.pool_program``: root
level INFO, cycle numbers) with the pool made as the article's remedy makes it,
``get_context("spawn").Pool()``, then with ``"forkserver"``; and each once more
with ``import logfunnel`` + ``logfunnel.install()``.  A spawned child is a fresh
interpreter: it re-imports the main module, but ``setup_logging()`` runs under
``if __name__ == '__main__'``, so the child's root logger has no handler and
the WARNING level, and its ``logging.info`` goes nowhere.  Counts the
children's records in out.log.

    python benchmarks/stock_remedies/spawn_lost.py [--cycles 30]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import header

from logfunnel.diagnose import repro as _repro
from logfunnel.diagnose import seed_programs as _seed_programs

# As pool_program writes it (with repr(), so single quotes).
_FORK_LINE = f"    multiprocessing.set_start_method({'fork'!r})\n"
_POOL_LINE = "        with Pool() as pool:\n"


def program(cycles: int, method: str, *, fixed: bool) -> str:
    text = _seed_programs.pool_program(cycles, fixed=fixed)
    assert _FORK_LINE in text
    assert _POOL_LINE in text
    text = text.replace(_FORK_LINE, "")
    return text.replace(
        _POOL_LINE,
        f'        with multiprocessing.get_context("{method}").Pool() as pool:  # the remedy\n',
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()
    header("Experiment 3: spawn / forkserver pools (the article's second remedy)")
    base = Path(tempfile.mkdtemp(prefix="spawn-lost-"))
    try:
        for fixed in (False, True):
            for method in ("spawn", "forkserver"):
                name = f"{method}{'-logfunnel' if fixed else ''}"
                run = _repro._run_pool_program(
                    base / name,
                    args.cycles,
                    fixed=fixed,
                    stall=15.0,
                    limit=args.cycles * 2.0 + 30,
                    text=program(args.cycles, method, fixed=fixed),
                )
                records = sum(run.child_records.values())
                once = sum(1 for c in range(args.cycles) if run.child_records[c] == 1)
                state = "finished" if run.finished else "stopped at the time bound"
                if run.hung:
                    state = "HUNG"
                print(
                    f"{name:22} {state}, {run.completed} of {args.cycles} cycles in "
                    f"{run.elapsed:.1f} s; child records in out.log: {records} "
                    f"({once} cycles exactly once); parent-thread records: {run.parent_records:,}"
                )
                if run.stderr.strip():
                    print("    stderr: " + run.stderr.strip().splitlines()[-1][:200])
                shutil.rmtree(base / name, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
