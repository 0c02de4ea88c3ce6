"""A process's records travel over a pipe of its own; its socket says that the writer lives.

Why a pipe: a Unix stream socket queues one kernel buffer (``sk_buff``) per
send, which the writer's kernel copies out and frees one by one; a pipe
appends a small write to the page the previous one filled.
``benchmarks/pipe_vs_socket.py`` (no logfunnel, 128-byte lines): the reader's
CPU per record 0.71-0.95 µs over sockets against 0.07-0.10 µs over pipes at 16
and 64 senders, each sender's 1.61-1.93 against 0.78-0.87 µs.

How it goes (protocol 4; LEAVING since 5)::

    sender                                      writer
    connect(unix socket), HELLO + read end ---> SCM_RIGHTS: reads the pipe from now on
    write(pipe): records, lines       ------> the pipe's bytes, as a socket's were
    FLUSH, on the socket (flush())    ------> a barrier: every pipe read, sinks flushed
    LEAVING, on the socket (exit)     ------> this pipe read and written
                                          <--- FLUSHED, on the socket
    the socket's end of stream            <--- the writer is done with the pipe

FLUSH and LEAVING go on the socket, not in the pipe, because the writer naps
between busy turns on its control channel and the local processes' sockets
only (``nap``): records in a pipe wake no one, a frame on the socket is served
at once, and since the pipe is read before the answer, everything written
before the question is in the sinks by then.

The sender keeps a read end of its own.  So the pipe never loses its last
reader while the sender lives: a write never raises SIGPIPE (a program may have
set it back to the default, which kills) or EPIPE, and what the writer had not
read when it went away (``shutdown()`` under way, a writer process killed) is
still in the pipe: the sender reads it back (``salvage``) and sends it again,
to a restarted writer or to its fallback.  The writer stops reading a pipe
before it closes the socket, so once the socket ends nobody else reads.

The sender looks at the socket when the pipe is full, every quarter of a second
while it logs (``due``), when a flush gets no answer, and at exit.

A pipe holds 256 KiB; one that fills grows to 1 MiB (``grow``) and shrinks
back once the writer has read it down (``settle``, at a ``due``).  A writer
stopped for a second (``benchmarks/_one.py --mode backlog``: 4 processes,
100,000 records) then finds ~36,000 records waiting instead of ~9,000, and
the rest, logged after it resumed, is produced sooner.

Who owns what: a ``RecordPipe`` belongs to one ``Connection`` (both ends are
this process's descriptors, closed with it, also in a forked child) and is
used only by the thread holding that connection's lock.
"""

from __future__ import annotations

import array
import collections
import contextlib
import fcntl
import functools
import os
import select
import socket
import stat
import termios
import time

from logfunnel._core import protocol as _protocol
from logfunnel._core import wire as _wire

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Final

#: What the pipe may hold: 256 KiB, like a socket's ~200 KB (the default 64 KiB
#: holds only 8 records of 8 KB).  Unprivileged users may ask for up to
#: /proc/sys/fs/pipe-max-size (1 MiB by default); beyond their share of pipe
#: pages the kernel refuses, and the pipe keeps what it has.
PIPE_SIZE: Final = 256 * 1024
#: What a pipe that filled grows to (``RecordPipe.grow``), and shrinks back from
#: once the writer has caught up (``RecordPipe.settle``): 1 MiB, the default
#: /proc/sys/fs/pipe-max-size, rides out a writer that stalls for a burst of
#: ~9,000 records of 117 bytes per process instead of ~2,200, without a byte of
#: the process's own memory.  Grown only when full because the kernel counts a
#: pipe's size against the user's share of pipe pages (pipe-user-pages-soft, 64
#: MiB by default) whether or not it holds anything: 64 processes at 1 MiB would
#: use it all, and then every new pipe of that user's other programs gets 8 KiB.
GROWN_SIZE: Final = 1024 * 1024
#: How often a sender that logs looks at its socket for the writer's end (one
#: non-blocking peek): records written after the writer went away wait in the
#: pipe until then, or until the sender flushes or exits.
CHECK_SECONDS: Final = 0.25
_NO_WAIT: Final = getattr(socket, "MSG_NOSIGNAL", 0) | getattr(socket, "MSG_DONTWAIT", 0)
_SET_SIZE: Final = getattr(fcntl, "F_SETPIPE_SZ", None)
_GET_SIZE: Final = getattr(fcntl, "F_GETPIPE_SZ", None)
#: Room for the one descriptor a HELLO may carry (and a few more, to close them).
_FD_SPACE: Final = socket.CMSG_SPACE(4 * array.array("i").itemsize)


def queued(fd: int | socket.socket) -> int:
    """Return how many bytes wait unread in the pipe (or socket) ``fd`` (FIONREAD)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    except OSError:
        return 0
    return buf[0]


def ask(sock: socket.socket, frame: bytes) -> bool:
    """Send a control frame on the socket in one call; False if it did not go.

    Nothing else is sent on a local peer's socket after its HELLO, so a frame
    of a few bytes goes whole (one kernel buffer) or, if the writer never read
    its socket and it is full, not at all.  A writer that shut its end
    (``shutdown()`` under way) refuses it: False, while it may still read the
    pipe, which is why this never reads the pipe back itself.
    """
    try:
        return sock.send(frame, _NO_WAIT) == len(frame)
    except OSError:
        return False


def writer_gone(sock: socket.socket) -> bool:
    """Tell whether the writer closed its end of ``sock`` (one non-blocking peek)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class RecordPipe:
    """The pipe one connection writes its frames to, and what it needs to read them back."""

    __slots__ = (
        "capacity",
        "check_at",
        "ends",
        "may_grow",
        "read_fd",
        "write",
        "write_fd",
        "written",
    )

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        #: ``os.write`` on the write end, as one C callable: the outbox appends
        #: its count in the same C call (see ``outbox``), so no signal handler
        #: can run between the write and its count.
        self.write: Callable[[bytes | memoryview], int] = functools.partial(os.write, write_fd)
        self.capacity = pipe_capacity(write_fd)
        #: Bytes of the units written whole since the pipe opened.
        self.written = 0
        #: Where each unit written whole within the last ``capacity`` bytes ends
        #: (``written`` then), to find the first whole unit the writer did not read.
        self.ends: collections.deque[int] = collections.deque()
        self.check_at = time.monotonic() + CHECK_SECONDS
        #: False after the kernel refused to grow the pipe, until the next ``due``.
        self.may_grow = True

    @classmethod
    def open(cls, sock: socket.socket, hello: bytes) -> RecordPipe | None:
        """Send ``hello`` with a new pipe's read end over ``sock``; None: no pipe, hello sent.

        Without a pipe (descriptors exhausted), the connection carries its
        frames on the socket, as protocol 3 did.  Raises OSError if ``sock``
        fails.
        """
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            sock.sendall(hello, _socket_flags())
            return None
        try:
            if _SET_SIZE is not None:
                with contextlib.suppress(OSError):  # EPERM: over this user's share
                    fcntl.fcntl(write_fd, _SET_SIZE, PIPE_SIZE)
            os.set_blocking(write_fd, False)
            if socket.send_fds(sock, [hello], [read_fd], _socket_flags()) != len(hello):
                sock.sendall(hello[1:], _socket_flags())  # cannot happen for ~40 bytes
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        return cls(read_fd, write_fd)

    def done(self, count: int) -> None:
        """Note a unit of ``count`` bytes written whole."""
        self.written = end = self.written + count
        ends = self.ends
        ends.append(end)
        # Kept: the last end at or before `end - capacity` too, the start of the
        # oldest unit the pipe can still hold.
        floor = end - self.capacity
        while len(ends) > 1 and ends[1] <= floor:
            ends.popleft()

    def due(self, now: float) -> bool:
        """Tell whether it is time to look at the socket again (and start the next wait).

        Also when a grown pipe shrinks back (``settle``) and a refused one may ask again.
        """
        if now < self.check_at:
            return False
        self.check_at = now + CHECK_SECONDS
        self.may_grow = True
        if self.capacity > PIPE_SIZE:
            self.settle()
        return True

    def grow(self) -> bool:
        """Let the full pipe hold ``GROWN_SIZE``; True if it holds more than before.

        The writer is behind (a slow sink, a stopped or busy writer): rather
        than wait for room, this process's records wait in the kernel.  A
        refusal (over this user's share of pipe pages, or a lower
        pipe-max-size) is not asked again before the next ``due``.
        """
        if self.capacity >= GROWN_SIZE or not self.may_grow or _SET_SIZE is None:
            return False
        try:
            fcntl.fcntl(self.write_fd, _SET_SIZE, GROWN_SIZE)
        except OSError:
            self.may_grow = False
            return False
        before, self.capacity = self.capacity, pipe_capacity(self.write_fd)
        return self.capacity > before

    def settle(self) -> None:
        """Shrink a grown pipe back to ``PIPE_SIZE`` once the writer has nearly caught up.

        The kernel refuses (EBUSY) while the pipe holds more than that; the
        next ``due`` asks again.  ``done`` kept the unit ends of every byte the
        pipe held (never more than ``capacity``), so a shrink loses none.
        """
        if _SET_SIZE is None or queued(self.read_fd) > PIPE_SIZE // 2:
            return
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_fd, _SET_SIZE, PIPE_SIZE)
        self.capacity = pipe_capacity(self.write_fd)

    def salvage(
        self, encoder: _wire.Encoder, frame_limit: int, partial: int
    ) -> tuple[list[logging.LogRecord | str], int]:
        """Read back what the writer did not read: (records and lines in order, drop counts).

        Only once the writer is done with the pipe (its socket ended).
        ``partial``: bytes of a unit cut short that the outbox sends again
        whole (``Outbox.requeue``), so they are skipped here.  A unit the
        writer read part of is left out: the writer discarded its part as a
        cut frame, and the rest is of no use.  Records are rebuilt with the
        sites and threads ``encoder`` defined on this connection.
        """
        data = bytearray()
        with contextlib.suppress(OSError):
            os.set_blocking(self.read_fd, False)
            while True:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    break
                data += chunk
        whole = len(data) - min(partial, len(data))
        # The writer read the stream of whole units up to `consumed`: what it
        # read of the unit there (if any) is lost with it; the next one is whole.
        consumed = self.written - whole
        start = next((end for end in self.ends if end >= consumed), self.written)
        if consumed == 0 or (self.ends and self.ends[0] > consumed):
            start = consumed if consumed == 0 else self.ends[0]
        reader = _wire.FrameReader(frame_limit)
        try:
            frames = reader.feed(bytes(data[start - consumed : whole])) if whole > 0 else []
        except _wire.FrameError:
            frames = []
        tables = encoder.tables()
        items: list[logging.LogRecord | str] = []
        dropped = 0
        for fields in frames:
            kind = fields[0]
            if kind == _wire.LINE and len(fields) == 2 and type(fields[1]) is str:
                items.append(fields[1])
            elif kind == _wire.RECORD:
                with contextlib.suppress(_wire.FrameError):
                    items.append(_protocol.decode_record(fields, tables))
            elif kind in (_wire.SITE, _wire.THREAD):
                with contextlib.suppress(_wire.FrameError):
                    tables.define(fields)
            elif kind == _wire.DROPPED and len(fields) == 2 and type(fields[1]) is int:
                dropped += fields[1]
        return items, dropped

    def wait_until_read(self, sock: socket.socket, wait: float, leaving: bytes) -> bool:
        """At exit: wait until the writer has read the pipe; True if it never will (it went).

        A writer that is shutting down reads each pipe one last time and then
        closes the socket; what this process wrote after that read would go
        with the pipe when this process exits.  So while the pipe holds bytes
        this waits, at most ``wait`` seconds, for the writer to read them or to
        close the socket.  It first sends ``leaving`` (a LEAVING frame) on the
        socket: a writer napping between turns (``nap``) serves it at once,
        reading this pipe alone, and its answer ends the wait.
        """
        deadline = time.monotonic() + wait
        pause = 0.001
        if queued(self.read_fd):
            ask(sock, leaving)
        while queued(self.read_fd):
            if writer_gone(sock):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if select.select([sock], [], [], min(pause, remaining))[0]:
                # The answer, read so that the socket stops being readable.
                try:
                    if not sock.recv(65536, socket.MSG_DONTWAIT):
                        return True
                except BlockingIOError:
                    pass
                except OSError:
                    return True
            pause = min(pause * 2, 0.05)
        return False

    def close(self) -> None:
        """Close both ends (this process's descriptors only)."""
        for fd in (self.write_fd, self.read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def pipe_capacity(fd: int) -> int:
    """Return how many bytes the pipe ``fd`` holds (64 KiB where that cannot be asked)."""
    if _GET_SIZE is not None:
        with contextlib.suppress(OSError):
            return int(fcntl.fcntl(fd, _GET_SIZE))
    return 64 * 1024


def receive_pipe(sock: socket.socket, buffer: memoryview) -> tuple[int, int | None]:
    """Read a local peer's first bytes into ``buffer``, and the pipe its HELLO may carry.

    The writer's side of ``RecordPipe.open``.  Returns how many bytes came (-1
    if the kernel dropped a descriptor the peer sent: no room for it here) and
    the pipe's read end, set non-blocking, if exactly one pipe came with them;
    every other descriptor is closed.
    """
    got, ancillary, flags, _ = sock.recvmsg_into([buffer], _FD_SPACE)
    truncated = bool(flags & socket.MSG_CTRUNC)
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    pipe = None
    for index, fd in enumerate(fds):
        if index == 0 and got and not truncated and _is_pipe(fd):
            os.set_blocking(fd, False)
            pipe = fd
        else:  # not a pipe, or more than one: not ours to keep
            with contextlib.suppress(OSError):
                os.close(fd)
    return (-1 if truncated else got), pipe


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _socket_flags() -> int:
    return getattr(socket, "MSG_NOSIGNAL", 0)
