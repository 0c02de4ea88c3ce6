"""Fork storms: forking as fast as possible while threads log never hangs and loses nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import SCRIPTS, check_records, read_lines, run_python


def _storm(tmp_path: Path, forks: int, host: str) -> dict[str, object]:
    proc = run_python(str(SCRIPTS / "fork_storm.py"), str(tmp_path), str(forks), host, timeout=240)
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed_children"] == 0, proc.stderr
    assert report["flushed"] is True
    assert "Traceback" not in proc.stderr, proc.stderr
    return report


def _expected(report: dict[str, object], forks: int) -> dict[str, int]:
    spins = report["spins"]
    assert isinstance(spins, list)
    expected = {f"t{k}": n for k, n in enumerate(spins)}
    expected.update({f"child{i}": 3 for i in range(forks)})
    return expected


@pytest.mark.parametrize("host", ["thread", "process"])
def test_fork_storm_delivers_every_record_once_to_every_sink(tmp_path: Path, host: str) -> None:
    """300 forks under three logging threads: no hang, each record once in each sink, in order."""
    forks = 300
    report = _storm(tmp_path, forks, host)
    expected = _expected(report, forks)
    sinks = ["a.log", "b.log", "c.log"] if host == "thread" else ["a.log"]
    for sink in sinks:
        check_records(read_lines(tmp_path / sink), expected)
    # Honest about the warning CPython 3.12+ gives for fork() with threads.
    assert (report["fork_warnings"] == forks) == (sys.version_info >= (3, 12))


@pytest.mark.soak
def test_soak_fork_storm_thousands(tmp_path: Path) -> None:
    """3,000 forks under three logging threads: no hang, each record once in each sink."""
    forks = 3000
    report = _storm(tmp_path, forks, "thread")
    for sink in ("a.log", "b.log", "c.log"):
        check_records(read_lines(tmp_path / sink), _expected(report, forks))
