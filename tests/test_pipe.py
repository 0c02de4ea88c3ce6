"""A process's pipe to the writer (``_core/pipe.py``, protocol 4), with real processes.

What a killed writer never read reaching its successor is in ``test_recovery``;
what a lost writer left in the pipe going to the next one, in order, is in
``test_connection_unit``.  Here: what a forked child does with the pipe it
inherits, a program that set SIGPIPE back to its default, a child's flush()
and exit while the writer naps, and a HELLO whose pipe the writer cannot
receive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import last_json, run_python, start_funnel_server, stop_funnel_server
from logfunnel._core import wire as _wire
from logfunnel._core.outbox import IDLE, Outbox
from logfunnel._core.pipe import GROWN_SIZE, PIPE_SIZE, RecordPipe

# The parent's connection has a pipe; a forked child opens its own and must not
# hold the parent's: a child that kept the write end would keep the writer from
# ever seeing that pipe end, and one that kept the read end could read it back.
FORKED = r"""
import json, logging, multiprocessing, os, sys
import logfunnel
from logfunnel._core import state

def child(queue):
    logging.getLogger("child").info("from the child")
    inodes = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("pipe:["):
            inodes.add(int(target[6:-1]))
    queue.put(sorted(inodes))

if __name__ == "__main__":
    funnel = logfunnel.install(file=sys.argv[1], level="INFO", host="process", fmt="%(message)s")
    logging.getLogger("parent").info("from the parent")
    pipe = state.connection.outbox.pipe
    parents = sorted({os.fstat(pipe.read_fd).st_ino, os.fstat(pipe.write_fd).st_ino})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    childs = queue.get(timeout=60)
    proc.join(60)
    assert funnel.flush()
    funnel.shutdown()
    print(json.dumps({"parent": parents, "child": childs, "exitcode": proc.exitcode}))
"""


def run_program(
    tmp_path: Path, source: str, *args: str, timeout: float = 60
) -> tuple[dict[str, Any], str]:
    """Run ``source`` as a program with ``args``; return the JSON it printed last, and its stderr.

    Fails the test if the program's exit code, or that of the child it
    reports (``exitcode``), is not 0.
    """
    program = tmp_path / "program.py"
    program.write_text(source)
    proc = run_python(str(program), *args, timeout=timeout)
    report: dict[str, Any] = last_json(proc.stdout)
    assert report["exitcode"] == 0, proc.stderr
    return report, proc.stderr


def test_a_forked_child_closes_the_pipe_it_inherits_and_opens_its_own(tmp_path: Path) -> None:
    """After fork the child holds none of the parent's pipe ends, and its record lands."""
    log = tmp_path / "out.log"
    report, _ = run_program(tmp_path, FORKED, str(log))
    assert len(report["parent"]) == 1  # both ends of one pipe
    assert not set(report["parent"]) & set(report["child"])
    assert sorted(log.read_text(encoding="utf-8").splitlines()) == [
        "from the child",
        "from the parent",
    ]


# A child that set SIGPIPE back to the default (as command-line tools do, to die
# quietly under `| head`) goes on logging after the writer is gone: a write to a
# pipe without a reader would kill it.  It keeps a read end itself, so the pipe
# never loses its last reader, and its records go to the fallback.
SIGPIPE_DEFAULT = r"""
import json, logging, multiprocessing, signal, sys
import logfunnel

def child(logged, gone):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    log = logging.getLogger("child")
    log.info("rec 0")
    logged.set()
    assert gone.wait(60)
    for i in range(1, 51):
        log.info("rec %d", i)

if __name__ == "__main__":
    funnel = logfunnel.install(file=sys.argv[1], level="INFO", host="process",
                               fmt="%(message)s", fallback=sys.argv[2])
    ctx = multiprocessing.get_context("fork")
    logged, gone = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=child, args=(logged, gone))
    proc.start()
    assert logged.wait(60)
    assert funnel.shutdown(timeout=30)
    gone.set()
    proc.join(60)
    print(json.dumps({"exitcode": proc.exitcode}))
"""


def test_a_child_with_sigpipe_at_its_default_outlives_the_writer(tmp_path: Path) -> None:
    """SIGPIPE set to SIG_DFL, the writer shut down: the child logs on, exits 0, loses nothing."""
    log, fallback = tmp_path / "out.log", tmp_path / "fallback.log"
    run_program(tmp_path, SIGPIPE_DEFAULT, str(log), str(fallback))
    landed = [line.strip() for line in log.read_text(encoding="utf-8").splitlines()]
    kept = [  # the fallback's own format, or a line rendered for the sink read back
        line.rsplit(": ", 1)[-1]
        for line in fallback.read_text(encoding="utf-8").splitlines()
        if not line.startswith("logfunnel: ")
    ]
    numbers = sorted(int(text.split()[1]) for text in [*landed, *kept] if text.startswith("rec "))
    assert numbers == list(range(51))


# The writer naps between busy turns on its control channel and the local
# processes' sockets, never on their pipes (``_core/nap.py``).  Here its naps
# last ten minutes: a child's flush() and its exit must still be served at once,
# because both ask on the socket.  (The thread host: the patches are this process's.)
NAPPING = r"""
import json, logging, multiprocessing, select, sys, time
import logfunnel
from logfunnel._core import nap, peers, state
from logfunnel._core.pipe import queued

nap.NAP = nap.MAX_NAP = 600.0
nap.IDLE = 1e9
# No pace bound: every busy turn naps 600 s.
nap.NO_NAP_FILL = 1 << 62
peers.pipe_fill = lambda read, half: 0

def child(queue, read):
    log = logging.getLogger("child")
    log.info("busy " + "x" * 8192)  # a busy turn: the writer reads it, then naps
    pipe = state.connection.outbox.pipe
    deadline = time.monotonic() + 60
    while queued(pipe.read_fd) and time.monotonic() < deadline:
        select.select([], [], [], 0.005)
    log.info("logged while the writer naps")
    queue.put(logfunnel.current().flush(timeout=20))
    read.wait(60)  # the parent read the file
    log.info("left in the pipe at exit")

if __name__ == "__main__":
    path = sys.argv[1]
    funnel = logfunnel.install(file=path, level="INFO", fmt="%(message)s", host="thread")
    ctx = multiprocessing.get_context("fork")
    queue, read = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=child, args=(queue, read))
    proc.start()
    flushed = queue.get(timeout=60)
    with open(path, encoding="utf-8") as f:
        at_flush = [line[:30] for line in f.read().splitlines()]
    read.set()
    proc.join(60)
    with open(path, encoding="utf-8") as f:
        at_exit = [line[:30] for line in f.read().splitlines()]
    funnel.shutdown()
    print(json.dumps({"flushed": flushed, "at_flush": at_flush, "at_exit": at_exit,
                      "exitcode": proc.exitcode}))
"""


def test_a_childs_flush_and_exit_wake_a_napping_writer(tmp_path: Path) -> None:
    """While the writer naps, a child's flush() is answered and its last record lands at exit.

    Both fail with a FLUSH written into the pipe, as before: the flush times
    out (the nap does not wake for pipes), and the exit gives up waiting with
    the record still unread.
    """
    log = tmp_path / "out.log"
    report, stderr = run_program(tmp_path, NAPPING, str(log), timeout=120)
    assert report["flushed"] is True, stderr
    assert report["at_flush"][-1] == "logged while the writer naps"
    assert report["at_exit"][-1] == "left in the pipe at exit"
    assert len(report["at_exit"]) == 3


@pytest.mark.parametrize("host", ["thread", "process"])
def test_a_hello_whose_pipe_cannot_be_received_ends_the_connection(
    tmp_path: Path, host: str
) -> None:
    """More descriptors than a HELLO carries (as when the writer has none left): refused, said."""
    log = tmp_path / "out.log"
    proc, address = start_funnel_server(log, host)
    pipes = [os.pipe() for _ in range(8)]
    try:
        hello = msgpack.packb([_wire.HELLO, _wire.PROTOCOL_VERSION, 4242, "many-fds"])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(address.removeprefix("unix:"))
            frame = len(hello).to_bytes(4, "big") + hello
            socket.send_fds(sock, [frame], [r for r, _ in pipes])
            assert sock.recv(4096) == b""  # the writer ended the connection
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
    stats = stop_funnel_server(proc)
    assert stats["bad_frames"] == 1
    assert "many-fds" not in log.read_text(encoding="utf-8")  # its HELLO was never taken
    errors = [line for line in log.read_text(encoding="utf-8").splitlines() if "descriptors" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("logfunnel|dropped a connection: "), errors


# -- a pipe that fills grows, and shrinks back once read ---------------------------------


def _pipe_can_grow() -> bool:
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as f:
            return int(f.read()) >= GROWN_SIZE and hasattr(fcntl, "F_SETPIPE_SZ")
    except OSError:
        return False


@contextlib.contextmanager
def _filled_pipe() -> Iterator[tuple[Outbox, RecordPipe, socket.socket, int]]:
    """Open a real pipe over a socketpair and fill it while nobody reads it.

    Yield the outbox that wrote it, the pipe, the sender's socket and how many
    numbered 1 KB lines went in; the pipe has grown to ``GROWN_SIZE``.
    """
    sender, writer = socket.socketpair()
    encoder = _wire.Encoder()
    pipe = RecordPipe.open(sender, encoder.frame([_wire.HELLO, 0]))
    assert pipe is not None
    try:
        box = Outbox(encoder, lambda _record: b"")
        box.pipe = pipe
        written = _fill(box, sender, encoder, 0)
        assert pipe.capacity == GROWN_SIZE
        yield box, pipe, sender, written
    finally:
        pipe.close()
        sender.close()
        writer.close()


def _fill(box: Outbox, sock: socket.socket, encoder: _wire.Encoder, start: int) -> int:
    """Write numbered 1 KB lines until the pipe takes no more within 50 ms; return the next number."""
    number = start
    while True:
        box.out = (encoder.line(f"{number:08d} " + "x" * 1014), [], 0, None)
        if not box.push(sock, time.monotonic() + 0.05):
            box.out = IDLE
            return number
        number += 1


@pytest.mark.skipif(not _pipe_can_grow(), reason="pipes cannot grow to 1 MiB here")
def test_a_full_pipe_grows_for_a_stalled_writer_and_keeps_every_unit_for_salvage() -> None:
    """Nobody reads: the pipe takes ~1 MiB, not 256 KiB; what was not read comes back whole, in order."""
    with _filled_pipe() as (box, pipe, _, written):
        assert written * 1024 > 3 * PIPE_SIZE, f"only {written} KB went in"
        # The writer reads 100,000 bytes (cutting a unit) and is gone: the rest
        # comes back from the first whole unit it did not touch, in order.
        assert len(os.read(pipe.read_fd, 100_000)) == 100_000
        items, dropped = pipe.salvage(box.encoder, _wire.DEFAULT_FRAME_LIMIT, 0)
        assert dropped == 0
        numbers = [int(str(item)[:8]) for item in items]
        assert numbers == list(range(98, written))


@pytest.mark.skipif(not _pipe_can_grow(), reason="pipes cannot grow to 1 MiB here")
def test_a_grown_pipe_shrinks_back_once_the_writer_has_read_it_down() -> None:
    """A grown pipe goes back to 256 KiB at the next check once it holds under 128 KiB."""
    with _filled_pipe() as (box, pipe, sender, written):
        pipe.check_at = 0.0
        assert pipe.due(time.monotonic())
        assert pipe.capacity == GROWN_SIZE, "shrunk while it held more than 256 KiB"
        data = b""
        while len(data) < written * 1024 - PIPE_SIZE // 4:
            data += os.read(pipe.read_fd, 1 << 20)
        pipe.check_at = 0.0
        assert pipe.due(time.monotonic())
        assert pipe.capacity == PIPE_SIZE
        # Nothing was lost by the shrink: the rest is still there, and the pipe fills again.
        while len(data) < written * 1024:
            data += os.read(pipe.read_fd, 1 << 20)
        lines = data.decode().splitlines()
        assert [int(line[:8]) for line in lines] == list(range(written))
        assert _fill(box, sender, box.encoder, written) > written
