"""A program's stream handler flushes once per turn of the writer, not once per record.

``logging.StreamHandler.emit`` writes a record and flushes: one write(2) per
record.  In adopt mode (the program's own handlers, ``install()`` with no
sink) the writer thread calls those handlers for every process's records, and
py-spy of ``benchmarks/_one.py --system logfunnel-adopt`` (2 workers) put 31%
of its samples in ``StreamHandler.flush``.  While the writer's ``handle()``
call runs, a ``DeferredFlush`` -- the handler's ``flush``, on the instance --
only notes that the stream holds records; ``Calls.flush_batched`` flushes it
at the end of the turn, as it flushes the file sinks install() built.

What stays as it was: the bytes and their order (one stream, one lock); every
other caller of ``flush`` (the program's own records, its ``flush()``,
``logging.shutdown``, a barrier) flushes at once, the writer's held records
included; a forked child never writes the parent's held buffer (the fork
sanitizer sets the handler aside and points its descriptor at /dev/null).

What a full disk sees: ``io.TextIOWrapper`` gathers text into an 8 KiB chunk
before handing it to its binary buffer, and drops the whole chunk when that
hand-over fails; with no flush after each record, one failure would then lose
a chunk of records while later, smaller chunks still fit the buffer -- a file
with gaps (``tests/test_faults.py``).  So the writer sets the stream's chunk
size to one byte while it defers (each record goes on to the buffer as it is
written, which is what the per-record flush did), and the stream keeps
stdlib's "a gap-free prefix of what fit" on a full disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from typing import Any

from logfunnel._core import sink as _sink


class DeferredFlush:
    """A program's stream handler's ``flush`` while the writer writes through it: at turn end.

    Only handlers whose ``flush`` is the stdlib's ``StreamHandler.flush``
    (``FileHandler``, the rotating handlers, and subclasses that keep it) get
    one: any other ``flush`` may mean more than "write the buffer".
    """

    __slots__ = ("_chunk", "_held_list", "_stream", "handler", "held", "inside")

    def __init__(self, handler: logging.StreamHandler[Any], held_list: list[DeferredFlush]) -> None:
        """Become ``handler.flush``; join ``held_list`` when the stream starts to hold records."""
        self.handler = handler
        #: Records the writer wrote and did not flush yet.
        self.held = 0
        #: The writer's thread while its ``handle()`` call runs, else None.
        self.inside: int | None = None
        self._held_list = held_list
        # The stream whose chunk size this object set, and what it was.
        self._stream: object = None
        self._chunk = 0
        handler.flush = self  # type: ignore[method-assign]

    @staticmethod
    def fits(handler: logging.Handler) -> bool:
        """Tell whether ``handler``'s flush may be deferred (see the class)."""
        return (
            type(handler).flush is logging.StreamHandler.flush
            and "flush" not in vars(handler)
            and not isinstance(handler, _sink.LineSink)
        )

    def __call__(self) -> None:
        if self.inside is not None and self.inside == threading.get_ident():
            stream = self.handler.stream
            if stream is not self._stream:  # the first record, or a rollover's new stream
                self._take(stream)
            if not self.held:
                self._held_list.append(self)
            self.held += 1
            return
        self.now()

    def now(self) -> None:
        """Flush as the stdlib's ``StreamHandler.flush`` does (under the handler's lock)."""
        handler = self.handler
        handler.acquire()
        try:
            logging.StreamHandler.flush(handler)
            self.held = 0
        finally:
            handler.release()

    def restore(self) -> None:
        """Give the handler its class's ``flush`` back (without flushing: maybe a forked child)."""
        self._give_back()
        if vars(self.handler).get("flush") is self:
            del self.handler.flush

    def _take(self, stream: object) -> None:
        """Hand each record on to ``stream``'s binary buffer as it is written (see the module)."""
        self._give_back()
        self._stream = stream
        if isinstance(stream, io.TextIOWrapper):
            self._chunk = stream._CHUNK_SIZE  # type: ignore[attr-defined]
            stream._CHUNK_SIZE = 1  # type: ignore[attr-defined]

    def _give_back(self) -> None:
        stream, self._stream = self._stream, None
        if isinstance(stream, io.TextIOWrapper) and self._chunk:
            # A stream the program closed or detached meanwhile refuses; it is done with.
            with contextlib.suppress(ValueError, AttributeError):
                stream._CHUNK_SIZE = self._chunk  # type: ignore[attr-defined]
        self._chunk = 0
