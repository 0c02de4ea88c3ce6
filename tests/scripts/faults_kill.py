"""Workers SIGKILLed mid-record.

Usage: python faults_kill.py storm LOGFILE HOST KILLS SEED
       python faults_kill.py cut LOGFILE
       python faults_kill.py unaccepted LOGFILE

``storm``: three forked workers at a time log small and large records in a
tight loop; the main thread SIGKILLs a random one after a random number of
returned calls and starts a new one, ``KILLS`` times, while logging a record
of its own per kill.  ``cut``: the thread host's sink is blocked, a worker is
SIGKILLed while it is provably inside ``sendall`` of a 3 MB record, so exactly
one frame is cut; then the sink is unblocked and another worker logs.
``unaccepted``: a connection sends half a frame and ends while the writer naps
(patched to 600 s), before the writer accepted it; then ``flush()``.

Each worker writes the SEQ of its last returned logging call to shared memory
right after the call returns.  Prints a JSON report (see ``faults_common``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
from faults_common import FORMAT, GateHandler, emit_report, finish, proc_state, rec, wait_until

import logfunnel
from logfunnel._core import nap as _nap
from logfunnel._core import wire as _wire

# Padding of the records: mostly small, one in 16 as large as a socket buffer
# (under the field limit of the default frame limit, so never cut by the codec).
PADS = (0,) * 8 + (40,) * 4 + (1_000, 5_000, 5_000, 100_000)
CTX: Any = multiprocessing.get_context("fork")
#: The process id the ``unaccepted`` connection says it has (no process has it here).
CUT_PID = 4_000_000_001


def worker(slot: int, last: Any, seed: int) -> None:
    """Log numbered records for ever, storing each returned SEQ in ``last[slot]``."""
    log = logging.getLogger("faults.kill")
    rng = random.Random(seed)
    seq = 0
    while True:
        rec(log, f"k{slot}", seq, rng.choice(PADS))
        last[slot] = seq
        seq += 1


def storm(path: str, host: str, kills: int, seed: int) -> None:
    """Kill ``kills`` workers at random moments; report what each had returned."""
    funnel = logfunnel.install(file=path, fmt=FORMAT, level="INFO", host=host)  # type: ignore[arg-type]
    main_log = logging.getLogger("faults.main")
    rng = random.Random(seed)
    last = CTX.Array("q", [-1] * kills, lock=False)
    pids: list[int] = []
    live: dict[int, Any] = {}
    started = time.monotonic()
    next_slot = 0
    for i in range(kills):
        while len(live) < 3 and next_slot < kills:
            proc = CTX.Process(target=worker, args=(next_slot, last, seed * 100_000 + next_slot))
            proc.start()
            pids.append(proc.pid)
            live[next_slot] = proc
            next_slot += 1
        slot = rng.choice(sorted(live))
        target = rng.randrange(-1, 12)
        wait_until(lambda: last[slot] >= target, 30, f"worker {slot} to log")  # noqa: B023
        # The kill lands anywhere in the next few records, large ones included.
        os.kill(live[slot].pid, signal.SIGKILL)
        live.pop(slot).join(30)
        rec(main_log, "main", i)
    for proc in live.values():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    flushed = funnel.flush(30)
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown()
    emit_report(
        {
            "last": list(last),
            "pids": pids,
            "stats": stats,
            "flushed": flushed,
            "drained": drained,
            "seconds": round(time.monotonic() - started, 2),
        }
    )


def big_worker(last: Any, big_started: Any) -> None:
    """Log one small record, then one 3 MB record (the writer is blocked: it stays in sendall)."""
    log = logging.getLogger("faults.kill")
    rec(log, "k0", 0)
    last[0] = 0
    big_started.value = 1
    rec(log, "k0", 1, 3_000_000)
    last[0] = 1


def small_worker(last: Any) -> None:
    """Log ten records after the cut."""
    log = logging.getLogger("faults.kill")
    for seq in range(10):
        rec(log, "k1", seq)
        last[1] = seq


def cut(path: str) -> None:
    """Cut exactly one frame: kill a worker inside sendall while the sink is blocked."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    sink = logging.FileHandler(path, encoding="utf-8")
    sink.setFormatter(logging.Formatter(FORMAT))
    gate = GateHandler()
    root.addHandler(sink)
    root.addHandler(gate)
    funnel = logfunnel.install(frame_limit=16 * 1024 * 1024)  # the 3 MB text travels uncut
    last = CTX.Array("q", [-1, -1], lock=False)
    big_started = CTX.Value("i", 0, lock=False)
    gate.gate.clear()
    proc = CTX.Process(target=big_worker, args=(last, big_started))
    proc.start()
    pid = proc.pid or 0
    wait_until(gate.entered.is_set, 30, "the writer to block in the sink")
    # The writer reads nothing now: 3 MB cannot fit the socket buffers, so once
    # the worker sleeps after starting the big record it is inside sendall,
    # with part of the frame already in the kernel.
    wait_until(lambda: big_started.value == 1 and proc_state(pid) == "S", 30, "sendall to block")
    state_at_kill = proc_state(pid)
    os.kill(pid, signal.SIGKILL)
    proc.join(30)
    gate.gate.set()
    after = CTX.Process(target=small_worker, args=(last,))
    after.start()
    after.join(30)
    flushed, stats, drained = finish(funnel, root, [sink, gate], 30)
    emit_report(
        {
            "last": list(last),
            "pids": [pid, after.pid],
            "exitcodes": [proc.exitcode, after.exitcode],
            "state_at_kill": state_at_kill,
            "stats": stats,
            "flushed": flushed,
            "drained": drained,
        }
    )


def holder(release: Any) -> None:
    """Log one 8 KB record (a busy turn: the writer naps after it), then wait for ``release``."""
    rec(logging.getLogger("faults.kill"), "hold", 0, 8192)
    release.wait(60)


def unaccepted(path: str) -> None:
    """End a connection mid-frame before the writer accepted it; flush() must report the cut."""
    # Every busy turn naps 600 s; only the owner's flush() (control) ends a nap,
    # and a nap accepts no connection.
    _nap.NAP = _nap.MAX_NAP = 600.0  # type: ignore[misc]
    _nap.IDLE = 1e9  # type: ignore[misc]
    _nap.NO_NAP_FILL = 1 << 62  # type: ignore[misc]
    funnel = logfunnel.install(file=path, fmt=FORMAT, level="INFO", host="thread")
    release = CTX.Event()
    held = CTX.Process(target=holder, args=(release,))
    held.start()
    # Written at the end of the turn that read it; then the writer naps.
    wait_until(lambda: "rec hold 0" in Path(path).read_text("utf-8"), 30, "the writer to nap")
    hello = msgpack.packb([_wire.HELLO, _wire.PROTOCOL_VERSION, CUT_PID, "cut-before-accept"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(funnel.address.removeprefix("unix:"))
        # A frame of 100,000 bytes of which 8,000 were sent when its process ended.
        sock.sendall(len(hello).to_bytes(4, "big") + hello + (100_000).to_bytes(4, "big") + b"x" * 8000)
    flushed = funnel.flush(30)
    at_flush = [line[:400] for line in Path(path).read_text("utf-8").splitlines()]
    stats = dataclasses.asdict(funnel.stats())
    release.set()
    held.join(30)
    drained = funnel.shutdown()
    emit_report(
        {
            "at_flush": at_flush,
            "pids": [CUT_PID, held.pid],
            "exitcodes": [held.exitcode],
            "stats": stats,
            "flushed": flushed,
            "drained": drained,
        }
    )


if __name__ == "__main__":
    if sys.argv[1] == "storm":
        storm(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "cut":
        cut(sys.argv[2])
    else:
        unaccepted(sys.argv[2])
