"""``logfunnel repro``: the article's hang is shown honestly, and the fixed run loses nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from logfunnel.diagnose import pool_run as _pool_run
from logfunnel.diagnose import repro as _repro
from logfunnel.diagnose import seed_programs as _seed_programs
from logfunnel.diagnose import stacks as _stacks

if TYPE_CHECKING:
    from collections.abc import Iterator

# The CLI may not be wired yet: call the entry point the CLI will call.
_REPRO = "import sys; from logfunnel.diagnose.repro import main; sys.exit(main(sys.argv[1:]))"
_CYCLES = 50


@pytest.fixture(scope="module")
def repro_run() -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """Run ``repro --cycles 50 --keep`` once, bounded well under 60 s, for the tests below."""
    result = subprocess.run(
        [sys.executable, "-c", _REPRO, "--cycles", str(_CYCLES), "--timeout", "45", "--keep"],
        capture_output=True,
        text=True,
        timeout=58,
        check=False,
    )
    kept = re.search(r"^sandbox kept: (.+)$", result.stdout, re.MULTILINE)
    assert kept is not None, result.stdout + result.stderr
    sandbox = Path(kept[1])
    yield result, sandbox
    shutil.rmtree(sandbox, ignore_errors=True)


def test_fixed_run_passes_with_every_child_record_exactly_once(
    repro_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The program with logfunnel.install() finishes and out.log holds each child's record once."""
    result, sandbox = repro_run
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"ran {_CYCLES} of {_CYCLES} pool cycles" in out
    report = (
        f"child records in out.log: {_CYCLES} for {_CYCLES} cycles; missing 0, more than once 0"
    )
    assert report in out
    assert f"exactly once: {_CYCLES} of {_CYCLES}" in out
    # Count out.log ourselves rather than trust the tool's report.
    counts: dict[int, int] = {}
    with (sandbox / "fixed" / "out.log").open(encoding="utf-8") as f:
        for line in f:
            if match := re.search(r"hello, I did something \(cycle (\d+)\)", line):
                counts[int(match[1])] = counts.get(int(match[1]), 0) + 1
    assert counts == dict.fromkeys(range(_CYCLES), 1)


def test_thread_counts_are_shown(repro_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The fork demo ran for real: the parent had 2 threads, the child 1."""
    out = repro_run[0].stdout
    assert "The parent process has 2 threads" in out
    assert "The child process has 1 threads" in out
    assert "thread counts: parent 2, child 1" in out


def test_article_program_hangs_and_the_stuck_child_shows_its_lock_frame(
    repro_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The article's program hangs, and the stuck child's stack points at the lock it waits for.

    Its parent thread logs without pause while the pool forks: in the runs
    measured it hung in its first or second cycle, so 50 cycles without a
    hang would mean the demonstration (or the watchdog) no longer works.
    """
    out = repro_run[0].stdout
    assert "root logger stays at WARNING" in out
    assert "HANG DETECTED" in out, out
    assert "article's program: hang reproduced" in out
    assert "written by faulthandler on SIGUSR1" in out
    frame = re.search(r"^lock-acquisition frame: (.+)$", out, re.MULTILINE)
    assert frame is not None, out
    lock_frame = r'(threading\.py", line \d+ in (__enter__|acquire))|(queue\.py".* in put)'
    assert re.search(lock_frame, frame[1])
    assert "blocked here, acquiring a lock" in out
    assert "Queue.put()" in out


# Fork while the main thread holds the article's queue mutex: the worst moment the
# article's logging thread can be caught at, made certain instead of likely.
_HOLD_THE_QUEUE_AT_FORK = """\
    (_queue_handler,) = [h for h in logging.getLogger().handlers if isinstance(h, QueueHandler)]
    os.register_at_fork(
        before=_queue_handler.queue.mutex.acquire,
        after_in_parent=_queue_handler.queue.mutex.release,
    )
"""


def _forced_hang_program(cycles: int, *, fixed: bool) -> str:
    text = _seed_programs.pool_program(cycles, fixed=fixed)
    anchor = "    listener, thread = setup_logging()\n"
    assert text.count(anchor) == 1
    return text.replace(anchor, anchor + _HOLD_THE_QUEUE_AT_FORK)


def test_a_fork_inside_queue_put_hangs_the_article_and_not_the_fixed_program(
    tmp_path: Path,
) -> None:
    """Forked while the queue's mutex is held: the article's child hangs, the fixed one does not.

    The same watchdog ``logfunnel repro`` runs; the hang is certain here, not a matter of timing.
    """
    cycles = 3
    article = _pool_run.run_pool_program(
        tmp_path / "article",
        cycles,
        fixed=False,
        stall=3.0,
        limit=40.0,
        text=_forced_hang_program(cycles, fixed=False),
    )
    assert article.hung, article
    assert article.stuck_cycle == 0
    found = _stacks.lock_frame(article.dump)
    assert found is not None, article.dump
    fixed = _pool_run.run_pool_program(
        tmp_path / "fixed",
        cycles,
        fixed=True,
        stall=20.0,
        limit=60.0,
        text=_forced_hang_program(cycles, fixed=True),
    )
    assert fixed.finished, fixed
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.child_records == dict.fromkeys(range(cycles), 1)


def test_lock_frame_is_found_in_a_faulthandler_dump() -> None:
    """The innermost threading/queue lock frame of a dump is the one pointed at."""
    dump = (
        "Current thread 0x00007f (most recent call first):\n"
        '  File "/usr/lib/python3.12/threading.py", line 299 in __enter__\n'
        '  File "/usr/lib/python3.12/queue.py", line 133 in put\n'
        '  File "/tmp/x/article.py", line 42 in runs_in_subprocess\n'
    )
    found = _stacks.lock_frame(dump)
    assert found is not None
    assert found[0] == 1
    assert found[1].endswith("in __enter__")
    assert _stacks.lock_frame('  File "/tmp/x.py", line 1 in <module>\n') is None


def test_programs_compile_and_differ_only_by_the_fix() -> None:
    """The article's program and the fixed one are valid Python and differ only in the fix lines."""
    article = _seed_programs.pool_program(7, fixed=False)
    fixed = _seed_programs.pool_program(7, fixed=True)
    compile(article, "article.py", "exec")
    compile(fixed, "fixed.py", "exec")
    compile(_seed_programs.THREADS_PROGRAM, "threads.py", "exec")
    added = [line for line in fixed.splitlines() if line not in article.splitlines()]
    assert [line.strip().split("  #")[0] for line in added] == [
        "import logfunnel",
        "funnel = logfunnel.install()",
        "funnel.flush()",
    ]
    assert "CYCLES = 7" in article


def test_bad_arguments_are_refused() -> None:
    """A cycle count below one is a usage error, not a run."""
    with pytest.raises(SystemExit) as raised:
        _repro.main(["--cycles", "0"])
    assert raised.value.code == 2
