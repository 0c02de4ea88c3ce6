"""The writer's nap (stage 4) with real processes: what it reads meanwhile is written at once.

Between busy turns the writer naps on the local processes' sockets.  A
process that dies then (SIGKILL, or billiard's SIGTERM to a worker past its
``max_tasks_per_child``, which leaves through ``os._exit()`` without saying
LEAVING) ends its socket during the nap, and the writer reads the rest of its
pipe there.  Those lines must reach the file before the writer goes back to
waiting, not when some other process next logs or the funnel shuts down.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_python

HOSTS = ["thread", "process"]

# Forks CHILDREN workers one after another.  Each logs a burst flat out (the
# writer is in busy turns, so it naps between them) and SIGKILLs itself at once;
# the installer then logs nothing and flushes nothing, and only watches the file
# for that child's lines, up to a deadline.
PROGRAM = r"""
import json, logging, multiprocessing, os, signal, sys, time
import logfunnel

path, host = sys.argv[1], sys.argv[2]
CHILDREN, RECORDS, DEADLINE = 6, 2000, 10.0
funnel = logfunnel.install(file=path, host=host, fmt="%(process)d|%(message)s", level="INFO")

def worker():
    log = logging.getLogger("burst")
    for i in range(RECORDS):
        log.info("burst %d", i)
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no settle, no LEAVING

def landed(pid):
    prefix = f"{pid}|burst ".encode()
    with open(path, "rb") as f:
        return sum(line.startswith(prefix) for line in f)

ctx = multiprocessing.get_context("fork")
children = []
for _ in range(CHILDREN):
    child = ctx.Process(target=worker)
    child.start()
    child.join(60)
    deadline, count = time.monotonic() + DEADLINE, 0
    while True:
        count = landed(child.pid)
        if count == RECORDS or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # polling the file: the condition is what ends the wait
    children.append({"pid": child.pid, "exitcode": child.exitcode, "landed": count})
    if count != RECORDS:
        break  # the deadline passed: no need to wait out the others too
drained = funnel.shutdown(30)
print(json.dumps({"records": RECORDS, "children": children, "drained": drained}))
"""


@pytest.mark.parametrize("host", HOSTS)
def test_records_of_a_process_killed_during_a_nap_land_without_waiting(
    tmp_path: Path, host: str
) -> None:
    """A worker logs 2,000 records and is SIGKILLed: they are in the file while all is quiet."""
    sink = tmp_path / "out.log"
    script = tmp_path / "program.py"
    script.write_text(PROGRAM, encoding="utf-8")
    proc = run_python(str(script), str(sink), host, timeout=150)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    records = report["records"]
    for child in report["children"]:
        assert child["exitcode"] == -9, child
        assert child["landed"] == records, (
            f"only {child['landed']} of process {child['pid']}'s {records} records were in the "
            f"file 10 s after it died, with nothing else logging\n{proc.stderr[-3000:]}"
        )
    assert len(report["children"]) == 6
    assert report["drained"] is True
