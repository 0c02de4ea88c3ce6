"""Fork storms: forking as fast as possible while threads log never hangs and loses nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import SCRIPTS, check_records, last_json, read_lines, run_python


def _storm(tmp_path: Path, forks: int, host: str) -> dict[str, object]:
    proc = run_python(str(SCRIPTS / "fork_storm.py"), str(tmp_path), str(forks), host, timeout=240)
    report: dict[str, object] = last_json(proc.stdout)
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


ADOPT_FORKS = r"""
import json, logging, os, signal, subprocess, sys
import logfunnel

path, workers, per_worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
handler = logging.FileHandler(path)
handler.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
funnel = logfunnel.install()  # adopt mode: the writer thread writes through `handler`
WORKER = '''
import logging, sys
log = logging.getLogger("worker")
for i in range(int(sys.argv[2])):
    log.info("%s %d", sys.argv[1], i)
'''
procs = [
    subprocess.Popen([sys.executable, "-c", WORKER, f"w{k}", str(per_worker)])
    for k in range(workers)
]
forks, failed_children = 0, 0
while any(p.poll() is None for p in procs):
    # Fork while the writer holds records it wrote and has not flushed: the
    # child exits through atexit and logging.shutdown(), which must neither
    # write its copy of that buffer to the file again nor wait on a lock the
    # writer held at the fork.  SIGALRM ends a child that does wait.
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    forks += 1
    failed_children += status != 0
codes = [p.wait(timeout=120) for p in procs]
logging.getLogger("main").info("main done")
report = {"forks": forks, "failed_children": failed_children, "codes": codes}
print(json.dumps({**report, "flushed": funnel.flush(timeout=60)}))
funnel.shutdown()
"""


def test_adopt_mode_forks_never_write_the_writers_unflushed_records_twice(
    tmp_path: Path,
) -> None:
    """Forks of an adopt-mode installer while its writer holds unflushed records: each once."""
    program, log = tmp_path / "adopt_forks.py", tmp_path / "out.log"
    program.write_text(ADOPT_FORKS)
    workers, per_worker = 2, 5000
    proc = run_python(str(program), str(log), str(workers), str(per_worker), timeout=180)
    report = last_json(proc.stdout)
    assert report["codes"] == [0] * workers, proc.stderr
    assert report["flushed"] is True
    assert report["forks"] > 0
    assert report["failed_children"] == 0
    lines = log.read_text(encoding="utf-8").splitlines()
    expected = [f"w{k} {i}" for k in range(workers) for i in range(per_worker)]
    assert sorted(lines) == sorted([*expected, "main done"])
    for k in range(workers):  # and each worker's records in the order it logged them
        own = [line for line in lines if line.startswith(f"w{k} ")]
        assert own == [f"w{k} {i}" for i in range(per_worker)]
