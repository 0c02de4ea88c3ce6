"""What rotating a 100 MB file costs a logging call, with and without gzip compression.

Usage::

    python benchmarks/rotation.py             # ~3 min; rewrites its section of docs/benchmarks.md
    python benchmarks/rotation.py --repeats 1 --out /tmp/rotation.md

For each host (``thread``, ``process``) and ``compress`` (None, ``"gzip"``), a fresh
interpreter installs a funnel with ``file=app.log, max_bytes=100 MB, backups=3``
on a file already filled to just under 100 MB, then logs ``--records`` records
from its main thread at ``--rate`` records/s (paced every 100 records), timing
each ``logger.info`` call with ``perf_counter_ns``.  The file rotates a few
thousand records in; with gzip the 100 MB rotated file is compressed (in a child
process the writer's worker thread starts) while the program goes on logging.

Reported, as medians over ``--repeats`` runs: the p50 and p99 of the calls in
the window that starts with the call that rotated and lasts ``--window`` s
(which covers the compression: its duration is reported too), the largest
call in it, and the ratio of p99 with gzip to p99 without.
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

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- rotation:begin -->", "<!-- rotation:end -->"
SIZE = 100_000_000

PROGRAM = r"""
import json, logging, os, sys, time
import logfunnel
path, host, compress, records, rate, size = sys.argv[1:7]
records, rate, size = int(records), float(rate), int(size)
funnel = logfunnel.install(
    file=path, fmt="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    max_bytes=size, backups=3, compress=compress if compress != "none" else None,
    host=host, level="INFO",
)
log = logging.getLogger("bench.rotation")
payload = "x" * 60
times = [0] * records
rotated_at = compressed_at = None
ns = time.perf_counter_ns
start = time.perf_counter()
for i in range(records):
    if i % 100 == 0:
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing: a steady rate, not a flood
        if rotated_at is None and os.path.exists(path + ".1"):
            rotated_at = (i, time.perf_counter())
        if compressed_at is None and os.path.exists(path + ".1.gz"):
            compressed_at = (i, time.perf_counter())
    t0 = ns()
    log.info("record %d %s", i, payload)
    times[i] = ns() - t0
assert funnel.flush(timeout=60)
deadline = time.monotonic() + 120
while compress != "none" and compressed_at is None:
    if os.path.exists(path + ".1.gz"):
        compressed_at = (records, time.perf_counter())
    assert time.monotonic() < deadline, "no .gz"
    time.sleep(0.01)
funnel.shutdown()
print(json.dumps({"times": times, "rotated_at": rotated_at, "compressed_at": compressed_at}))
"""


def prefill(path: Path, size: int) -> None:
    """Fill ``path`` with log-like lines (compressible as logs are) up to ``size`` bytes."""
    block = "".join(
        f"2026-12-02 02:00:00,{i % 1000:03d} 4242 bench.fill INFO filler {i} "
        f"{os.urandom(8).hex()} {'y' * 40}\n"
        for i in range(8000)
    ).encode()
    with path.open("wb") as out:
        written = 0
        while written + len(block) <= size:
            out.write(block)
            written += len(block)
        out.write(block[: size - written])


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def one_run(host: str, compress: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rotation-bench-") as directory:
        path = Path(directory) / "app.log"
        # Rotation comes after the file grows by this much (records of ~110 bytes).
        prefill(path, SIZE - 110 * args.lead)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
        proc = subprocess.run(
            [
                sys.executable, "-c", PROGRAM, str(path), host, compress,
                str(args.records), str(args.rate), str(SIZE),
            ],
            capture_output=True, text=True, timeout=600, env=env, check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{host}/{compress}: the program failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    times: list[int] = result["times"]
    if result["rotated_at"] is None:
        raise SystemExit(f"{host}/{compress}: the file never rotated")
    first = max(0, result["rotated_at"][0] - 100)  # seen at most 100 calls after it happened
    window = times[first : first + int(args.window * args.rate)]
    compressed = (
        result["compressed_at"][1] - result["rotated_at"][1]
        if result["compressed_at"] is not None
        else float("nan")
    )
    return {
        "p50": percentile(window, 0.50),
        "p99": percentile(window, 0.99),
        "max": max(window) / 1000.0,
        "compress_s": compressed,
        "calls": len(window),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=160_000)
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument("--lead", type=int, default=20_000, help="records before rotation")
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured from it")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    load = os.getloadavg()
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for host in ("thread", "process"):
        for compress in ("none", "gzip"):
            runs = [one_run(host, compress, args) for _ in range(args.repeats)]
            medians[(host, compress)] = {
                key: statistics.median(run[key] for run in runs) for key in runs[0]
            }
            print(host, compress, medians[(host, compress)], file=sys.stderr)
    rows = [
        "| host | compress | p50 µs | p99 µs | max µs | p99 ratio gzip/none | gzip took, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for host in ("thread", "process"):
        base = medians[(host, "none")]["p99"]
        for compress in ("none", "gzip"):
            m = medians[(host, compress)]
            ratio = f"{m['p99'] / base:.2f}x" if compress == "gzip" else ""
            took = f"{m['compress_s']:.1f}" if compress == "gzip" else ""
            rows.append(
                f"| `{host}` | {compress} | {m['p50']:.1f} | {m['p99']:.1f} | {m['max']:.0f} "
                f"| {ratio} | {took} |"
            )
    heading = (
        f"`python benchmarks/rotation.py`, medians of {args.repeats} runs, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cores shared with other test runs. A "
        f"program logs {args.rate:,.0f} records/s from its main thread into "
        f"`install(file=..., max_bytes=100 MB, backups=3)` on a file just under 100 MB; "
        f"measured: each `logger.info` call in the {args.window:.0f} s from the one that "
        f"rotated ({int(args.window * args.rate):,} calls), without and with "
        f'`compress="gzip"` (which compresses the 100 MB rotated file meanwhile, in a child '
        f"process the writer's worker thread starts). Load average when it began: "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}."
    )
    section = "\n".join([BEGIN, "## Rotation", "", heading, "", *rows, END])
    print(section)
    _sections.write(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
