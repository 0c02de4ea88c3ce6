"""The sink protocol: what the writer asks of a sink it hands rendered lines to.

A sink is a ``logging.Handler``.  One that also subclasses ``LineSink`` takes
lines rendered elsewhere (in the process that logged, ``render="lines"``)
through ``write_line`` (a run of them as one block: ``write_lines``), keeps
what the writer loop's thread writes until the loop flushes once per batch,
and counts in ``landed`` the records that reached its destination.
``logfunnel.sinks`` holds the implementations; the writer (``dispatch``,
``calls``) knows only this module, so the core never imports a sink.  Owned
by the writer: a sink is used from the writer loop's thread, and, in a
thread host, from the installing program's threads under the handler's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["LINE_SINKS", "Exporter", "LineSink", "LinesLostError", "write_line", "write_lines"]


class LinesLostError(OSError):
    """A file sink could not write some lines (a full disk): they are dropped, and counted.

    ``records`` lines did not reach the file; ``written`` lines of the same
    batch did, whole.  Raised from ``LineFile.flush`` with the ``OSError``
    that stopped the write as its cause and its ``errno`` and ``strerror``.
    """

    def __init__(self, cause: OSError, records: int, written: int, lost_bytes: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.records = records
        self.written = written
        self.lost_bytes = lost_bytes


class LineSink(logging.Handler):
    """A handler the writer can give rendered lines, and flush once per batch.

    Subclasses put it first among their bases (``class FileSink(LineSink,
    logging.FileHandler)``): it defines only what the stock handlers lack.
    """

    #: The writer loop's thread (``threading.get_ident()``), set by the loop:
    #: what that thread writes may wait for the loop's flush.
    batch_thread: int | None = None
    #: Records that reached the destination (a full disk drops and counts the others).
    landed = 0

    def write_line(self, text: str) -> None:
        """Write ``text``, rendered with this sink's formatter, as ``emit`` would write a record."""
        raise NotImplementedError

    def write_lines(self, data: bytes, count: int) -> bool:
        r"""Write ``count`` lines as one block, or nothing and return False (then: line by line).

        ``data`` is the lines encoded as UTF-8, each ending in ``"\n"``, none
        holding another line break: what ``write_line`` would write for each,
        with ``terminator`` ``"\n"``.  A sink writes the block only when that
        is what it would have written line by line: a rotating sink refuses a
        block that would reach its size limit or the end of its period, so
        the lines are written one by one and it rotates between two of them.
        Raising means nothing was written.
        """
        del data, count  # this sink writes line by line
        return False

    def lines_lost(self, lost: LinesLostError) -> None:
        """Correct what the sink counts (a size, for rotation) for lines that were not written."""


class Exporter(logging.Handler):
    """A sink that hands records to a queue of its own, sent elsewhere by its own thread.

    Its ``emit`` never waits for the destination: when the queue is full it
    drops the record, counts it in ``exported_dropped`` (``Stats.exported_dropped``)
    and calls ``handleError``, so the writer's watch reports the episode once.
    """

    #: Records dropped since the sink was built (queue full, or unsent at close).
    exported_dropped = 0
    #: Records its queue took: after a drop, growing again means it writes again.
    landed = 0


def wait_sent(
    ready: threading.Condition,
    sender: threading.Thread,
    pending: Callable[[], bool],
    timeout: float,
) -> bool:
    """Wait up to ``timeout`` s until ``pending()`` is false; True then, False if not in time.

    Called with ``ready`` (the exporter's condition) not held; ``pending`` reads
    the exporter's queue under it.  Never called by the writer loop (it must not
    wait for a collector): by ``close()`` and by tests.
    """
    deadline = time.monotonic() + timeout
    with ready:
        ready.notify_all()  # a sender gathering a batch sends it now
        while pending():
            left = deadline - time.monotonic()
            if left <= 0 or not sender.is_alive():
                return False
            ready.wait(min(left, 0.1))  # woken by the sender after each batch
    return True



#: The handlers ``write_line`` can write a rendered line through.
LINE_SINKS: Final = (LineSink, logging.StreamHandler)


def write_line(handler: logging.Handler, text: str) -> None:
    """Write ``text``, a line rendered with ``handler``'s formatter, as its ``emit`` would.

    Takes the handler's lock as ``Handler.handle`` does; a failure goes to
    ``handler.handleError`` with a record holding the text, as a failing
    ``emit`` would.
    """
    handler.acquire()
    try:
        if isinstance(handler, LineSink):
            handler.write_line(text)
        else:
            stream: Any = handler.stream  # type: ignore[attr-defined]
            stream.write(text + handler.terminator)  # type: ignore[attr-defined]
            handler.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logging.makeLogRecord({"msg": text}))
    finally:
        handler.release()


def write_line_run(
    handler: logging.StreamHandler[Any], texts: list[str], failed: Callable[[Exception], None]
) -> None:
    """``write_line`` for each of ``texts`` in turn, taking the handler's lock once.

    Each line is written and flushed, and goes to ``handleError`` if that
    fails, exactly as ``write_line`` does it; an exception escaping that
    (a program's own ``handleError``) goes to ``failed`` and the next line
    is written, as the next ``write_line`` call would.
    """
    handler.acquire()
    try:
        terminator = handler.terminator
        for text in texts:
            try:
                try:
                    handler.stream.write(text + terminator)
                    handler.flush()
                except RecursionError:
                    raise
                except Exception:
                    handler.handleError(logging.makeLogRecord({"msg": text}))
            except Exception as exc:
                failed(exc)
    finally:
        handler.release()


def write_lines(handler: LineSink, data: bytes, count: int) -> None:
    """Write ``count`` lines (see ``LineSink.write_lines``) as ``write_line`` would, each.

    As one block when the sink takes it; else line by line through
    ``write_line``.  A block that fails goes to ``handler.handleError`` once
    per line, as ``count`` failing lines would, so the writer's watch counts
    records, not calls.
    """
    handler.acquire()
    try:
        try:
            if handler.write_lines(data, count):
                return
        except RecursionError:
            raise
        except Exception:
            for text in data.decode().split("\n")[:count]:
                handler.handleError(logging.makeLogRecord({"msg": text}))
            return
        for text in data.decode().split("\n")[:count]:
            write_line(handler, text)
    finally:
        handler.release()
