"""Benchmark logfunnel against single-process logging and its multi-process peers, side by side.

Usage::

    pip install -e '.[bench]'            # the peers; any that are missing are skipped
    python benchmarks/run.py             # full run (~10-15 min on 2 cores), writes docs/
    python benchmarks/run.py --quick     # < 2 min, fewer records and repeats
    python benchmarks/run.py --repeats 3 --n 50000 --procs 1,2,4 --systems floor,logfunnel-thread
    python benchmarks/run.py --no-sweeps --no-plot --out /tmp/b.md --json /tmp/b.json

Companions: ``benchmarks/profile_hot_path.py`` times the hot paths piece by piece;
``benchmarks/whatif.py`` measures candidate src/ changes (``_patches.py``) end to end.

Every (system, P) run is a fresh ``python benchmarks/_one.py`` subprocess (see its
docstring for what is timed).  The runs of one repeat are shuffled (seeded) and
repeats follow each other, so slow drifts of the machine hit every system alike;
tables show medians over the repeats.  Ratios are to the floor measured in this
same invocation.  A run whose file has a lost, duplicated or torn record is marked
WRONG in every table, however fast it was.

Systems (P forked worker processes, each logging ``--n`` records, one file):

* ``floor``: one process with a plain FileHandler (P=1 only): what every multi-process
  system is compared to;
* ``ceiling``: raw os.write of a preformatted line to an O_APPEND file, no logging;
* ``inherited``: a FileHandler made in the parent and inherited by forked workers (unsafe);
* ``cookbook``: stdlib QueueHandler + multiprocessing.Queue + a listener process;
* ``mplogging``: multiprocessing-logging; ``loguru``: loguru ``enqueue=True``;
* ``clh``: concurrent-log-handler (each worker writes under a lock file);
* ``logfunnel-thread`` / ``logfunnel-process``: ``logfunnel.install(file=..., fmt=...,
  level="INFO", host=...)``, then ``Funnel.shutdown()``;
* ``logfunnel-adopt``: the floor's FileHandler on the root logger of the parent, then
  ``logfunnel.install()`` (adopt mode: the writer thread calls that handler).

Sweeps (skipped with ``--no-sweeps``): message size 100 B to 64 KB at P=2; the
logfunnel writer's CPU per record as connections grow to 64 processes; a sink 10x
slower than the producers (is the writer's memory flat?); and a 100,000-record
backlog built against a frozen writer, then drained at shutdown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ONE = HERE / "_one.py"
sys.path.insert(0, str(HERE))
import _one  # noqa: E402 - the benchmark's own module, beside this script

# One list of systems, _one.py's (it imports only the stdlib at the top).
ALL_SYSTEMS = _one.SYSTEMS
LOGFUNNEL = ("logfunnel-thread", "logfunnel-process")
# Peers that need a bench extra: skipped (and said so) when not installed.
NEEDS = {
    "mplogging": "multiprocessing_logging",
    "loguru": "loguru",
    "clh": "concurrent_log_handler",
}
LABELS = {
    "floor": "floor: 1 process, FileHandler",
    "ceiling": "ceiling: raw os.write, O_APPEND",
    "inherited": "inherited FileHandler (unsafe)",
    "cookbook": "cookbook QueueHandler + listener",
    "mplogging": "multiprocessing-logging",
    "loguru": "loguru enqueue=True",
    "clh": "concurrent-log-handler",
    "logfunnel-thread": "**logfunnel host=thread**",
    "logfunnel-process": "**logfunnel host=process**",
    "logfunnel-adopt": "**logfunnel adopt mode** (own FileHandler + `install()`)",
}
SIZES = (100, 1024, 8192, 65536)
SIZE_SYSTEMS = ("floor", "inherited", "cookbook", "logfunnel-thread", "logfunnel-process")
CONN_PROCS = (1, 4, 16, 64)
SLOW_SYSTEMS = ("cookbook", "logfunnel-thread", "logfunnel-process")


def size_records(n: int, size: int) -> int:
    """Records per worker in the size sweep: N x 1,000 / size bytes' worth, but at least N / 10.

    The bytes' worth keeps files small; the N / 10 keeps every run long enough to
    measure a rate.  At 64 KB the bytes' worth alone is 305 records: the floor's run
    lasted 11 ms on the Intel machine of docs/benchmarks.md and ~35 ms on a slower one,
    where a 4 ms time slice or a funnel's fixed costs (its first record's connection, ~2
    ms a worker; ``shutdown()`` waiting ~5 ms for the writer process to exit after the
    records are in the file) weigh as much as the rate.  ``_one.py`` at 64 KB, P=2,
    medians of 9 runs interleaved: 305 records per worker 0.78x the floor (process
    host), 0.74x (thread host, 5 runs); 2,000 records 1.04x and 1.06x.  That is
    the run length, not a cure: the floor's CPU per 64 KB call still takes one of two
    levels from run to run (65-69 or 90-107 µs there), and its ratio follows it.
    """
    return max(n // 10, min(n, n * 1000 // size))


def available(system: str) -> bool:
    module = NEEDS.get(system)
    return module is None or importlib.util.find_spec(module) is not None


# -- running ------------------------------------------------------------------------------


def child_env(logfunnel_src: str | None) -> dict[str, str]:
    """Return the environment of a run: no inherited funnel, logfunnel from ``logfunnel_src``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    if logfunnel_src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [logfunnel_src, env.get("PYTHONPATH")]))
    return env


def busy_cpu_s() -> float:
    """Return the CPU seconds every process on the machine has used since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """Return the CPU seconds of this process and of every child it has waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(
    job: dict[str, Any], workdir: str, timeout: float, env: dict[str, str]
) -> dict[str, Any]:
    """Run one ``_one.py`` subprocess; a crash or hang becomes a result marked with its error."""
    argv = [sys.executable, str(ONE), "--dir", workdir]
    for key in ("system", "procs", "n", "size", "mode", "slow_us", "fill_s", "patch"):
        if key in job:
            argv += [f"--{key.replace('_', '-')}", str(job[key])]
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:.0f} s (hung?)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {**job, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    # CPU that other processes on the machine used meanwhile, in cores: the run's own tree
    # (_one.py, its workers and writer, all waited for) is subtracted from the machine's.
    other = (busy_cpu_s() - busy0) - (own_cpu_s() - own0)
    result["other_cores"] = max(0.0, other) / (time.perf_counter() - t0)
    if proc.stderr.strip():
        result["stderr"] = proc.stderr.strip()[-500:]
    return result


def run_jobs(
    label: str, jobs: list[dict[str, Any]], repeats: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Run every job ``repeats`` times, shuffled within each repeat."""
    out: list[dict[str, Any]] = []
    total = len(jobs) * repeats
    done = 0
    env = child_env(args.logfunnel_src)
    with tempfile.TemporaryDirectory(prefix="logfunnel-bench-", dir=args.workdir) as workdir:
        for rep in range(repeats):
            order = list(jobs)
            random.Random(args.seed * 1000 + rep).shuffle(order)
            for job in order:
                t = time.perf_counter()
                result = run_one(job, workdir, args.timeout, env)
                result["repeat"] = rep
                out.append(result)
                done += 1
                status = result.get("error") or (
                    f"{result['rate']:>9,.0f} rec/s  lost={result['lost']} dup={result['dup']} "
                    f"torn={result['torn']}"
                )
                print(
                    f"[{label} {done}/{total}] {job['system']:<18} P={job['procs']:<2} "
                    f"size={job.get('size', 100):<5} {time.perf_counter() - t:5.1f}s  {status}",
                    file=sys.stderr,
                    flush=True,
                )
    return out


# -- aggregating --------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def summarize(results: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Median of every metric per (system, procs, size); error counts summed over repeats."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        # What-if runs (benchmarks/whatif.py) are told apart by their patch.
        system = r["system"] + (f"+{r['patch']}" if r.get("patch") else "")
        groups[(system, r["procs"], r.get("size", 100))].append(r)
    summary: dict[tuple[str, int, int], dict[str, Any]] = {}
    for key, runs in groups.items():
        ok = [r for r in runs if "error" not in r]
        errors = [r["error"] for r in runs if "error" in r]
        s: dict[str, Any] = {"runs": len(runs), "errors": errors}
        for metric in (
            "rate", "cpu_us_per_call", "p50_us", "p99_us", "worker_hwm_kib", "writer_hwm_kib",
            "drain_s", "backlog_drain_s", "writer_cpu_us_per_record", "wall_s",
            "finished_at_release",
        ):
            s[metric] = median(r.get(metric) for r in ok)
        if ok and ok[0].get("backlog_drain_s") is not None:
            s["backlog_drain_min"] = min(r["backlog_drain_s"] for r in ok)
            s["backlog_drain_max"] = max(r["backlog_drain_s"] for r in ok)
        for metric in ("lost", "dup", "torn", "other_lines"):
            s[metric] = sum(r.get(metric, 0) for r in ok)
        s["wrong"] = bool(s["errors"]) or s["lost"] + s["dup"] + s["torn"] > 0
        if ok and ok[0].get("writer_rss_series"):
            # The repeat with the median rate stands for the series shown.
            mid = sorted(ok, key=lambda r: r["rate"])[len(ok) // 2]
            series = mid["writer_rss_series"]
            s["rss_first"] = series[0][1]
            s["rss_last"] = series[-1][1]
            s["rss_max"] = max(v for _, v in series)
            s["rss_min"] = min(v for _, v in series)
        summary[key] = s
    return summary


# -- reporting ----------------------------------------------------------------------------


def fmt_num(value: float, digits: int = 0) -> str:
    if math.isnan(value):  # no data
        return "-"
    return f"{value:,.{digits}f}"


def mib(kib: float) -> str:
    return "-" if math.isnan(kib) or not kib else f"{kib / 1024:.1f}"


def verdict(s: dict[str, Any]) -> str:
    if s["errors"]:
        return f"**FAILED** ({s['errors'][0][:80]})"
    if s["wrong"]:
        return f"**WRONG** lost={s['lost']} dup={s['dup']} torn={s['torn']}"
    return "ok (0/0/0)"


def dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def export_rev(rev: str, into: str) -> tuple[str, str]:
    """Export ``src/`` of commit ``rev`` into ``into``; return (its src directory, full sha)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return os.path.join(into, "src"), sha


def logfunnel_source(logfunnel_src: str | None, sha: str | None) -> str:
    """Say which logfunnel the runs imported, and at which commit, so numbers can be traced."""
    where = subprocess.run(
        [sys.executable, "-c", "import logfunnel; print(logfunnel.__file__)"],
        capture_output=True, text=True, env=child_env(logfunnel_src), check=False,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    if sha is not None:
        return (
            f"- logfunnel: commit {sha[:12]}, exported with `git archive` "
            f"(imported from `{where}`)"
        )
    state = "with uncommitted changes in src/" if dirty else "clean src/"
    return f"- logfunnel imported from `{where}`; repository HEAD {head} ({state})"


def machine() -> list[str]:
    model, cpus = "?", 0
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                cpus += 1
    mem = "?"
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    dists = ("logfunnel", "msgpack", "multiprocessing-logging", "loguru", "concurrent-log-handler")
    versions = [f"{dist} {dist_version(dist)}" for dist in dists]
    return [
        f"- CPU: {model}, {cpus} logical CPUs in /proc/cpuinfo, `nproc` = {os.cpu_count()}",
        f"- Memory: {mem}; kernel {platform.release()}",
        (f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"start method fork"),
        f"- Versions: {', '.join(versions)}",
    ]


def main_tables(summary: dict[Any, dict[str, Any]], systems: list[str], procs: list[int],
                size: int) -> list[str]:
    floor = summary.get(("floor", 1, size))
    floor_rate = floor["rate"] if floor else float("nan")
    floor_cpu = floor["cpu_us_per_call"] if floor else float("nan")
    out = [
        "### Aggregate throughput: records/s (ratio to the floor)",
        "",
        "| system | " + " | ".join(f"P={p}" for p in procs) + " | lost/dup/torn, all runs |",
        "|---|" + "---:|" * len(procs) + "---|",
    ]
    for system in systems:
        cells = []
        verdicts = []
        for p in procs:
            s = summary.get((system, p, size))
            if s is None:
                cells.append("")
                continue
            mark = " **WRONG**" if s["wrong"] else ""
            cells.append(f"{fmt_num(s['rate'])} ({s['rate'] / floor_rate:.2f}x){mark}")
            verdicts.append(s)
        worst = next((v for v in verdicts if v["wrong"]), verdicts[0] if verdicts else None)
        out.append(
            f"| {LABELS[system]} | " + " | ".join(cells)
            + f" | {verdict(worst) if worst else ''} |"
        )
    out += ["", "### Per-call cost, latency, memory, drain (medians)", ""]
    header = (
        "| system | P | records/s | x floor | worker CPU µs/call | x floor | p50 µs | p99 µs "
        "| worker peak RSS MiB | writer peak RSS MiB | shutdown drain s | check |"
    )
    out += [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in procs:
        for system in systems:
            s = summary.get((system, p, size))
            if s is None:
                continue
            out.append(
                f"| {LABELS[system]} | {p} | {fmt_num(s['rate'])} | {s['rate'] / floor_rate:.2f} "
                f"| {fmt_num(s['cpu_us_per_call'], 2)} | {s['cpu_us_per_call'] / floor_cpu:.2f} "
                f"| {fmt_num(s['p50_us'], 1)} | {fmt_num(s['p99_us'], 1)} "
                f"| {mib(s['worker_hwm_kib'])} | {mib(s['writer_hwm_kib'])} "
                f"| {fmt_num(s['drain_s'], 3)} | {verdict(s)} |"
            )
    return out


def targets(data: dict[str, Any], size: int) -> list[str]:
    """Issue 14's targets, each marked yes or no from this run's medians."""
    summary, procs = data["main"], data["procs"]
    floor = summary.get(("floor", 1, size))
    if floor is None:
        return []

    def mark(ok: bool, text: str) -> str:
        return f"{'yes' if ok else 'no'} ({text})"

    out = [
        "### logfunnel against the issue's targets",
        "",
        "| system | P | aggregate ≥ 1.8x floor (P ≥ 2) | worker CPU ≤ 1.0x floor | p99 ≤ 100 µs |",
        "|---|---:|---|---|---|",
    ]
    for system in LOGFUNNEL:
        for p in procs:
            s = summary.get((system, p, size))
            if s is None:
                continue
            r = s["rate"] / floor["rate"]
            c = s["cpu_us_per_call"] / floor["cpu_us_per_call"]
            p99 = s["p99_us"]
            aggregate = mark(r >= 1.8, f"{r:.2f}x") if p >= 2 else f"- ({r:.2f}x)"
            out.append(
                f"| {LABELS[system]} | {p} | {aggregate} | {mark(c <= 1.0, f'{c:.2f}x')} "
                f"| {mark(p99 <= 100, f'{p99:.0f} µs')} |"
            )
    others: list[str] = []
    for system in LOGFUNNEL:
        conn = [v for (sy, _p, _z), v in (data.get("conn") or {}).items() if sy == system]
        if conn:
            worst = max(v["writer_cpu_us_per_record"] for v in conn)
            others.append(
                f"| {LABELS[system]} | writer CPU ≤ 1 µs per record, 1 to 64 connections "
                f"| {mark(worst <= 1.0, f'worst {worst:.1f} µs')} |"
            )
        for big in (8192, 65536):
            s = (data.get("size") or {}).get((system, data.get("size_procs", 2), big))
            f = (data.get("size") or {}).get(("floor", 1, big))
            if s and f:
                r = s["rate"] / f["rate"]
                others.append(
                    f"| {LABELS[system]} | {big // 1024} KB records ≥ 1.0x floor "
                    f"| {mark(r >= 1.0, f'{r:.2f}x')} |"
                )
        s = (data.get("backlog") or {}).get((system, data.get("backlog_procs", 4), size))
        if s:
            d = s["backlog_drain_s"]
            drained = mark(d < 0.5, f"{d:.2f} s")
            backlog = data.get("backlog_procs", 4) * data.get("backlog_n", 0)
            what = f"backlog of {backlog:,} drains < 0.5 s"
            others.append(f"| {LABELS[system]} | {what} | {drained} |")
    for p in (2, 4):
        s = summary.get(("logfunnel-adopt", p, size))
        if s:
            r = s["rate"] / floor["rate"]
            met = mark(r >= 1.15, f"{r:.2f}x")
            others.append(f"| {LABELS['logfunnel-adopt']} | P={p}: ≥ 1.15x floor | {met} |")
    if others:
        out += ["", "| system | target | met |", "|---|---|---|", *others]
    unsafe = summary.get(("inherited", data.get("backlog_procs", 4), size))
    if unsafe and data.get("backlog"):
        procs_b = data.get("backlog_procs", 4)
        backlog = procs_b * data.get("backlog_n", 0)
        seconds = backlog / unsafe["rate"]
        out += [
            "",
            (
                f"For the backlog: the unsafe inherited FileHandler needs {seconds:.2f} s to "
                f"write {backlog:,} records from {procs_b} processes at all (its P={procs_b} "
                "rate in the main runs). The backlog is produced after the release (workers "
                "block on full pipes), so < 0.5 s asks the producers to beat that."
            ),
        ]
    return out


def grid_table(
    title: str,
    corner: str,
    columns: list[int],
    heads: list[str],
    systems: list[str],
    find: Callable[[str, int], dict[str, Any] | None],
    cell: Callable[[str, int, dict[str, Any]], str],
) -> list[str]:
    """A table of one row per system and one cell per column; a wrong run is marked."""
    out = [title, "", f"| {corner} | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for system in systems:
        cells = []
        for column in columns:
            s = find(system, column)
            if s is None:
                cells.append("")
            else:
                cells.append(cell(system, column, s) + (" **WRONG**" if s["wrong"] else ""))
        out.append(f"| {LABELS[system]} | " + " | ".join(cells) + " |")
    return out


def size_table(summary: dict[Any, dict[str, Any]], systems: list[str], sizes: list[int],
               procs: int) -> list[str]:
    def cell(_system: str, size: int, s: dict[str, Any]) -> str:
        f = summary.get(("floor", 1, size))
        ratio = s["rate"] / f["rate"] if f else float("nan")
        return f"{fmt_num(s['rate'])} ({ratio:.2f}x), {fmt_num(s['cpu_us_per_call'], 1)} µs"

    return grid_table(
        (f"### Message size (P={procs}; floor P=1): records/s (x floor at that size), "
         "worker CPU µs/call"),
        "system", sizes, [f"{s:,} B" for s in sizes], systems,
        lambda system, size: summary.get((system, 1 if system == "floor" else procs, size)),
        cell,
    )


def conn_table(summary: dict[Any, dict[str, Any]], procs: list[int], total: int) -> list[str]:
    return grid_table(
        (f"### Writer CPU per record as connections grow ({total:,} records in all, "
         "split over P processes)"),
        "writer", procs, [f"P={p}" for p in procs], list(LOGFUNNEL),
        lambda system, p: summary.get((system, p, 100)),
        lambda _system, _p, s: (
            f"{fmt_num(s['writer_cpu_us_per_record'], 1)} µs/rec, {fmt_num(s['rate'])} rec/s"
        ),
    )


def slow_table(summary: dict[Any, dict[str, Any]], procs: int, slow_us: float) -> list[str]:
    out = [
        (f"### A sink slower than the producers (a handler burning {slow_us:.0f} µs/record, "
        f"P={procs})"),
        "",
        ("| system | records/s | writer RSS MiB first / min / max / last sample "
        "| writer peak RSS MiB | worker peak RSS MiB | p99 µs | check |"),
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for system in SLOW_SYSTEMS:
        s = summary.get((system, procs, 100))
        if s is None:
            continue
        series = " / ".join(mib(s.get(k, float("nan"))) for k in
                            ("rss_first", "rss_min", "rss_max", "rss_last"))
        out.append(
            f"| {LABELS[system]} | {fmt_num(s['rate'])} | {series} | {mib(s['writer_hwm_kib'])} "
            f"| {mib(s['worker_hwm_kib'])} | {fmt_num(s['p99_us'], 0)} | {verdict(s)} |"
        )
    return out


def backlog_table(summary: dict[Any, dict[str, Any]], procs: int, n: int, fill: float) -> list[str]:
    out = [
        (f"### Backlog drain: {procs * n:,} records logged by {procs} processes against a frozen "
        f"writer ({fill:.1f} s to fill), then released"),
        "",
        "| system | drain s, median (min-max) | workers done at release | check |",
        "|---|---:|---:|---|",
    ]
    for system in LOGFUNNEL:
        s = summary.get((system, procs, 100))
        if s is None:
            continue
        out.append(
            f"| {LABELS[system]} | {s['backlog_drain_s']:.3f} ({s.get('backlog_drain_min', 0):.3f}"
            f"-{s.get('backlog_drain_max', 0):.3f}) | {s['finished_at_release']:.0f} of {procs} "
            f"| {verdict(s)} |"
        )
    return out


def plot(path: Path, data: dict[str, Any]) -> bool:
    try:
        import matplotlib as mpl  # noqa: PLC0415 - a bench extra, optional

        mpl.use("Agg")  # no display on a build machine
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return False
    main_s, procs, systems = data["main"], data["procs"], data["systems"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    floor = main_s.get(("floor", 1, 100))
    for system in systems:
        if system == "floor":
            continue
        xs = [p for p in procs if (system, p, 100) in main_s]
        ys = [main_s[(system, p, 100)]["rate"] for p in xs]
        style = "-o" if system in LOGFUNNEL else "--."
        ax.plot(xs, ys, style, label=LABELS[system].strip("*"), linewidth=2.5 if
                system in LOGFUNNEL else 1)
    if floor:
        ax.axhline(floor["rate"], color="k", linestyle=":", label="floor (1 process)")
    ax.set(xlabel="worker processes P", ylabel="records/s (aggregate)", yscale="log",
           title="Aggregate throughput (median)")
    ax.set_xticks(procs)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for system in systems:
        xs = [p for p in procs if (system, p, 100) in main_s]
        ys = [main_s[(system, p, 100)]["cpu_us_per_call"] for p in xs]
        ax.plot(xs, ys, "-o" if system in LOGFUNNEL else "--.", label=LABELS[system].strip("*"))
    ax.set(xlabel="worker processes P", ylabel="µs CPU per logging call (in the worker)",
           title="In-worker CPU per call (median)")
    ax.set_xticks(procs)
    ax.legend(fontsize=7)
    ax = axes[1][0]
    size_s = data.get("size") or {}
    for system in SIZE_SYSTEMS:
        p = 1 if system == "floor" else data["size_procs"]
        xs = [s for s in data["sizes"] if (system, p, s) in size_s]
        if xs:
            ax.plot(xs, [size_s[(system, p, s)]["rate"] for s in xs], "-o",
                    label=LABELS[system].strip("*") + ("" if system == "floor" else f", P={p}"))
    ax.set(xlabel="message size, bytes", ylabel="records/s", xscale="log", yscale="log",
           title="Throughput vs message size")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    conn_s = data.get("conn") or {}
    for system in LOGFUNNEL:
        xs = [p for p in data["conn_procs"] if (system, p, 100) in conn_s]
        if xs:
            ax.plot(xs, [conn_s[(system, p, 100)]["writer_cpu_us_per_record"] for p in xs], "-o",
                    label=LABELS[system].strip("*"))
    ax.set(xlabel="connected processes", ylabel="writer CPU µs per record", xscale="log",
           title="logfunnel writer cost vs connections")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.suptitle(data["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


#: Sections another benchmark writes into the same page (``benchmarks/startup.py``),
#: each between its markers and naming its own command; a new report keeps them.
#: A section another benchmark writes (startup, context, rotation, writer-lines...):
#: ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``, kept when this report is rewritten.
_SECTION = re.compile(r"<!-- ([a-z0-9-]+):begin -->.*?<!-- \1:end -->", re.DOTALL)


def kept_sections(out: Path) -> str:
    """Return the sections of ``out`` that other benchmarks wrote, to append to a new report."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    kept = "".join("\n\n" + match.group(0) for match in _SECTION.finditer(text))
    return kept + "\n"


def write_report(args: argparse.Namespace, data: dict[str, Any], command: str,
                 elapsed: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        ("Produced by one invocation of `benchmarks/run.py` (see its docstring for the method); "
        "every number on this page comes from that one run, except in sections that name "
        "another command."),
        "",
        "```",
        command,
        "```",
        "",
        (f"Finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} after "
        f"{elapsed / 60:.1f} min."),
        "",
        "## Machine",
        "",
        *machine(),
        data["source"],
        (
            f"- Other work on the machine: during the runs, processes other than the "
            f"benchmark's own used a median of {data['other_median']:.2f} and at most "
            f"{data['other_max']:.2f} of the {os.cpu_count()} cores (from /proc/stat minus the "
            "runs' own CPU). That skews absolute numbers; interleaving keeps ratios fair."
        ),
        "",
        "## Method",
        "",
        (f'- P forked worker processes each log {args.n:,} records (`logger.info("task %d step '
        '%d value=%s", i, j, s)`, a ~100-byte message) to one file with format '
        "`%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s` "
        "(loguru: the same fields in its own format syntax). The default N is 20,000 (the "
        "issue measured 50,000) to keep the full run under ~20 minutes on 2 cores."),
        ("- **records/s** = P x N / wall time, from releasing the (already set up, waiting) "
        "workers until the last record is in the file: workers exited *and* the writer "
        "drained and closed (`Funnel.shutdown()`, the listener's join, `logger.remove()`...). "
        "Nothing calls fsync, for any system."),
        (f"- Medians of {args.repeats} repeats; each (system, P) is a fresh interpreter "
        "(`benchmarks/_one.py`), runs shuffled within a repeat. Ratios are to the **floor** "
        "(one process, plain FileHandler) of this same invocation."),
        ("- **worker CPU µs/call** = `time.process_time()` over a worker's logging loop / N "
        "(all threads of the worker, so a queue's feeder thread counts). **p50/p99** = "
        "`perf_counter_ns` around every k-th call (≈2,500 samples per worker), pooled."),
        ("- **Peak RSS** = VmHWM from /proc: workers' own, the largest; writer = the process that "
        "writes the file (the parent for thread-hosted writers, the listener / writer process "
        "otherwise; sampled every 50 ms). **shutdown drain** = time from the last worker's exit "
        "until the file is complete and closed."),
        ("- Every line of every run's file is checked: each (worker, seq) exactly once, each line "
        "whole with its payload intact. `check` sums lost/dup/torn over all repeats; a fast "
        "wrong answer is marked **WRONG**."),
        "",
        "## Results",
        "",
        *main_tables(data["main"], data["systems"], data["procs"], 100),
        "",
        *targets(data, 100),
        "",
    ]
    if data.get("size"):
        lines += [*size_table(data["size"], [s for s in SIZE_SYSTEMS if s in data["systems"]],
                              data["sizes"], data["size_procs"]), "",
                  ("Records per worker shrink with size (N x 1,000 / size, at least N / 10: "
                   "2,000 of 64 KB at the default N) to keep files small and runs long enough "
                   "to time."), ""]
    if data.get("conn"):
        lines += [*conn_table(data["conn"], data["conn_procs"], data["conn_total"]), "",
                  ("Writer CPU = utime+stime of the writer thread (/proc/self/task/<tid>/stat) or "
                  "writer process, from the release of the workers to a `Funnel.flush()` barrier "
                  "after they exited, divided by the records (10 ms clock-tick resolution)."), ""]
    if data.get("slow"):
        lines += [*slow_table(data["slow"], data["slow_procs"], args.slow_us), "",
                  ("The writer's RSS is sampled every 50 ms during the run. logfunnel's "
                  "backpressure is each process's pipe (256 KiB, grown to 1 MiB when it fills, "
                  "kernel memory): producers wait for room "
                  "when the writer is behind, so no process buffers an unbounded backlog."), ""]
    if data.get("backlog"):
        lines += [*backlog_table(data["backlog"], data["backlog_procs"], data["backlog_n"],
                                 args.fill_s), "",
                  ("The writer is frozen (SIGSTOP for host=process; for host=thread the "
                  "benchmark holds its sinks' locks; both with install()'s own sinks, as in "
                  "the main runs) while the workers log; they fill the "
                  "pipes (256 KiB, grown to 1 MiB when full: ~9,000 records each) and then "
                  "block, so most of the 100,000 records are logged after the release. "
                  "Drain = from releasing the writer until `Funnel.shutdown()` returns "
                  "with every record in the file."), ""]
    lines += ["## Plot", "", f"![benchmarks]({Path(args.plot).name})", ""]
    # The hand-written account of what changed the numbers, kept across runs.
    notes = Path(__file__).with_name("what-moved.md")
    if notes.exists():
        lines += ["", notes.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer records and repeats (< 2 min)")
    p.add_argument("--repeats", type=int, help="repeats of the main matrix (default 6; quick 2)")
    p.add_argument("--n", type=int, help="records per worker (default 20,000; quick 4,000)")
    p.add_argument("--procs", default="1,2,4,8", help="worker counts, comma-separated")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma-separated")
    p.add_argument("--no-sweeps", action="store_true", help="only the main matrix")
    p.add_argument("--slow-us", type=float, default=100.0,
                   help="slow sink's CPU per record (~10x a producer's call)")
    p.add_argument("--fill-s", type=float, default=1.0, help="backlog: time to let it build")
    p.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--workdir", default=None, help="where log files go (default: $TMPDIR)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "benchmarks.png"))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--logfunnel-rev",
        default=None,
        help="measure the logfunnel of this git commit (exported with git archive), not the\n"
        "working tree: numbers stay traceable while src/ is being edited",
    )
    p.add_argument(
        "--logfunnel-src",
        default=None,
        help="a directory holding the logfunnel package to measure (put first on PYTHONPATH),\n"
        "e.g. an export of a commit, while src/ is being edited",
    )
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 6)
    args.n = args.n or (4_000 if args.quick else 20_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    sha = None
    export_dir = None
    if args.logfunnel_rev:
        export_dir = tempfile.TemporaryDirectory(prefix="logfunnel-rev-")
        args.logfunnel_src, sha = export_rev(args.logfunnel_rev, export_dir.name)
    procs = [int(x) for x in args.procs.split(",")]
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(wanted) - set(ALL_SYSTEMS)
    if unknown:
        print(f"unknown systems: {sorted(unknown)}; choose from {ALL_SYSTEMS}", file=sys.stderr)
        return 2
    systems = [s for s in ALL_SYSTEMS if s in wanted and available(s)]
    for s in wanted:
        if s not in systems:
            print(f"skipping {s}: {NEEDS[s]} is not installed (pip install -e '.[bench]')",
                  file=sys.stderr)
    jobs = [
        {"system": s, "procs": 1 if s == "floor" else p, "n": args.n, "size": 100}
        for s in systems
        for p in (procs[:1] if s == "floor" else procs)
    ]
    raw: dict[str, list[dict[str, Any]]] = {}
    raw["main"] = run_jobs("main", jobs, args.repeats, args)
    sweep_repeats = max(1, (args.repeats + 1) // 2)
    sizes = [100, 8192, 65536] if args.quick else list(SIZES)
    size_procs = 2
    conn_procs = [1, 16, 64] if args.quick else list(CONN_PROCS)
    conn_total = max(conn_procs) * max(50, args.n // 20)
    slow_procs, backlog_procs = 4, 4
    backlog_total = 20_000 if args.quick else 100_000
    if not args.no_sweeps:
        size_jobs = [
            {"system": s, "procs": 1 if s == "floor" else size_procs,
             "n": size_records(args.n, size), "size": size}
            for s in SIZE_SYSTEMS if s in systems
            for size in sizes
        ]
        raw["size"] = run_jobs("size", size_jobs, sweep_repeats, args)
        lf = [s for s in LOGFUNNEL if s in systems]
        conn_jobs = [
            {"system": s, "procs": p, "n": conn_total // p, "size": 100, "mode": "conn"}
            for s in lf for p in conn_procs
        ]
        raw["conn"] = run_jobs("conn", conn_jobs, sweep_repeats, args)
        slow_jobs = [
            {"system": s, "procs": slow_procs, "n": max(500, args.n // 4), "size": 100,
             "mode": "slow", "slow_us": args.slow_us}
            for s in SLOW_SYSTEMS if s in systems
        ]
        raw["slow"] = run_jobs("slow", slow_jobs, sweep_repeats, args)
        backlog_jobs = [
            {"system": s, "procs": backlog_procs, "n": backlog_total // backlog_procs, "size": 100,
             "mode": "backlog", "fill_s": args.fill_s}
            for s in lf
        ]
        raw["backlog"] = run_jobs("backlog", backlog_jobs, sweep_repeats, args)
    elapsed = time.perf_counter() - started
    data: dict[str, Any] = {
        "systems": systems, "procs": procs, "sizes": sizes, "size_procs": size_procs,
        "conn_procs": conn_procs, "conn_total": conn_total, "slow_procs": slow_procs,
        "backlog_procs": backlog_procs, "backlog_n": backlog_total // backlog_procs,
        "source": logfunnel_source(args.logfunnel_src, sha),
        "title": f"{command}  ({platform.python_version()}, nproc={os.cpu_count()})",
    }
    for key, results in raw.items():
        data[key] = summarize(results)
    others = [r["other_cores"] for rs in raw.values() for r in rs if "other_cores" in r]
    data["other_median"] = median(others)
    data["other_max"] = max(others, default=float("nan"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"command": command, "raw": raw}, f)
    if not args.no_plot:
        plot(Path(args.plot), data)
    report = write_report(args, data, command, elapsed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = report.rstrip("\n") + kept_sections(Path(args.out))
    Path(args.out).write_text(report, encoding="utf-8")
    print(report)
    print(f"\nwrote {args.out} and {args.json} in {elapsed / 60:.1f} min", file=sys.stderr)
    # Non-zero when a logfunnel run lost, duplicated or tore a record: the smoke test's hook.
    if export_dir is not None:
        export_dir.cleanup()
    bad = [k for k, s in data["main"].items() if k[0] in LOGFUNNEL and s["wrong"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
