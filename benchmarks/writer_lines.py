"""The writer's CPU per record for rendered lines (LINE frames), as connections grow.

Usage::

    python benchmarks/writer_lines.py                    # ~2 min; rewrites its section
    git archive REV src | tar -x -C /tmp/old
    python benchmarks/writer_lines.py --compare "REV=/tmp/old/src"   # both, interleaved
    python benchmarks/writer_lines.py --throttled 64:1000 64:250  # and paced workers

Each run is ``benchmarks/_one.py --system logfunnel-process --mode conn``: P forked
workers log through ``install(file=..., fmt=..., host="process")`` (so each renders its
line and sends a LINE frame), ``--total`` records in all; the writer process's CPU
(utime + stime from ``/proc/PID/stat``, 10 ms ticks) from the workers' release to a
``Funnel.flush()`` barrier after they exited, divided by the records.  CPU time, not
wall time: the machine is shared.  Medians of ``--repeats``, runs of each variant and P
interleaved (load moves the numbers: a writer woken for fewer records a turn pays more
per record); every run's file is checked (each record once, lines whole).

``--throttled P:R`` adds runs of this tree with P workers each logging R records a
second (``_one.py --rate``), as a real job does: the writer then wakes for a few records
at a time, so it pays more per record but a small share of a core; the table gives both.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- writer-lines:begin -->", "<!-- writer-lines:end -->"


def one(procs: int, total: int, src: str | None, tmp: str, rate: float = 0.0) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "_one.py"),
        "--system",
        "logfunnel-process",
        "--procs",
        str(procs),
        "--n",
        str(total // procs),
        "--mode",
        "conn",
        "--dir",
        tmp,
        "--rate",
        str(rate),
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(
    args: argparse.Namespace, variants: list[tuple[str, str | None]]
) -> list[dict[str, Any]]:
    """Run every variant at every P, ``--repeats`` times, interleaved: they share the machine."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        label: {p: [] for p in args.procs} for label, _ in variants
    }
    with tempfile.TemporaryDirectory(prefix="writer-lines-") as tmp:
        for r in range(args.repeats):
            for p in args.procs if r % 2 == 0 else list(reversed(args.procs)):
                for label, src in variants if r % 2 == 0 else list(reversed(variants)):
                    res = one(p, args.total, src, tmp)
                    runs[label][p].append(res)
                    print(
                        f"  {label[:24]:<24} P={p:<3} {res['writer_cpu_us_per_record']:6.2f} "
                        f"µs/rec {res['rate']:9,.0f} rec/s load {res['loadavg_start']:.1f} "
                        f"lost/dup/torn {res['lost']}/{res['dup']}/{res['torn']}",
                        flush=True,
                    )
    return [
        {
            "label": label,
            "total": args.total,
            "repeats": args.repeats,
            "per_procs": {str(p): summary(rs) for p, rs in per_p.items()},
        }
        for label, per_p in runs.items()
    ]


def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "us": statistics.median(x["writer_cpu_us_per_record"] for x in rs),
        "all_us": [round(x["writer_cpu_us_per_record"], 2) for x in rs],
        "rate": statistics.median(x["rate"] for x in rs),
        "call_us": statistics.median(x["cpu_us_per_call"] for x in rs),
        "p99_us": statistics.median(x["p99_us"] for x in rs),
        "load": [x["loadavg_start"] for x in rs],
        "bad": sum(x["lost"] + x["dup"] + x["torn"] for x in rs),
    }


def measure_throttled(args: argparse.Namespace) -> list[dict[str, Any]]:
    """This tree under ``--throttled P:R``: P workers, each R records a second."""
    out = []
    with tempfile.TemporaryDirectory(prefix="writer-lines-") as tmp:
        for spec in args.throttled:
            procs, _, rate = spec.partition(":")
            p, r = int(procs), float(rate)
            n = max(1, round(r * args.throttled_s)) * p  # each worker logs for ~throttled_s
            rs = []
            for _ in range(args.repeats):
                res = one(p, n, None, tmp, r)
                rs.append(res)
                print(
                    f"  throttled P={p:<3} {r:6,.0f}/s {res['writer_cpu_us_per_record']:6.2f} "
                    f"µs/rec {res['rate']:9,.0f} rec/s lost/dup/torn "
                    f"{res['lost']}/{res['dup']}/{res['torn']}",
                    flush=True,
                )
            out.append({"procs": p, "rate_per_worker": r, "total": n, **summary(rs)})
    return out


def section(results: list[dict[str, Any]], paced: list[dict[str, Any]], command: str) -> str:
    procs = list(results[-1]["per_procs"])
    head = "| writer | " + " | ".join(f"P={p}" for p in procs) + " |"
    lines = [
        BEGIN,
        "## Writer CPU per rendered line",
        "",
        (
            f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
            f"{sys.version.split()[0]}, 2 cores (load averages below: the benchmark's own "
            'workers, and whatever else ran). `install(file=..., fmt=..., host="process")`, '
            "P forked workers logging flat out, "
            f"{results[-1]['total']:,} records in all; writer process CPU (utime+stime, "
            "/proc/PID/stat) from the release to a flush barrier, per record; medians of "
            f"{results[-1]['repeats']} (every run listed). Every line of every file checked."
        ),
        "",
        head,
        "|---|" + "---:|" * len(procs),
    ]
    for res in results:
        cells = []
        for p in procs:
            d = res["per_procs"].get(p)
            if d is None:
                cells.append("")
                continue
            cells.append(
                f"**{d['us']:.2f} µs** ({', '.join(f'{x:.2f}' for x in d['all_us'])}), "
                f"load {min(d['load']):.1f}-{max(d['load']):.1f}"
                + ("" if not d["bad"] else f", **{d['bad']} lost/dup/torn**")
            )
        lines.append(f"| {res['label']} | " + " | ".join(cells) + " |")
    last = results[-1]["per_procs"]
    worst = max(d["us"] for d in last.values())
    call = statistics.median(d["call_us"] for d in last.values())
    lines += [
        "",
        (
            f"Projection from these medians: at its worst here ({worst:.2f} µs a record) one "
            f"writer takes ~{1 / worst:.1f} million records/s, what ~{call / worst:.0f} workers "
            f"logging flat out produce (their CPU per call in these runs: {call:.1f} µs, a "
            "median over P), so one writer keeps up with that many cores of workers doing "
            "nothing but log; at the 1 µs target it would be 1,000,000 records/s."
        ),
    ]
    if paced:
        lines += [
            "",
            (
                "Throttled workers (`--throttled`): each worker logs its records at a fixed "
                "pace (`_one.py --rate`, sleeping between calls), this tree, medians of "
                f"{results[-1]['repeats']}. A writer woken for a few records pays more per "
                "record, but what bounds a job is the writer's CPU per second "
                "(the share of a core). "
                "A worker's CPU per call grows with its sleeps for any handler (cold caches): "
                "the unsafe shared FileHandler, measured the same way by hand, took 30.9 µs "
                "at 1,000/s and 113 µs at 250/s."
            ),
            "",
            (
                "| workers x records/s each | records/s in all | writer µs per record "
                "| writer CPU, share of a core | worker CPU per call | p99 per call | "
                "lost/dup/torn |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for t in paced:
            share = t["us"] * t["rate"] / 1e6
            lines.append(
                f"| {t['procs']} x {t['rate_per_worker']:,.0f} | {t['rate']:,.0f} | "
                f"**{t['us']:.2f} µs** ({', '.join(f'{x:.2f}' for x in t['all_us'])}) | "
                f"{share:.1%} | {t['call_us']:.1f} µs | {t['p99_us']:,.0f} µs | {t['bad']} |"
            )
    lines += ["", *NOTES, END]
    return "\n".join(lines)


NOTES = [
    "What moved it (profiled with py-spy, `strace -c` and `perf` on the writer process;",
    'each step, with its measurement, is a row of "What moved the numbers"):',
    "",
    "- **A pipe per process** (protocol 4): a local process writes its frames to a pipe",
    "  whose read end it passed with its HELLO, so the writer's kernel copies out pages",
    "  instead of freeing one socket buffer per send (`perf` put most of the writer's time",
    "  there with sockets: `_copy_to_iter`, `skb_release_data`, `kfree`).",
    "- **Bare lines** (protocol 3): a rendered one-line record travels as its UTF-8 and a",
    "  `\\n`; `_core/lines.LineReader` takes every bare line up to the next frame and to",
    "  the last `\\n` of the read as one block: no Python work per line.",
    "- **recv_into** one buffer of the writer's, where `recv(256 KiB)` allocated one a call.",
    "- **The nap** (`_core/nap.py`): after a busy turn the writer waits, doubling up to",
    "  32 ms, so records gather in the pipes and are read in a few large reads; bounded by",
    "  the fastest pipe's pace so none fills, and ended at once by a flush() or an exit.",
    "",
    "Why throttled workers cost more per record: each read of a pipe is a `read` call and a",
    "Python call chain however few records it brings, and a worker that logs 250 times a",
    "second brings ~8 per 32 ms nap, where one logging flat out brings hundreds. What the",
    "writer spends in a second stays small there, and its capacity is the flat-out figure:",
    "records arriving faster fill its reads.",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[2, 16, 64])
    p.add_argument("--total", type=int, default=128_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also measure the logfunnel package under SRC (e.g. a git archive\n"
        "of an earlier commit's src/), interleaved with this tree's",
    )
    p.add_argument("--label", default="this tree")
    p.add_argument(
        "--throttled",
        nargs="*",
        default=[],
        metavar="P:R",
        help="also run P workers each logging R records/s (this tree only)",
    )
    p.add_argument(
        "--throttled-s", type=float, default=8.0, help="how long each throttled run logs"
    )
    p.add_argument("--out", help="write the results as JSON here (no docs update)")
    args = p.parse_args()
    variants: list[tuple[str, str | None]] = [
        (label, src) for label, _, src in (c.partition("=") for c in args.compare)
    ]
    variants.append((args.label, None))
    results = measure(args, variants)
    paced = measure_throttled(args)
    if args.out:
        Path(args.out).write_text(json.dumps({"flat_out": results, "throttled": paced}))
        return 0
    new = section(
        results, paced, shlex.join(["python", "benchmarks/writer_lines.py", *sys.argv[1:]])
    )
    _sections.write(ROOT / "docs" / "benchmarks.md", new)
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
