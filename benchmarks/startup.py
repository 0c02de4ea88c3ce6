"""What joining a funnel costs a child process, and what a funnel costs a program that starts many.

Usage::

    python benchmarks/startup.py              # ~1 min; rewrites its section of docs/benchmarks.md
    python benchmarks/startup.py --runs 50 --out /tmp/startup.md
    python benchmarks/startup.py --cpython-mp PYTHON   # also CPython's
        # test_multiprocessing_forkserver with and without `logfunnel run`, run by
        # PYTHON (an interpreter whose test package has it, with logfunnel installed;
        # 3.11's pyenv build here lacks it), ~3 min

Measured, each as the median of ``--runs`` fresh children, side by side in one run:

* **CPU of a child interpreter** (user + system, from ``wait4``'s rusage): ``python -c
  pass`` and a child that imports ``logging`` and logs one record, each without a
  funnel and with ``LOGFUNNEL_ADDRESS`` of a running one (``install(file=...)`` in
  this process), so the hook joins it;
* **what the funnel's modules cost at import** in the child that logs
  (``-X importtime``, the self times of ``logfunnel*`` and of the modules they
  alone bring in);
* **a process start + join** (``multiprocessing.Process``, an empty target) under
  fork and spawn, in a program without a funnel and one with ``install()``.

Bytecode is written once before measuring (``PYTHONDONTWRITEBYTECODE`` is unset
for the children), as it is for an installed package.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- startup:begin -->", "<!-- startup:end -->"

LOGS_ONCE = "import logging; logging.getLogger('child').warning('one record')"

PROCESS_STARTS = r"""
import multiprocessing, statistics, sys, time
def noop():
    pass
if __name__ == "__main__":
    method, runs, funnel = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if funnel == "yes":
        import logfunnel
        logfunnel.install(file=sys.argv[4])
    ctx = multiprocessing.get_context(method)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        times.append(time.perf_counter() - start)
    print(statistics.median(times) * 1000)
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def cpu_ms(argv: list[str], env: dict[str, str]) -> float:
    """Run ``argv`` and return its CPU time (user + system) in milliseconds."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def median_cpu(argv: list[str], env: dict[str, str], runs: int) -> float:
    cpu_ms(argv, env)  # writes bytecode, warms the page cache
    return statistics.median(cpu_ms(argv, env) for _ in range(runs))


def funnel_import_us(env: dict[str, str]) -> tuple[float, list[str]]:
    """Return the self time (µs) of the modules only a joined child imports, and their names."""
    def importtime(extra: dict[str, str]) -> dict[str, int]:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", LOGS_ONCE],
            env={**child_env(), **extra}, capture_output=True, text=True, check=True,
        ).stderr
        times: dict[str, int] = {}
        for line in out.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if m:
                times[m.group(2)] = int(m.group(1))
        return times

    importtime(env)
    plain = importtime({})
    joined = min((importtime(env) for _ in range(5)), key=lambda t: sum(t.values()))
    only = sorted(set(joined) - set(plain))
    return sum(joined[m] for m in only), only


def process_starts(method: str, runs: int, funnel: bool, tmp: str) -> float:
    script = Path(tmp) / "starts.py"
    script.write_text(PROCESS_STARTS)
    out = subprocess.run(
        [sys.executable, str(script), method, str(runs), "yes" if funnel else "no",
         str(Path(tmp) / "starts.log")],
        env=child_env(), capture_output=True, text=True, check=True, timeout=600,
    )
    return float(out.stdout.strip().splitlines()[-1])


def cpython_mp(python: str, tmp: str) -> tuple[float, float]:
    """Wall seconds of CPython's forkserver multiprocessing tests, without and with the funnel."""
    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, env=child_env(), cwd=tmp, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
        return time.perf_counter() - start

    test = ["-m", "test", "test_multiprocessing_forkserver"]
    plain = timed([python, *test])
    funneled = timed([python, "-m", "logfunnel", "run", *test])
    return plain, funneled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--cpython-mp", metavar="PYTHON", help="also time CPython's mp tests")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import logfunnel  # noqa: PLC0415

    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        funnel = logfunnel.install(file=os.path.join(tmp, "bench.log"))
        joined = child_env(**{k: v for k, v in os.environ.items() if k.startswith("LOGFUNNEL_")})
        plain = child_env()
        idle = (median_cpu([sys.executable, "-c", "pass"], plain, args.runs),
                median_cpu([sys.executable, "-c", "pass"], joined, args.runs))
        once = (median_cpu([sys.executable, "-c", LOGS_ONCE], plain, args.runs),
                median_cpu([sys.executable, "-c", LOGS_ONCE], joined, args.runs))
        imported_us, modules = funnel_import_us(joined)
        funnel.shutdown()
        starts = {
            (method, with_funnel): process_starts(method, max(10, args.runs), with_funnel, tmp)
            for method in ("fork", "spawn")
            for with_funnel in (False, True)
        }
        mp = cpython_mp(args.cpython_mp, tmp) if args.cpython_mp else None
    idle_row = (
        f"| `python -c pass` (never logs), CPU ms | {idle[0]:.1f} | {idle[1]:.1f} | "
        f"{idle[1] - idle[0]:+.1f} |"
    )
    once_row = (
        f"| imports `logging`, logs one record, CPU ms | {once[0]:.1f} | {once[1]:.1f} | "
        f"{once[1] - once[0]:+.1f} |"
    )
    names = ", ".join(f"`{m}`" for m in modules)
    rows += [
        "| child process | without a funnel | joined to a funnel | difference |",
        "|---|---|---|---|",
        idle_row,
        once_row,
        "",
        (
            f"Modules only the joined child that logs imports: {names} -- "
            f"{imported_us / 1000:.2f} ms of import time in all (`-X importtime`, self times)."
        ),
        "",
        "| process start + join | without a funnel | with `install(file=...)` | ratio |",
        "|---|---|---|---|",
    ]
    for method in ("fork", "spawn"):
        a, b = starts[(method, False)], starts[(method, True)]
        rows.append(f"| `{method}`, ms | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    if mp is not None:
        mp_line = (
            f"CPython's `test_multiprocessing_forkserver` (run by `{args.cpython_mp}`): "
            f"{mp[0]:.0f} s without logfunnel, {mp[1]:.0f} s under `logfunnel run` "
            f"({mp[1] / mp[0]:.2f}x)."
        )
        rows += ["", mp_line]
    command = "python benchmarks/startup.py" + (
        f" --cpython-mp {args.cpython_mp}" if args.cpython_mp else ""
    )
    heading = (
        f"`{command}`, medians of {args.runs} children, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores:"
    )
    section = "\n".join([BEGIN, "## Joining and process start-up", "", heading, "", *rows, END])
    print(section)
    _sections.write(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
