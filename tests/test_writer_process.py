"""``_writer_process``: the environment a writer process starts with, and what it costs.

Real processes: an installer with ``host="process"``, a forked child that logs
64 KB records while the writer process is stopped (SIGSTOP), so the writer then
reads its pipe in full 256 KiB reads, the reads a busy writer makes.  The
writer's minor page faults (``/proc/PID/stat``) tell whether each block it cut
from a read was a fresh mmap() of its own.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from conftest import run_python
from logfunnel import _writer_process

# ROUNDS times after one to warm up: a child connects (one record, flushed), the writer is stopped,
# the child logs RECORDS records of 64 KB (they wait in its pipe, grown to 1 MiB)
# and leaves through os._exit(); the writer goes on and a flush waits for them.
PROGRAM = r"""
import json, logging, os, signal, sys
import logfunnel

path = sys.argv[1]
ROUNDS, RECORDS, SIZE = 8, 10, 65536
funnel = logfunnel.install(file=path, host="process", fmt="%(message)s", level="INFO")
writer = funnel.stats().pid
log = logging.getLogger("big")

def minor_faults(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rpartition(")")[2].split()[7])

before = None
for round in range(ROUNDS + 1):  # round 0 warms up: the heap grows once
    if round == 1:
        before = minor_faults(writer)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        log.info("child %d connected", round)
        if funnel.flush(timeout=30):  # its HELLO answered: nothing waits on the writer now
            os.write(ready_w, b"r")
        os.read(go_r, 1)
        payload = "x" * SIZE
        for i in range(RECORDS):
            log.info("round %d record %d %s", round, i, payload)
        os._exit(0)
    os.close(ready_w)  # a child that fails ends the read below with EOF
    os.close(go_r)
    assert os.read(ready_r, 1) == b"r"
    os.kill(writer, signal.SIGSTOP)
    os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    os.kill(writer, signal.SIGCONT)
    assert os.waitstatus_to_exitcode(status) == 0
    assert funnel.flush(timeout=60)
    for fd in (ready_r, go_w):
        os.close(fd)
faults = minor_faults(writer) - before
drained = funnel.shutdown(30)
with open(path, encoding="ascii") as f:
    landed = sum(line.startswith("round ") and len(line) > SIZE for line in f)
print(json.dumps({"faults": faults, "records": ROUNDS * RECORDS, "all": (ROUNDS + 1) * RECORDS, "landed": landed,
                  "drained": drained}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is glibc's")
def test_big_reads_of_a_pipe_cost_the_writer_process_no_page_faults(tmp_path: Path) -> None:
    """80 records of 64 KB read 256 KiB at a time: < 2 page faults per record (were 15-20)."""
    sink = tmp_path / "out.log"
    script = tmp_path / "program.py"
    script.write_text(PROGRAM, encoding="utf-8")
    proc = run_python(str(script), str(sink), timeout=150)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["drained"], proc.stderr[-3000:]
    assert report["landed"] == report["all"], report
    per_record = report["faults"] / report["records"]
    assert per_record < 2, (
        f"the writer process faulted {report['faults']:,} pages in for {report['records']} "
        f"records of 64 KB ({per_record:.1f} per record): its blocks are mmap()ed afresh"
    )


@pytest.mark.parametrize("theirs", [None, "glibc.malloc.arena_max=2"])
def test_the_installers_own_glibc_tunables_win_and_come_back(theirs: str | None) -> None:
    """The writer's tunables go first (the installer's, applied last, win) and are taken out."""
    installer = {"PATH": "/usr/bin", "LOGFUNNEL_LEVEL": "DEBUG"}
    if theirs is not None:
        installer["GLIBC_TUNABLES"] = theirs
    env = _writer_process.environment(installer)
    assert "LOGFUNNEL_LEVEL" not in env
    assert env["GLIBC_TUNABLES"].startswith(_writer_process.MALLOC_TUNABLES)
    if theirs is not None:
        assert env["GLIBC_TUNABLES"].endswith(f":{theirs}")
    _writer_process.forget_malloc_tunables(env)
    assert env.get("GLIBC_TUNABLES") == theirs
    assert env["PATH"] == "/usr/bin"
