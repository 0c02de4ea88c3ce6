"""Smoke test of the benchmark harness: it runs end to end and logfunnel loses nothing in it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
# The systems that need no bench extra: the smoke test must pass with the test extra alone.
SYSTEMS = "floor,cookbook,logfunnel-thread,logfunnel-process"


@pytest.mark.timeout(60)
def test_harness_runs_and_logfunnel_keeps_every_record(tmp_path: Path) -> None:
    """A tiny run.py run completes with zero lost, duplicated or torn logfunnel records."""
    out, results = tmp_path / "bench.md", tmp_path / "bench.json"
    argv = [
        sys.executable, str(RUN), "--n", "200", "--procs", "1,2", "--repeats", "1",
        "--systems", SYSTEMS, "--no-sweeps", "--no-plot", "--timeout", "20",
        "--workdir", str(tmp_path), "--out", str(out), "--json", str(results),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=45, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = json.loads(results.read_text(encoding="utf-8"))["raw"]["main"]
    funnel_runs = [r for r in raw if r["system"].startswith("logfunnel-")]
    assert {(r["system"], r["procs"]) for r in funnel_runs} == {
        (s, p) for s in ("logfunnel-thread", "logfunnel-process") for p in (1, 2)
    }
    for run in funnel_runs:
        assert "error" not in run, run
        assert (run["lost"], run["dup"], run["torn"]) == (0, 0, 0), run
        assert run["records"] == run["procs"] * 200
    assert "| **logfunnel host=thread** |" in out.read_text(encoding="utf-8")


@pytest.mark.timeout(60)
def test_big_records_runs_every_case_and_each_keeps_every_line(tmp_path: Path) -> None:
    """A tiny big_records.py run writes its section: every case, every line once in each."""
    out = tmp_path / "bench.md"
    argv = [
        sys.executable, str(ROOT / "benchmarks" / "big_records.py"),
        "--n", "50", "--size", "2048", "--repeats", "1", "--out", str(out),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=45, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    cases = ["floor", "inherited", "pipe, one reader", "pipe, one reader, checked"]
    cases += ["ring, one reader", "logfunnel"]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == cases
    assert all(row.endswith("| yes |") for row in rows[1:]), rows


def test_size_sweep_gives_every_size_enough_records_to_time() -> None:
    """At 64 KB the sweep logs N / 10 records per worker, not the 305 that made 11 ms runs."""
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert [run.size_records(20_000, size) for size in run.SIZES] == [20_000, 19_531, 2_441, 2_000]
    assert run.size_records(4_000, 65536) == 400  # --quick
