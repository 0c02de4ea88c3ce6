"""Two (or more) commits of logfunnel side by side in one run: did a change slow anything down?

Usage::

    python benchmarks/revs.py 1014c2c HEAD            # ~5 min; rewrites its section
    python benchmarks/revs.py REV_A REV_B --repeats 7 --procs 2 4 --out /tmp/revs.json

Each commit's ``src`` is exported (``git archive``) and put first on ``PYTHONPATH``
for its runs; the harness (``benchmarks/_one.py``) is this tree's for all of them.
Per repeat, the floor (one process, plain ``FileHandler``) and every (commit, host,
P) run once, in an order reversed every other repeat, so load on the shared machine
falls on all alike; ratios are to the median floor of the same run.  Workers are
forked, ``install(file=..., fmt=...)`` exactly as the README shows; every run's
file is checked (each record once, lines whole).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- revs:begin -->", "<!-- revs:end -->"
HOSTS = tuple(os.environ.get("REVS_HOSTS", "logfunnel-thread,logfunnel-process").split(","))


def export(rev: str, into: str) -> str:
    """Export ``rev``'s ``src`` into ``into``; return the directory to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                             capture_output=True, check=True, timeout=120)  # fmt: skip
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True, timeout=120)
    return os.path.join(into, "src")


def one(system: str, procs: int, n: int, src: str | None, tmp: str) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    argv = [sys.executable, str(ROOT / "benchmarks" / "_one.py"), "--system", system,
            "--procs", str(procs), "--n", str(n), "--dir", tmp]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("revs", nargs="+")
    p.add_argument("--procs", type=int, nargs="+", default=[2, 4])
    p.add_argument("--n", type=int, default=20_000, help="records per worker")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="write the results as JSON here (no docs update)")
    args = p.parse_args(argv)
    command = "python benchmarks/revs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    floors: list[dict[str, Any]] = []
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="revs-") as tmp:
        srcs = []
        for i, rev in enumerate(args.revs):
            os.mkdir(os.path.join(tmp, str(i)))
            srcs.append((rev, export(rev, os.path.join(tmp, str(i)))))
        jobs = [(rev, src, host, p) for rev, src in srcs for host in HOSTS for p in args.procs]
        for repeat in range(args.repeats):
            floors.append(one("floor", 1, args.n, None, tmp))
            for rev, src, host, procs in jobs if repeat % 2 == 0 else list(reversed(jobs)):
                runs.setdefault((rev, host, procs), []).append(one(host, procs, args.n, src, tmp))
    floor_rate = statistics.median(f["rate"] for f in floors)
    floor_cpu = statistics.median(f["cpu_us_per_call"] for f in floors)
    rows, table = [], []
    for (rev, host, procs), results in runs.items():
        rate = statistics.median(r["rate"] for r in results)
        cpu = statistics.median(r["cpu_us_per_call"] for r in results)
        p99 = statistics.median(r["p99_us"] for r in results)
        wrong = sum(r["lost"] + r["dup"] + r["torn"] for r in results)
        rows.append({"rev": rev, "host": host, "procs": procs, "rate": rate, "cpu": cpu,
                     "p99": p99, "wrong": wrong})  # fmt: skip
        table.append(
            f"| {rev} | {host.removeprefix('logfunnel-')} | {procs} | {rate:,.0f} | "
            f"{rate / floor_rate:.2f}x | {cpu:.2f} | {p99:.0f} | {'ok' if not wrong else 'WRONG'} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"floor": floors, "rows": rows}, indent=1))
    text = (
        f"Measured by `{command}` ({os.cpu_count()} cores, shared; medians of {args.repeats}, "
        f"interleaved; {args.n:,} records per forked worker). Floor: {floor_rate:,.0f} "
        f"records/s, {floor_cpu:.2f} µs CPU per call.\n\n"
        "| commit | host | P | records/s | x floor | worker CPU µs/call | p99 µs | check |\n"
        "|---|---|---:|---:|---:|---:|---:|---|\n" + "\n".join(table) + "\n"
    )
    print(text)
    if not args.out:
        block = f"{BEGIN}\n### Commits side by side\n\n{text}{END}"
        _sections.write(ROOT / "docs" / "benchmarks.md", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
