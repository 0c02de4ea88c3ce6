"""The article's programs, plus the one line `logfunnel.install()`: no hang, every child record once."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from conftest import run_python
from logfunnel.diagnose import seed_programs as _seed_programs

# Cycles per start method: the suite's bounded version (the soak test runs 3,000 fork
# cycles).  Spawn and forkserver start a fresh interpreter per pool, which costs ~0.2 s
# a cycle on 2 cores; under fork the parent's unthrottled thread grows the article's
# queue, so each fork copies more: 200 cycles took 46 s on a slow day, 100 took 25 s.
CYCLES = {"fork": 100, "spawn": 20, "forkserver": 40}


def _count(path: Path, pattern: str) -> collections.Counter[int]:
    """Count the records matching ``pattern`` in ``path`` and its rotated files."""
    counts: collections.Counter[int] = collections.Counter()
    for name in path.parent.glob(path.name + "*"):
        for line in name.read_text(encoding="utf-8").splitlines():
            match = re.search(pattern, line)
            if match:
                counts[int(match[1])] += 1
    return counts


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_article_program_with_install_completes_and_keeps_every_child_record(
    tmp_path: Path, method: str
) -> None:
    """The article's Pool program with install() added runs every cycle and logs each child record once."""
    cycles = CYCLES[method]
    program = tmp_path / "article.py"
    program.write_text(_seed_programs.pool_program(cycles, fixed=True, method=method))
    # The watchdog: a hang fails the test after 100 s instead of stalling the suite.
    proc = run_python(str(program), cwd=tmp_path, timeout=100)
    assert proc.stdout.rstrip().endswith("done"), proc.stdout[-500:]
    assert proc.stdout.count("...logged") == cycles
    counts = _count(tmp_path / "out.log", r"hello, I did something \(cycle (\d+)\)")
    assert counts == collections.Counter(range(cycles)), "child records lost or duplicated"
    # The parent's logging thread went on the whole time, through its own handlers.
    assert "hello, I just did something" in (tmp_path / "out.log").read_text()


@pytest.mark.parametrize(("method", "cycles"), [("fork", 100), ("spawn", 15)])
def test_article_queue_listener_program_with_install_logs_each_child_record_once(
    tmp_path: Path, method: str, cycles: int
) -> None:
    """The article's listener-process remedy with install() added logs each child's record once."""
    program = tmp_path / "recipe.py"
    program.write_text(_seed_programs.queue_recipe_program(cycles, method=method))
    proc = run_python(str(program), cwd=tmp_path, timeout=100)
    assert proc.stdout.rstrip().endswith("done")
    counts = _count(tmp_path / "out.log", r"hello, I did something: \S+ \(cycle (\d+)\)")
    assert counts == collections.Counter(range(cycles)), "child records lost or duplicated"


@pytest.mark.soak
@pytest.mark.timeout(600)  # ~45 s here; the default 120 s is for ordinary tests
def test_soak_article_program_thousands_of_cycles(tmp_path: Path) -> None:
    """3,000 fork pool cycles of the article's program with install(): no hang, nothing lost."""
    program = tmp_path / "article.py"
    # Throttled: unthrottled, the parent's logging thread outpaces its listener, the
    # unbounded queue held 16 GB after 950 cycles, and every fork copies more of it.
    program.write_text(_seed_programs.pool_program(3000, fixed=True, throttle=0.0001))
    proc = run_python(str(program), cwd=tmp_path, timeout=540)
    assert proc.stdout.rstrip().endswith("done")
    counts = _count(tmp_path / "out.log", r"hello, I did something \(cycle (\d+)\)")
    assert counts == collections.Counter(range(3000))
