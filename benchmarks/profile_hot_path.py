"""Micro-benchmarks of logfunnel's hot paths, piece by piece, to show where the µs go.

Usage::

    python benchmarks/profile_hot_path.py            # ~1 minute; prints a table
    PYTHONPATH=/tmp/lf-head/src python benchmarks/profile_hot_path.py   # pinned, protocol 2+

Worker side: ``Logger.info -> FunnelHandler.emit -> Encoder.record -> sendall``.
Writer side: ``recv -> FrameReader.feed -> decode_record -> Logger.handle ->
FileHandler (format, write, flush)``.  Each line is the best of 5 timings, in µs of
CPU per record; "what if" lines time a change that is *not* in logfunnel, built
here from public pieces, so its gain can be weighed before anyone edits src/.
Records come from one call site in one thread: after the first, a connection
sends RECORD frames only (their site and thread were defined once, protocol 2),
which is what the per-record lines time; one line times a record that must
define its site and thread (the first on a new connection).
For whole-run profiles use py-spy (``py-spy record -f raw --subprocesses --
python benchmarks/_one.py --system logfunnel-process --procs 2 --n 100000 --dir /tmp``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import timeit
from typing import TYPE_CHECKING, Any

import msgpack

from logfunnel._core import connection as _connection
from logfunnel._core import handler as _handler
from logfunnel._core import route as _route
from logfunnel._core import state as _state
from logfunnel._core import wire as _wire
from logfunnel._core.options import Options

if TYPE_CHECKING:
    from collections.abc import Callable

FMT = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
PAYLOAD = "x" * 70


def best_us(fn: Callable[[], Any], number: int) -> float:
    """Best of 5 timings of ``number`` calls, in µs of this process's CPU per call.

    CPU time, not wall time: on a shared machine a wall clock also counts the
    time other processes held the core.
    """
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(number=number, repeat=5)) / number * 1e6


def row(label: str, us: float, note: str = "") -> None:
    print(f"  {label:<62} {us:7.2f} µs  {note}")


def _drain(fd: int, other: int) -> None:
    """Read and discard everything from a socket: a writer that is never behind."""
    os.close(other)  # the sending end's inherited copy, or EOF would never come
    sock = socket.socket(fileno=fd)
    while sock.recv(1 << 20):
        pass


def make_record(logger: logging.Logger) -> logging.LogRecord:
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, "task %d step %d value=%s",
                             (3, 12345, PAYLOAD), None, "f")


def syscalls() -> None:
    print("syscall cost on this machine (every per-record syscall costs this much):")
    row("os.getpid() (LogRecord.__init__ calls it once per record)", best_us(os.getpid, 200_000))
    fd = os.open(os.devnull, os.O_WRONLY)
    row("os.write(/dev/null, 100 B)", best_us(lambda: os.write(fd, b"x" * 100), 200_000))
    os.close(fd)


def worker_side(tmp: str) -> None:
    print("worker side, per logging call:")
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def call() -> None:
        logger.info("task %d step %d value=%s", 3, 12345, PAYLOAD)

    fh = logging.FileHandler(os.path.join(tmp, "floor.log"))
    fh.setFormatter(logging.Formatter(FMT))
    logger.handlers = [fh]
    floor = best_us(call, 20_000)
    row("floor: logger.info -> FileHandler (format, write, flush)", floor)
    fh.close()

    class Null(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

    logger.handlers = [Null()]
    base = best_us(call, 50_000)
    row("logger.info -> a handler that does nothing (logging's own cost)", base,
        f"= {base / floor:.2f}x floor")
    logging.logProcesses = False
    row("  ... with logging.logProcesses = False (no getpid syscall)", best_us(call, 50_000))
    logging.logProcesses = True

    record = make_record(logger)
    enc = _wire.Encoder()
    first = enc.record(record)  # with the SITE and THREAD frames defining its ids
    frame = enc.record(record)  # what every later record from that site and thread costs
    row(f"Encoder.record(record) ({len(frame)}-byte RECORD frame)",
        best_us(lambda: enc.record(record), 50_000))

    def define_and_record() -> bytes:
        enc.reset()
        return enc.record(record)

    row(f"  ... on a new connection (+ SITE and THREAD: {len(first)} bytes)",
        best_us(define_and_record, 50_000))
    enc.reset()
    enc.record(record)  # defined again: what send_record below sends is the lean frame

    parent, child = socket.socketpair()
    proc = multiprocessing.get_context("fork").Process(
        target=_drain, args=(child.fileno(), parent.fileno())
    )
    proc.start()
    child.close()
    flags = getattr(socket, "MSG_NOSIGNAL", 0)
    row("sock.sendall(frame) on a Unix socket (drained by another process)",
        best_us(lambda: parent.sendall(frame, flags), 50_000))

    conn = _connection.Connection("unix:/nonexistent", Options())
    conn._sock = parent  # a connected socket: send_record takes the hot path
    conn.send_record(record)  # defines the site and thread, as a first record does
    row("Connection.send_record(record) (lock + encode + sendall)",
        best_us(lambda: conn.send_record(record), 50_000))
    _state.connection = conn  # the process-wide connection, for this measurement
    logger.handlers = []
    _route.enable(_handler.send, every_record=True)
    total = best_us(call, 50_000)
    _route.disable()
    row("logger.info -> route -> send_record (the whole worker-side path)", total,
        f"= {total / floor:.2f}x floor")
    parent.close()
    proc.join()
    _state.connection = None


def frames_for(n: int) -> tuple[bytes, list[bytes]]:
    """Return what one connection sends for ``n`` records, and each frame on its own.

    The first record brings the SITE and THREAD frames that define its ids.
    """
    logger = logging.getLogger("bench")
    enc = _wire.Encoder()
    sent = []
    for j in range(n):
        rec = logger.makeRecord("bench", logging.INFO, __file__, 1, "task %d step %d value=%s",
                                (3, j, PAYLOAD), None, "f")
        rec.processName = "w3"
        sent.append(enc.record(rec))
    blob = b"".join(sent)
    frames = []
    offset = 0
    while offset < len(blob):
        (size,) = _wire.HEADER.unpack_from(blob, offset)
        frames.append(blob[offset : offset + _wire.HEADER_SIZE + size])
        offset += _wire.HEADER_SIZE + size
    return blob, frames


def writer_side(tmp: str) -> None:
    print("writer side, per record:")
    n = 20_000
    blob, frames = frames_for(n)
    chunk = 64 * 1024
    chunks = [blob[i : i + chunk] for i in range(0, len(blob), chunk)]

    def feed_all() -> list[Any]:
        reader = _wire.FrameReader()
        out: list[Any] = []
        for c in chunks:
            out += reader.feed(c)
        return out

    row("FrameReader.feed (64 KB chunks; header + msgpack.unpackb per frame)",
        best_us(feed_all, 1) / n)
    payloads = [f[_wire.HEADER_SIZE :] for f in frames]

    def unpackb_all() -> None:
        for p in payloads:
            _wire.decode_payload(p)

    row("  of which decode_payload (unpackb with 6 keyword args) alone",
        best_us(unpackb_all, 1) / n)

    def unpacker_all() -> None:
        # What if: one streaming Unpacker per connection; frames still length-checked.
        unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True,
                                    unicode_errors="replace", max_buffer_size=8 << 20)
        for p in payloads:
            unpacker.feed(p)
            next(unpacker)

    row("  what if: a streaming msgpack.Unpacker per connection", best_us(unpacker_all, 1) / n)
    fields = feed_all()
    tables = _wire.Tables()  # the writer's per-connection definitions
    for f in fields:
        if f[0] in (_wire.SITE, _wire.THREAD):
            tables.define(f)
    fields = [f for f in fields if f[0] == _wire.RECORD]
    row("decode_record(fields, tables) (type checks + id lookups + LogRecord)",
        best_us(lambda: [_wire.decode_record(f, tables) for f in fields], 1) / n)
    records = [_wire.decode_record(f, tables) for f in fields]

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    from logfunnel.sinks.files import LineFormatter  # noqa: PLC0415

    path = os.path.join(tmp, "writer.log")
    fh = logging.FileHandler(path)
    fh.setFormatter(LineFormatter(FMT))
    root.handlers = [fh]
    bench = logging.getLogger("bench")
    bench.propagate = True
    bench.handlers = []

    def dispatch_all() -> None:
        for r in records:
            if bench.isEnabledFor(r.levelno):
                bench.handle(r)

    per_record = best_us(dispatch_all, 1) / n
    row("Logger.handle(record) -> FileHandler (format, write, flush per record)", per_record)

    class BatchFile(logging.FileHandler):
        """What if: the writer's own file sink flushes once per read batch, not per record."""

        def emit(self, record: logging.LogRecord) -> None:
            self.stream.write(self.format(record) + self.terminator)  # type: ignore[union-attr]

    bf = BatchFile(path)
    bf.setFormatter(LineFormatter(FMT))
    root.handlers = [bf]

    def dispatch_batched() -> None:
        for i, r in enumerate(records):
            bench.handle(r)
            if i % 100 == 99:  # ~ one recv of 64 KB
                bf.flush()
        bf.flush()

    batched = best_us(dispatch_batched, 1) / n
    row("  what if: flush once per 100 records (one write(2) per batch)", batched,
        f"saves {per_record - batched:.2f} µs")
    fmt = LineFormatter(FMT)
    row("  LineFormatter.format(record)", best_us(lambda: [fmt.format(r) for r in records], 1) / n)
    row("  Formatter.formatTime(record) alone (localtime + strftime)",
        best_us(lambda: [fmt.formatTime(r) for r in records], 1) / n)
    root.handlers = [fh]
    fh.close()
    bf.close()
    root.handlers = []

    # recv: a 256 KB buffer per call, as Writer._read does, vs recv_into a reused buffer.
    a, b = socket.socketpair()
    frame = frames[-1]  # a RECORD frame (frames[0] and [1] define its site and thread)

    def recv_fresh() -> None:
        a.sendall(frame)
        b.recv(256 * 1024)

    buf = bytearray(256 * 1024)
    view = memoryview(buf)

    def recv_reused() -> None:
        a.sendall(frame)
        got = b.recv_into(view)
        bytes(view[:got])

    def recv_small() -> None:
        a.sendall(frame)
        b.recv(4096)

    base = best_us(recv_small, 20_000)
    row("send + recv(4 KB) of one frame (syscall pair)", base)
    row("send + recv(256 KB) of one frame (Writer._read's size)", best_us(recv_fresh, 20_000))
    row("  what if: send + recv_into a reused 256 KB buffer", best_us(recv_reused, 20_000))
    a.close()
    b.close()


def main() -> int:
    import logfunnel  # noqa: PLC0415

    print(f"logfunnel from {os.path.dirname(logfunnel.__file__)}; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        syscalls()
        worker_side(tmp)
        writer_side(tmp)
        print(f"({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
