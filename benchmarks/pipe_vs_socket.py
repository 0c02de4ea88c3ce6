"""What one reader pays per record, and each sender, over a Unix socket or a pipe per process.

Usage::

    python benchmarks/pipe_vs_socket.py            # ~20 s; prints one line per run

No logfunnel here: P forked processes each write ``512,000 / P`` bare lines of 128
bytes (one ``os.write`` per line, as a logging call sends one record), each over its
own connection -- a ``socketpair`` or an ``os.pipe`` -- and one reader drains them all
with ``epoll`` and ``readv`` into one 256 KiB buffer, as the writer loop does.  CPU
time from ``getrusage`` (the reader: ``RUSAGE_SELF``; the senders: ``RUSAGE_CHILDREN``),
per record, user and system apart.  It isolates the transport's cost: a Unix stream
socket queues one buffer (``sk_buff``) per send, which the reader's kernel frees one
by one; a pipe appends a small write to the page the last one filled.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import time

LINE = b"2026-12-02 16:00:00,123 ForkPoolWorker-3 bench INFO task 12 step 345 value=" + b"x" * 52
TOTAL = 512_000


def connection(kind: str) -> tuple[int, int]:
    """Return (read end, write end) of a fresh socket pair or pipe."""
    if kind == "socket":
        r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return r.detach(), w.detach()
    return os.pipe()


def sender(fd: int, count: int) -> None:
    """Write ``count`` lines, one write each, then leave without the interpreter's teardown."""
    line = LINE + b"\n"
    for _ in range(count):
        data = memoryview(line)
        while data:
            data = data[os.write(fd, data) :]
    os._exit(0)


def run(kind: str, procs: int) -> str:
    """One run: ``procs`` senders, one reader; return its line of results."""
    count = TOTAL // procs
    ends, pids = [], []
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(procs):
        read_end, write_end = connection(kind)
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            sender(write_end, count)
        os.close(write_end)
        os.set_blocking(read_end, False)
        ends.append(read_end)
        pids.append(pid)
    poller = select.epoll()
    for fd in ends:
        poller.register(fd, select.EPOLLIN)
    buffer = bytearray(256 * 1024)
    lines = reads = 0
    left = len(ends)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    while left:
        for fd, _ in poller.poll():
            try:
                got = os.readv(fd, [buffer])
            except BlockingIOError:
                continue
            reads += 1
            if not got:
                poller.unregister(fd)
                os.close(fd)
                left -= 1
                continue
            lines += buffer.count(b"\n", 0, got)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    for pid in pids:
        os.waitpid(pid, 0)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    poller.close()
    total = count * procs
    if lines != total:
        msg = f"{kind}: read {lines:,} lines of {total:,}"
        raise RuntimeError(msg)

    def per(a: float, b: float) -> float:
        return (a - b) / total * 1e6

    ru = per(after.ru_utime, before.ru_utime)
    rs = per(after.ru_stime, before.ru_stime)
    su = per(after_children.ru_utime, before_children.ru_utime)
    ss = per(after_children.ru_stime, before_children.ru_stime)
    return (
        f"{kind:<6} P={procs:<3} reader {ru + rs:5.2f} µs/rec (user {ru:.2f}, system {rs:.2f})  "
        f"senders {su + ss:5.2f} µs/rec (user {su:.2f}, system {ss:.2f})  "
        f"{total / wall:>11,.0f} rec/s  {total / reads:6.0f} rec/read"
    )


def main() -> None:
    """Two rounds of every (P, transport), interleaved."""
    for _ in range(2):
        for procs in (2, 16, 64):
            for kind in ("socket", "pipe"):
                print(run(kind, procs), flush=True)


if __name__ == "__main__":
    main()
