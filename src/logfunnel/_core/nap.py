"""How long the writer waits after a turn of its loop, so that records gather between reads.

Each read of a connection costs a ``recv`` and a Python call chain however
few records it brings.  A writer that reads as soon as anything arrives pays
that per record and wakes on every send; one that waits out the rest of a
short nap after a busy turn lets records gather in the senders' socket
buffers, where their sends wake no one, and takes them in a few large reads
(writer CPU per record 6.5-7.7 -> 3.2-3.3 µs, 2 workers on 2 cores).

The one thing a nap must never do is let a sender's buffer fill: a sender
with no room waits, and the writer's nap becomes the whole job's pace.  A
Unix socket's buffer holds ~208 KiB, so at 8 KB a record two workers filled
theirs within a fixed 1 ms nap and ran at 0.7x the floor (34-35k against
43-53k records/s, ``benchmarks/_one.py --size 8192 --n 10000``).  So the nap
is also bounded by the pace of the fastest connection: how much of its
socket buffer one read emptied in the last turn, over the time since the turn
before ended, tells how long that connection takes to fill ``NO_NAP_FILL``.

How much of the buffer a read emptied is counted in the kernel's own
accounting, not in bytes: each send takes a buffer of its own, so 278 sends of
117 bytes fill what 24 sends of 8 KB fill (a Unix socket's 208 KiB, measured
with a socket pair).  ``fill`` bounds that from above from what a read brought
and how many records it held.  Counted in bytes, a bound that let 8 KB records
nap (32 KiB) let small ones fill their senders' buffers.  Measured with the
process host (``benchmarks/_one.py``, old and new interleaved): 4 workers of
100-byte records, medians of 20 runs, p99 per call 99.5 µs with the 32 KiB
bound in bytes, 80.0 µs with this one (83.5 with the 16 KiB bound and no pace
bound before both), 108k against 115k records/s; 2 workers of 8 KB records,
medians of 16, 39.0k, 41.2k and 37.7k records/s.

Since protocol 4 a local process writes to a pipe (``pipe``), which holds
bytes in pages, so its fill is what a read brought.  The rule that halved the
nap whenever one read brought over 8 KiB (``FULL_READ``, a quarter of a socket
buffer counted the kernel's way) then held the nap of one busy worker at 1 ms:
each of its reads brought ~70 records, and each turn costs the writer a wake-up
from ``epoll_wait`` (~29 µs of CPU on the 2-core VM of docs/benchmarks.md, for a
1 ms sleep) and a Python call chain.  Now the nap doubles on every busy turn
up to ``MAX_NAP`` and only the pace bound shortens it: writer CPU per record,
process host, 100-byte records, old and new interleaved, medians of 6, 1
connection 2.9 -> 1.55 µs, 64 connections 2.81 -> 1.72 µs, with p99 per call
there 8.9 -> 0.2 ms (a nap of 1 ms made 64 senders wake the writer on every
turn).

``Nap.after_turn`` is the whole policy; it reads no clock, so it can be
checked step by step with made-up turns.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUSY_BYTES", "IDLE", "MAX_NAP", "NAP", "NO_NAP_FILL", "Nap", "fill", "pipe_fill"]

#: A turn that read at least this much (counted over turns) starts a burst: it naps.
BUSY_BYTES: Final = 4096
#: The shortest nap, and the first of a burst.
NAP: Final = 0.001
#: The longest nap.  The nap doubles up to it on every busy turn of a burst
#: (the pace bound, ``NO_NAP_FILL``, keeps each wait short enough).  Each nap
#: costs the writer a wake-up, however many records it gathered: 8 ms left
#: 1.56 µs of writer CPU per record at 64 connections and 1.35 µs at one, 32
#: ms 0.78 and 1.0 (with the pipe bound below).  Records reach the file up to
#: this much later in a burst; the owner's flush() and shutdown(), and a local
#: process's flush() or exit, end a nap at once (they come on sockets).
MAX_NAP: Final = 0.032
#: No nap may let the fastest connection fill more of its buffer than this
#: (``fill``, ``pipe_fill``): half of a local process's pipe (~1,100 records of
#: 117 bytes in 256 KiB, 16 of 8 KB), and under a third of a socket's 208 KiB at any record
#: size (~64 records of 117 bytes, ~4 of 8 KB).  A read that emptied more already says
#: the connection got ahead: that turn does not nap at all.  (96 KiB, which let
#: 8 KB records gather ~46 KiB, ran them at 33.5k records/s against 41.9k for
#: the 32 KiB bound in bytes in the same runs, medians of 16.)
NO_NAP_FILL: Final = 64 * 1024
#: ``fill``'s bound on the kernel's accounting: at most twice the bytes sent,
#: plus this per send (measured per send: 766 bytes for 117, 2,290 for 1 KB,
#: 4,347 for 2 KB, 8,875 for 8 KB).
SEND_FILL: Final = 768
#: A busy turn this long after the last nap starts a new burst, at ``NAP``.
IDLE: Final = 0.1


class Nap:
    """The writer loop's nap: how long it waits after each turn, from what the turn read."""

    __slots__ = ("_last_turn_end", "length", "napped")

    def __init__(self) -> None:
        """Start idle: the first busy turn starts a burst at ``NAP``."""
        #: The nap of the current burst, between ``NAP`` and ``MAX_NAP``.
        self.length = NAP
        #: When the last nap ended (the clock ``after_turn`` is given).
        self.napped = float("-inf")
        # When the last turn's work ended (its nap, if any, came after): every
        # connection read in that turn gathered what the next turn reads since
        # then at the latest.
        self._last_turn_end = float("-inf")

    def after_turn(
        self, turn_started: float, now: float, read_bytes: int, largest_fill: int
    ) -> float | None:
        """Return how long to wait now (0: not at all) after a busy turn; None after another.

        ``turn_started``: when the turn began (its select returned); ``now``:
        the same clock now; ``read_bytes``: bytes read since the last busy
        turn, over turns; ``largest_fill``: the most of a pipe or socket
        buffer one read emptied since then (``fill``).  After a busy turn the
        caller waits, starts counting both anew, and calls ``napped_at``.
        """
        gathering, self._last_turn_end = turn_started - self._last_turn_end, now
        if not self.busy(turn_started, read_bytes):
            return None
        if turn_started - self.napped > IDLE:
            self.length = NAP  # a new burst starts at the shortest nap
        else:
            self.length = min(self.length * 2, MAX_NAP)
        if largest_fill > NO_NAP_FILL:
            self.length = NAP
            return 0.0
        wait = self.length
        if largest_fill:
            # The fastest connection filled largest_fill over at least
            # `gathering` (from its read last turn to its read in this one), so
            # its pace is at most largest_fill / gathering: at that pace it
            # fills NO_NAP_FILL in this long (this turn's own time included).
            wait = min(wait, NO_NAP_FILL * max(gathering, 0.0) / largest_fill)
        return max(0.0, wait - (now - turn_started))

    def busy(self, turn_started: float, read_bytes: int) -> bool:
        """Tell whether a turn that read ``read_bytes`` since the last nap is part of a burst.

        Counted over turns, not per turn: records that trickle in woke a turn
        each, which read too little to nap after.  Once a burst started, every
        turn that read naps (until ``IDLE``).
        """
        return read_bytes >= BUSY_BYTES or bool(
            read_bytes and turn_started - self.napped < IDLE
        )

    def napped_at(self, when: float) -> None:
        """Note that a busy turn's nap (perhaps of 0 s) ended at ``when``."""
        self.napped = when


def fill(read: int, records: int) -> int:
    """Bound how much of a socket buffer a read of ``read`` bytes holding ``records`` emptied."""
    return 2 * read + SEND_FILL * records


def pipe_fill(read: int, half: int) -> int:
    """Count a pipe read of ``read`` bytes in ``fill``'s units: half its pipe is ``NO_NAP_FILL``.

    ``half``: half of what the pipe holds (``F_GETPIPE_SZ``; 256 KiB unless the
    kernel refused the sender its share of pipe pages).
    """
    return read * NO_NAP_FILL // max(half, 1)
