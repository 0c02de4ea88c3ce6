"""The sending side under re-entrant calls, signals and interrupted sends, with real processes.

Each test writes a program, runs it in a fresh interpreter of its own process
group under a deadline (a hang fails the test, and everything it started is
killed), and reads the sink file back.  Both hosts: the writer in a thread of
the installing process, and ``host="process"``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import child_env, last_json

HOSTS = ["thread", "process"]
FMT = "%(process)d|%(name)s|%(levelname)s|%(message)s"
BIG = 50_000
DROPPED_NOTE = re.compile(r"([\d,]+) records dropped from process (\d+)")

# Shared by the programs below: which syscall a thread blocked in a send shows in
# /proc/TID/syscall (the number differs per architecture), learnt from a thread
# blocked on purpose as a connection blocks (waiting in poll() for room in its
# full pipe, protocol 4); and whether a thread is in it now.
BLOCKED_IN_SEND = r'''
import contextlib, os, select, sys, threading, time

def _syscall(native_id):
    """The system call the thread is blocked in ("" if none)."""
    try:
        with open(f"/proc/self/task/{native_id}/syscall", encoding="ascii") as f:
            fields = f.read().split()
    except OSError:
        return ""
    # "NUMBER ARG1 ..." while blocked; "running" or "-1 ..." otherwise.
    if len(fields) < 2 or not fields[0].isdigit():
        return ""
    return fields[0]

def send_syscall():
    r, w = os.pipe()
    os.set_blocking(w, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"x" * 65536)
    def wait_for_room():
        poller = select.poll()
        poller.register(w, select.POLLOUT)
        poller.poll()
    thread = threading.Thread(target=wait_for_room, daemon=True)
    thread.start()
    try:
        seen, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = [*seen[-2:], _syscall(thread.native_id)]
            if len(seen) == 3 and len(set(seen)) == 1 and seen[0]:
                return seen[0]
            threading.Event().wait(0.02)
        raise RuntimeError("no thread ever blocked waiting for room in a pipe")
    finally:
        os.close(r)  # the poll ends: no reader is left
        thread.join(20)
        os.close(w)

def interrupt_when_blocked_in_send(signum, stop):
    """Send ``signum`` to the calling thread whenever it is blocked in send(), until ``stop``."""
    number, native_id, ident = send_syscall(), threading.get_native_id(), threading.get_ident()
    print(f"interrupting thread {native_id} in system call {number}", file=sys.stderr, flush=True)
    def watch():
        while not stop.is_set():
            if _syscall(native_id) == number:
                signal.pthread_kill(ident, signum)
            stop.wait(0.01)
    threading.Thread(target=watch, daemon=True).start()
'''


def run_program(tmp_path: Path, source: str, *args: object, timeout: float = 90) -> dict[str, Any]:
    """Run ``source`` with ``args``; fail if it hangs past ``timeout`` or exits non-zero.

    The program prints one JSON report as its last line of output.
    """
    script = tmp_path / "program.py"
    script.write_text(source, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,  # its own group: a hung program and its children are killed
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the program hung for {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 0:
        pytest.fail(f"the program exited {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}")
    report: dict[str, Any] = last_json(out)
    report["stderr"] = err
    return report


def messages(path: Path) -> list[tuple[int, str, str, str]]:
    """Return (pid, logger, level, message) of every line of ``path``; fail on a torn line."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        pid, name, level, message = raw.split("|", 3)
        assert pid.isdigit(), f"torn line: {raw[:200]!r}"
        lines.append((int(pid), name, level, message))
    return lines


# -- item 1: an argument whose __str__ logs ---------------------------------------------------

REENTRANT = r'''
import json, logging, multiprocessing, os, sys
import logfunnel

path, host = sys.argv[1], sys.argv[2]
funnel = logfunnel.install(file=path, host=host, fmt=sys.argv[3], level="INFO")

class LazyRow:
    """What an ORM's lazy row does: loading it (in __str__) logs the query."""
    def __init__(self, depth):
        self.depth = depth
    def __str__(self):
        inner = f" {LazyRow(self.depth - 1)}" if self.depth else ""
        logging.getLogger("db").info("query %d in %d", self.depth, os.getpid())
        return f"row{self.depth}{inner}"

def work(tag):
    logging.getLogger("app").warning("loaded %s by %s", LazyRow(2), tag)
    logging.getLogger("app").info("after %s", tag)

work("installer")
child = multiprocessing.get_context("fork").Process(target=work, args=("forked",))
child.start()
child.join(60)
drained = funnel.shutdown(30)
print(json.dumps({"installer": os.getpid(), "child": child.pid, "exitcode": child.exitcode,
                  "drained": drained}))
'''


@pytest.mark.parametrize("host", HOSTS)
def test_an_argument_whose_str_logs_does_not_deadlock(tmp_path: Path, host: str) -> None:
    """log.warning("loaded %s", row) where str(row) logs: every record arrives, once and whole."""
    sink = tmp_path / "out.log"
    report = run_program(tmp_path, REENTRANT, sink, host, FMT, timeout=60)
    assert report["exitcode"] == 0
    assert report["drained"] is True
    got = messages(sink)
    for tag, pid in (("installer", report["installer"]), ("forked", report["child"])):
        mine = sorted(m for p, _, _, m in got if p == pid)
        expected = [f"query {d} in {pid}" for d in (2, 1, 0)]
        expected += [f"after {tag}", f"loaded row2 row1 row0 by {tag}"]
        assert mine == sorted(expected), (tag, mine)
        # The outer record and the one logged after it keep their order.
        own = [m for p, name, _, m in got if p == pid and name == "app"]
        assert own == [f"loaded row2 row1 row0 by {tag}", f"after {tag}"]


# -- item 2: a signal handler that logs -------------------------------------------------------

SIGNALS = r"""
import json, logging, multiprocessing, os, signal, sys, time
from multiprocessing.connection import wait
import logfunnel

path, host, workers, records = sys.argv[1], sys.argv[2], int(sys.argv[4]), int(sys.argv[5])
funnel = logfunnel.install(file=path, host=host, fmt=sys.argv[3], level="INFO")
ctx = multiprocessing.get_context("fork")

def worker(slot, ready):
    log = logging.getLogger("w")
    ticks = 0
    def on_usr1(signum, frame):
        nonlocal ticks
        ticks += 1
        log.info("tick %d %d", slot, ticks)
    # The first record makes this process's connection: a handler that logs while
    # the connection is being made is _handler.current_connection()'s case, not this one's.
    log.info("start %d", slot)
    signal.signal(signal.SIGUSR1, on_usr1)
    ready.release()
    for i in range(records):
        log.info("rec %d %d %s", slot, i, "p" * 300)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    log.info("done %d ticks=%d", slot, ticks)

ready = ctx.Semaphore(0)
procs = [ctx.Process(target=worker, args=(slot, ready)) for slot in range(workers)]
for proc in procs:
    proc.start()
for _ in procs:
    assert ready.acquire(timeout=30), "a worker never started"
sent, deadline = 0, time.monotonic() + 60
while any(p.exitcode is None for p in procs) and time.monotonic() < deadline:
    for proc in procs:
        if proc.exitcode is None:
            try:
                os.kill(proc.pid, signal.SIGUSR1)
                sent += 1
            except ProcessLookupError:
                pass
    wait([p.sentinel for p in procs if p.exitcode is None], timeout=0.002)
stuck = [p.pid for p in procs if p.exitcode is None]
for pid in stuck:
    os.kill(pid, signal.SIGKILL)
for proc in procs:
    proc.join(10)
drained = funnel.shutdown(30)
print(json.dumps({"stuck": stuck, "exitcodes": [p.exitcode for p in procs], "signals": sent,
                  "drained": drained}))
"""


@pytest.mark.parametrize("host", HOSTS)
def test_a_signal_handler_that_logs_never_wedges_a_worker(tmp_path: Path, host: str) -> None:
    """Workers logging in a loop, SIGUSR1 storms whose handler logs: all exit, nothing lost."""
    sink = tmp_path / "out.log"
    workers, records = 5, 3000
    report = run_program(tmp_path, SIGNALS, sink, host, FMT, workers, records, timeout=120)
    assert report["stuck"] == [], report
    assert report["exitcodes"] == [0] * workers, report["stderr"][-3000:]
    assert report["drained"] is True
    assert "RecursionError" not in report["stderr"]
    lines = messages(sink)
    pids = {pid for pid, name, _, _ in lines if name == "w"}
    got = {pid: [m for p, name, _, m in lines if p == pid and name == "w"] for pid in pids}
    # Records a handler logs while its own process is inside a send are queued and sent
    # right after; past the queue's bound they are dropped, and the count reaches the sink.
    dropped: dict[int, int] = {}
    for _, name, _, message in lines:
        if name == "logfunnel" and (match := DROPPED_NOTE.match(message)):
            dropped[int(match[2])] = dropped.get(int(match[2]), 0) + int(match[1].replace(",", ""))
    total_ticks = 0
    for pid, mine in got.items():
        (done,) = [m for m in mine if m.startswith("done ")]
        slot, ticks = int(done.split()[1]), int(done.rsplit("=", 1)[1])
        recs = [m.split()[2] for m in mine if m.startswith(f"rec {slot} ")]
        assert recs == [str(i) for i in range(records)], f"worker {slot}: lost or reordered"
        tick_lines = [int(m.split()[2]) for m in mine if m.startswith(f"tick {slot} ")]
        assert len(set(tick_lines)) == len(tick_lines), f"worker {slot}: a tick twice"
        assert set(tick_lines) <= set(range(1, ticks + 1))
        assert len(tick_lines) + dropped.get(pid, 0) == ticks, f"worker {slot}: ticks lost"
        total_ticks += ticks
    assert len(got) == workers
    assert total_ticks > 0, "no signal was ever handled: the test tested nothing"


# -- a writer that stops reading -----------------------------------------------------------

# Under the thread host its sink waits at a shut gate from the first record on; under
# host="process" its process group is stopped (SIGSTOP).  stall(), resume(), finish().
STALL = r"""
import dataclasses
import json, logging, multiprocessing, os, signal, sys, threading
import logfunnel

path, host, fmt, big, on_full = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
full_timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 0.05
ctx = multiprocessing.get_context("fork")

class Gate(logging.Handler):
    def __init__(self):
        super().__init__()
        self.open = threading.Event()
    def emit(self, record):
        self.open.wait(60)

gate = None
if host == "thread":
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    sink = logging.FileHandler(path, encoding="utf-8")
    sink.setFormatter(logging.Formatter(fmt))
    gate = Gate()
    root.addHandler(gate)
    root.addHandler(sink)
    funnel = logfunnel.install(on_full=on_full, full_timeout=full_timeout)
else:
    funnel = logfunnel.install(file=path, host=host, fmt=fmt, level="INFO", on_full=on_full,
                               full_timeout=full_timeout)

def writer_group():
    # The process group of the writer process (its supervisor leads it).
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{name}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == os.getpid() and b"process_main" in cmdline:
                return os.getpgid(int(name))
    raise RuntimeError("no writer process found")

stopped = None
def stall():
    global stopped
    if gate is None:
        stopped = writer_group()
        os.killpg(stopped, signal.SIGSTOP)

def resume():
    if gate is not None:
        gate.open.set()
    else:
        os.killpg(stopped, signal.SIGCONT)

def finish(report):
    flushed = funnel.flush(30)
    stats = dataclasses.asdict(funnel.stats())
    stats = {k: (stats[k] if isinstance(stats, dict) else getattr(stats, k))
             for k in ("cut_frames", "bad_frames")}
    drained = funnel.shutdown(30)
    print(json.dumps({**report, "flushed": flushed, "drained": drained, "stats": stats}))
"""


# -- item 5: an exception raised inside a blocked send ----------------------------------------

TORN = (
    BLOCKED_IN_SEND
    + STALL
    + r"""
def worker(out):
    log = logging.getLogger("torn")
    # A shell without job control starts a background job (`pytest &`) with SIGINT
    # ignored, and Python then keeps it ignored: raise KeyboardInterrupt whoever ran us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop = threading.Event()
    interrupt_when_blocked_in_send(signal.SIGINT, stop)
    interrupted = None
    try:
        for i in range(100_000):
            log.info("big %d %s", i, "b" * big)
    except KeyboardInterrupt:
        interrupted = i
    stop.set()
    out.send(interrupted)  # the writer is resumed now; these 5 return normally
    for j in range(5):
        log.info("after %d", j)
    out.send("done")

stall()
receiver, sender = ctx.Pipe(duplex=False)
child = ctx.Process(target=worker, args=(sender,))
child.start()
sender.close()
if not receiver.poll(60):
    # End now, saying why, instead of at the test's timeout: the worker would log
    # 100,000 records of 50 KB once the writer runs again.  First, where it is.
    def proc_text(name):
        try:
            with open(f"/proc/{child.pid}/{name}", encoding="ascii") as f:
                return f.read()
        except OSError as exc:
            return repr(exc)
    status = [l for l in proc_text("status").splitlines() if l.startswith(("State", "Sig", "Shd"))]
    where = f"syscall {proc_text('syscall').split()[:2]}, {status}"
    child.kill()
    child.join(10)
    resume()
    raise RuntimeError(f"the worker was never interrupted in a send: {where}")
interrupted = receiver.recv()
resume()
done = receiver.recv() if receiver.poll(60) else None
child.join(60)
finish({"child": child.pid, "exitcode": child.exitcode, "interrupted": interrupted, "done": done})
"""
)


@pytest.mark.skipif(
    not os.path.exists("/proc/self/task"), reason="needs /proc to see a blocked send"
)
@pytest.mark.parametrize("host", HOSTS)
def test_an_interrupt_inside_a_blocked_send_tears_no_frame(tmp_path: Path, host: str) -> None:
    """SIGINT while a 50 KB record is half sent: it and the 5 records logged after all arrive whole."""
    sink = tmp_path / "out.log"
    report = run_program(tmp_path, TORN, sink, host, FMT, BIG, "block", timeout=150)
    assert report["exitcode"] == 0, report["stderr"][-3000:]
    assert report["done"] == "done"
    assert report["flushed"] is True
    assert report["drained"] is True
    interrupted = report["interrupted"]
    assert isinstance(interrupted, int), "the worker was never interrupted in a send"
    got = messages(sink)
    mine = [m for pid, name, _, m in got if pid == report["child"] and name == "torn"]
    pad = "b" * BIG
    # The interrupted record counts as sent: it arrives, complete, and so do all before it.
    assert mine[:-5] == [f"big {i} {pad}" for i in range(interrupted + 1)]
    assert mine[-5:] == [f"after {j}" for j in range(5)]
    assert not [m for _, _, _, m in got if "cut frame" in m or "bad frame" in m.lower()]
    assert report["stats"] == {"cut_frames": 0, "bad_frames": 0}


# -- item 6: on_full="drop", a frame partly sent when the process exits -----------------------

DROP_EXIT = (
    STALL
    + r"""
def worker(records):
    log = logging.getLogger("drop")
    for i in range(records):  # the writer reads nothing: one of these is left half sent
        log.info("big %d %s", i, "b" * big)
    # ... and the process exits: atexit and multiprocessing's Finalize settle what is owed.

stall()
records = 40  # 2 MB: more than a grown pipe holds (1 MiB)
child = ctx.Process(target=worker, args=(records,))
child.start()
child.join(60)
resume()
finish({"child": child.pid, "exitcode": child.exitcode, "logged": records})
"""
)

# -- a burst while the writer is stopped: the pipe grows instead of dropping -----------------

BURST = (
    STALL
    + r"""
def worker(records):
    log = logging.getLogger("burst")
    for i in range(records):
        log.info("burst %d %s", i, "b" * big)

stall()
records = 4000  # ~500 KB of lines: twice what a pipe holds, half of what it grows to
child = ctx.Process(target=worker, args=(records,))
child.start()
child.join(60)
resume()
finish({"child": child.pid, "exitcode": child.exitcode, "logged": records})
"""
)


def test_a_burst_against_a_stopped_writer_waits_in_a_grown_pipe_not_dropped(
    tmp_path: Path,
) -> None:
    """on_full='drop' with no wait, the writer process stopped: 500 KB of records, none dropped."""
    sink = tmp_path / "out.log"
    report = run_program(tmp_path, BURST, sink, "process", FMT, 100, "drop", 0)
    assert report["exitcode"] == 0, report["stderr"][-3000:]
    assert report["flushed"] is True
    assert report["drained"] is True
    child = report["child"]
    lines = messages(sink)
    assert not [m for _, name, _, m in lines if name == "logfunnel" and DROPPED_NOTE.match(m)]
    delivered = [m for pid, name, _, m in lines if pid == child and name == "burst"]
    assert delivered == [f"burst {i} {'b' * 100}" for i in range(report["logged"])]


FALLBACK_DROPS = re.compile(
    r"logfunnel: (\d+) records of process (\d+) were dropped \(on_full='drop'\), "
    r"and the writer was still behind when it exited"
)


@pytest.mark.parametrize("host", HOSTS)
def test_a_record_half_sent_at_exit_is_delivered_or_counted(tmp_path: Path, host: str) -> None:
    """on_full='drop', the writer stuck as a worker exits: delivered + dropped == logged, exactly."""
    sink = tmp_path / "out.log"
    report = run_program(tmp_path, DROP_EXIT, sink, host, FMT, BIG, "drop", timeout=150)
    assert report["exitcode"] == 0, report["stderr"][-3000:]
    assert report["flushed"] is True
    assert report["drained"] is True
    child = report["child"]
    lines = messages(sink)
    delivered = [m for pid, name, _, m in lines if pid == child and name == "drop"]
    pad = "b" * BIG
    indexes = [int(m.split()[1]) for m in delivered]
    assert delivered == [f"big {i} {pad}" for i in indexes], "a record arrived torn"
    assert indexes == sorted(set(indexes)), "a record arrived twice or out of order"
    told_writer = sum(
        int(match[1].replace(",", ""))
        for _, name, _, message in lines
        if name == "logfunnel" and (match := DROPPED_NOTE.match(message)) and int(match[2]) == child
    )
    on_fallback = sum(
        int(match[1])
        for match in FALLBACK_DROPS.finditer(report["stderr"])
        if int(match[2]) == child
    )
    # The writer was still stuck when the worker exited: the count went to its fallback.
    assert on_fallback > 0, report["stderr"][-3000:]
    counted = len(delivered) + told_writer + on_fallback
    assert counted == report["logged"], (len(delivered), told_writer, on_fallback)
