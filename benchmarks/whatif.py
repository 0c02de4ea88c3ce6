"""Measure candidate src/ changes end to end before making them (see ``_patches.py``).

Usage::

    python benchmarks/whatif.py [--repeats 5] [--n 20000] [--procs 2,4] [--logfunnel-src DIR]

Runs ``logfunnel-thread`` as is and with each patch of ``_patches.py`` (and all of
them together), interleaved with the floor, and prints a Markdown table of medians:
records/s and its ratio to the floor, the workers' CPU per call, p99, and the writer
thread's CPU per record (read after a ``Funnel.flush()`` barrier).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from run import fmt_num, run_jobs, summarize

VARIANTS = ("", "sndbuf")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--procs", default="2,4")
    p.add_argument("--logfunnel-src", default=None)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    procs = [int(x) for x in args.procs.split(",")]
    jobs: list[dict[str, Any]] = [{"system": "floor", "procs": 1, "n": args.n, "size": 100}]
    jobs += [
        {"system": "logfunnel-thread", "procs": n, "n": args.n, "size": 100, "mode": "conn",
         **({"patch": v} if v else {})}
        for n in procs
        for v in VARIANTS
    ]
    summary = summarize(run_jobs("whatif", jobs, args.repeats, args))
    floor = summary[("floor", 1, 100)]
    print(f"floor: {fmt_num(floor['rate'])} records/s, {floor['cpu_us_per_call']:.2f} µs CPU/call")
    print()
    print("| variant | P | records/s | x floor | worker CPU µs/call | x floor | p99 µs "
          "| writer CPU µs/record | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in procs:
        for v in VARIANTS:
            s = summary[("logfunnel-thread" + (f"+{v}" if v else ""), n, 100)]
            cpu = s["cpu_us_per_call"]
            print(
                f"| {v or 'as is'} | {n} | {fmt_num(s['rate'])} | {s['rate'] / floor['rate']:.2f} "
                f"| {cpu:.2f} | {cpu / floor['cpu_us_per_call']:.2f} "
                f"| {fmt_num(s['p99_us'])} | {s['writer_cpu_us_per_record']:.2f} "
                f"| {'WRONG' if s['wrong'] else 'ok'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
