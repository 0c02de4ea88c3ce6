"""Which host should install(file=...) pick?  Both, side by side, in one run.

Usage::

    python benchmarks/default_host.py   # ~5 min; rewrites its section of docs/benchmarks.md
    python benchmarks/default_host.py --repeats 3 --out /tmp/default_host.md

Measured for ``host="thread"`` and ``host="process"``, interleaved, each run a
fresh interpreter, medians of ``--repeats``:

* **records/s** of P=2 forked workers logging N records each (the README's
  ``install(file=..., fmt=...)``), from their start until a ``flush()`` barrier
  after they exited, while the installing process **waits** (sleeps in 1 ms
  steps) and while it **computes** (a pure-Python loop, as a pool's parent that
  merges results or a training loop does).  Every line is checked: each
  (worker, seq) once, whole.
* **install() and shutdown()**: wall time of each, in a program that logs one
  record between them (bytecode written beforehand, as for an installed
  package).
* **threads** of the installing process after install() (``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _sections

ROOT = Path(__file__).resolve().parent.parent
NAME = "default-host"

RUN = r"""
import json, logging, multiprocessing, os, sys, time
import logfunnel
host, busy, n, out = sys.argv[1], sys.argv[2] == "busy", int(sys.argv[3]), sys.argv[4]
FMT = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"

def work(i):
    log = logging.getLogger("w")
    for j in range(n):
        log.info("task %d step %d value=%s", i, j, "x" * 60)

def threads():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])

funnel = logfunnel.install(file=out, fmt=FMT, level="INFO", host=host)
count = threads()
ctx = multiprocessing.get_context("fork")
start = time.perf_counter()
procs = [ctx.Process(target=work, args=(i,)) for i in range(2)]
for p in procs:
    p.start()
x = 0
while any(p.is_alive() for p in procs):
    if busy:
        for k in range(20000):
            x += k * k
    else:
        time.sleep(0.001)
assert funnel.flush(timeout=120)
elapsed = time.perf_counter() - start
funnel.shutdown()
print(json.dumps({"rate": 2 * n / elapsed, "threads": count}))
"""

LIFECYCLE = r"""
import json, logging, sys, time
t0 = time.perf_counter()
import logfunnel
t1 = time.perf_counter()
funnel = logfunnel.install(file=sys.argv[2], host=sys.argv[1])
t2 = time.perf_counter()
logging.getLogger("one").warning("one record")
funnel.shutdown()
t3 = time.perf_counter()
print(json.dumps({"install": t2 - t1, "shutdown": t3 - t2}))
"""


def _python(code: str, *args: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _check(path: Path, n: int) -> str:
    seen: set[tuple[str, str]] = set()
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) != 10 or parts[-1] != "value=" + "x" * 60:
            bad += 1
            continue
        seen.add((parts[6], parts[8]))
    lost = 2 * n - len(seen)
    return "ok" if lost == 0 and bad == 0 else f"WRONG (lost {lost}, torn {bad})"


def main() -> None:
    """Run every measurement, interleaved, and write the section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000, help="records per worker")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    hosts, modes = ("thread", "process"), ("waits", "computes")
    rates: dict[tuple[str, str], list[float]] = {(h, m): [] for h in hosts for m in modes}
    checks: dict[tuple[str, str], set[str]] = {key: set() for key in rates}
    threads: dict[str, set[int]] = {h: set() for h in hosts}
    phases = ("install", "shutdown")
    life: dict[tuple[str, str], list[float]] = {(h, k): [] for h in hosts for k in phases}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for host in hosts if repeat % 2 == 0 else hosts[::-1]:
                for mode in modes:
                    out = Path(tmp) / f"{host}-{mode}-{repeat}.log"
                    busy = "busy" if mode == "computes" else "idle"
                    result = _python(RUN, host, busy, str(args.n), str(out))
                    rates[host, mode].append(result["rate"])
                    threads[host].add(int(result["threads"]))
                    checks[host, mode].add(_check(out, args.n))
                    out.unlink()
                for _ in range(3):
                    result = _python(LIFECYCLE, host, str(Path(tmp) / "life.log"))
                    life[host, "install"].append(result["install"])
                    life[host, "shutdown"].append(result["shutdown"])
    minutes = (time.time() - started) / 60
    load = os.getloadavg()[0]
    rows = [
        (
            "| host | records/s, installer waits | records/s, installer computes | "
            "computes / waits | install() ms | shutdown() ms | installer threads | check |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for host in hosts:
        waits = statistics.median(rates[host, "waits"])
        computes = statistics.median(rates[host, "computes"])
        check = " ".join(sorted(checks[host, "waits"] | checks[host, "computes"]))
        rows.append(
            f"| **{host}** | {waits:,.0f} | {computes:,.0f} | {computes / waits:.2f}x | "
            f"{statistics.median(life[host, 'install']) * 1000:.0f} | "
            f"{statistics.median(life[host, 'shutdown']) * 1000:.0f} | "
            f"{', '.join(map(str, sorted(threads[host])))} | {check} |"
        )
    every = "; ".join(
        f"{h} {m}: " + ", ".join(f"{r:,.0f}" for r in rates[h, m]) for h in hosts for m in modes
    )
    begin, end = _sections.markers(NAME)
    section = "\n".join(
        [
            begin,
            "## Which host by default",
            "",
            (
                f"`python benchmarks/default_host.py --repeats {args.repeats}` "
                f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {minutes:.1f} min, Python "
                f"{sys.version.split()[0]}, {os.cpu_count()} cores shared with other work, load "
                f"average {load:.1f} at the end). P=2 forked workers x {args.n:,} records, "
                "`install(file=..., fmt=...)`, medians of "
                f"{args.repeats} fresh interpreters per cell, hosts interleaved; the installing "
                "process either waits for the workers or runs a pure-Python loop meanwhile. "
                "install()/shutdown(): wall time in a program that logs one record between them, "
                "bytecode cached."
            ),
            "",
            *rows,
            "",
            f"Every run: {every}.",
            "",
            (
                "A thread host's writer shares the installer's GIL: when the installer computes, "
                "the writer runs only when the interpreter switches threads (every 5 ms), the "
                "workers' socket buffers fill and they wait. A writer process has its own "
                "interpreter. That, and one thread fewer in the installer (no Python 3.12+ "
                '"multi-threaded ... fork()" warning on its forks), is why install() with its '
                "own sinks now starts a writer process; the price is the install() and shutdown() "
                "times above."
            ),
            end,
        ]
    )
    _sections.write(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
