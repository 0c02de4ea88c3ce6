"""The writer's calls into handlers: each one guarded, write errors watched, flushes.

A handler the writer calls (a sink, or a handler of the logger tree in adopt
mode) must not stop the loop, and must not flood stderr:

* an exception escaping a handler (or a filter) is counted in
  ``Stats.handler_errors`` and printed on stderr (the first ten, then one in a
  thousand); the other handlers still get the record;
* a handler that fails to write (a full disk) calls its ``handleError``: the
  writer replaced it (``SinkWatch``), so the first failure of an episode is
  reported in one line, the records are counted (``Stats.unwritten``), and
  "resumed after N failed records" is written once it writes again;
* the file sinks install() built leave flushing to the writer thread
  (``batch``): one write(2) per turn of the loop instead of one per record,
  and a barrier flushes every handler a record may have reached
  (``flush_all``), each once;
* so do the program's own stream handlers while the writer writes through
  them (``DeferredFlush``): their ``emit`` flushes after every record, and
  the writer flushes them at the end of its turn instead;
* and their ``logging.Formatter`` renders each second's time text once
  (``TimeText``), the same text the stdlib's ``formatTime`` gives.

Who owns what: one ``Calls`` per ``_dispatch.Dispatcher``, used only by the
writer thread.  It holds a ``SinkWatch`` per handler it called, and each
watch is that handler's ``handleError`` (a ``DeferredFlush`` its ``flush``,
a ``TimeText`` its formatter's ``formatTime``, all on the instance) until
``restore()`` gives them their own back: when the loop ends, and in a
forked child.  It owns no handler.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from logfunnel._core import sink as _sink
from logfunnel._core.deferred_flush import DeferredFlush
from logfunnel._core.time_text import TimeText

_MISSING: Final = object()
# The sinks that leave flushing to the writer thread and count the records
# that reach the file (``landed``).
BATCHED: Final = _sink.LineSink


class SinkWatch:
    """Report a handler's write errors once per episode instead of once per record.

    ``logging.Handler.handleError`` prints a whole traceback for every record a
    sink fails to write: a full disk under a busy funnel floods stderr.  The
    writer replaces the handler's ``handleError`` (on that instance only)
    with this: the first failure is reported in one line, the others are
    counted, and the writer logs "resumed after N failed records" once the
    handler writes again.  ``restore()`` puts the handler's own back.

    A failed flush of a ``LineSink`` (a file sink) costs the
    whole batch it held; it comes here once with a ``LinesLostError`` that
    says how many records that was.  Those sinks count the records that reach
    the file (``landed``), so "writes again" means: records landed since the
    last failure, checked after the writer flushed them, not when a record was
    only handed over.
    """

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.failed = 0  # in this episode
        self.total = 0  # since the writer started
        #: ``handler.landed`` at the last failure (file sinks); None: other handlers.
        self.mark: int | None = None
        # An exporter's ``landed`` counts what its queue took: it writes again
        # once that grows, whichever thread (the writer's, a program's) logged.
        self.counts_landed = isinstance(handler, (BATCHED, _sink.Exporter))
        self._original = vars(handler).get("handleError", _MISSING)
        handler.handleError = self  # type: ignore[method-assign]

    def __call__(self, record: logging.LogRecord) -> None:  # noqa: ARG002 - handleError's
        exc = sys.exc_info()[1]
        count = exc.records if isinstance(exc, _sink.LinesLostError) else 1
        self.failed += count
        self.total += count
        if self.counts_landed:
            self.mark = getattr(self.handler, "landed", 0)
        if self.failed == count and logging.raiseExceptions:  # the first of this episode
            if isinstance(exc, _sink.LinesLostError) and exc.__cause__ is not None:
                exc = exc.__cause__  # the OSError the file system gave
            print(
                f"logfunnel: {self.handler!r} cannot write ({type(exc).__name__}: {exc}); its "
                f"records are counted, not written, until it can again",
                file=sys.stderr,
            )

    def resumed(self) -> int:
        """Return the failures of an episode that just ended (a file sink wrote again), or 0."""
        if not self.failed or not self.counts_landed:
            return 0
        handler = self.handler
        handler.acquire()  # the installing program's threads may be writing through it
        try:
            if getattr(handler, "landed", 0) <= (self.mark or 0):
                return 0
            failed, self.failed = self.failed, 0
        finally:
            handler.release()
        return failed

    def restore(self) -> None:
        """Give the handler its own ``handleError`` back (unless someone replaced ours since)."""
        if vars(self.handler).get("handleError") is not self:
            return
        if self._original is _MISSING:
            del self.handler.handleError
        else:
            self.handler.handleError = self._original


def _lost(cause: OSError, records: int) -> None:
    """Raise the error a ``SinkWatch`` reads off ``sys.exc_info()``: ``records`` not written."""
    raise _sink.LinesLostError(cause, records, 0, 0) from cause


class Counts(Protocol):
    """Where ``Calls`` counts (``_dispatch.Stats``)."""

    handler_errors: int


class Calls:
    """Call handlers for the writer: errors caught and counted, write failures watched."""

    def __init__(self, stats: Counts, report: Callable[[int, str], None]) -> None:
        """Count in ``stats``; ``report(level, message)`` puts a record into the sinks."""
        self.stats = stats
        self._report = report
        self._watches: dict[int, SinkWatch] = {}
        #: Sinks that leave flushing to the writer thread (see ``batch``).
        self.batched: list[logging.Handler] = []
        #: Loggers looked at and handlers flushed by the last ``flush_all``.
        self.barrier_work = 0
        #: The program's handlers whose flush waits for the end of the turn.
        self._deferred: dict[int, DeferredFlush] = {}
        self._held: list[DeferredFlush] = []
        self._thread: int | None = None
        #: The program's formatters, rendering each second's time once.
        self._time_texts: dict[int, TimeText] = {}

    def batch(self, handlers: Iterable[logging.Handler]) -> None:
        """Let the file sinks among ``handlers`` leave flushing to this thread."""
        self._thread = threading.get_ident()
        self.batched = [h for h in handlers if isinstance(h, BATCHED)]
        for handler in self.batched:
            handler.batch_thread = self._thread  # type: ignore[attr-defined]

    def watch(self, handler: logging.Handler) -> SinkWatch:
        """Return the watch on ``handler``'s write errors, putting one on it the first time."""
        watch = self._watches.get(id(handler))
        if watch is None:  # a watch holds its handler: the id is never reused meanwhile
            watch = self._watches[id(handler)] = SinkWatch(handler)
            if DeferredFlush.fits(handler):
                self._deferred[id(handler)] = DeferredFlush(handler, self._held)  # type: ignore[arg-type]
            formatter = handler.formatter
            if TimeText.fits(formatter) and id(formatter) not in self._time_texts:
                self._time_texts[id(formatter)] = TimeText(formatter)  # type: ignore[arg-type]
        return watch

    def call(
        self, handler: logging.Handler, record: logging.LogRecord | None, line: str = ""
    ) -> None:
        """Hand ``handler`` a record, or (``record`` None) a line rendered for it."""
        watch = self.watch(handler)
        failed = watch.failed
        deferred = self._deferred.get(id(handler))
        if deferred is not None:
            deferred.inside = self._thread
        try:
            if record is None:
                _sink.write_line(handler, line)
            else:
                handler.handle(record)
        except Exception as exc:
            self.failed(record.name if record is not None else "(a line)", exc)
            return
        finally:
            if deferred is not None:
                deferred.inside = None
        # A file sink's records may only be buffered yet: it writes again
        # when a flush lands some (_check_resumed); so may a deferred
        # handler's (_flush_held).  Any other wrote it now.
        if failed and not watch.counts_landed and deferred is None and watch.failed == failed:
            watch.failed = 0
            self._report_resumed(handler, failed)

    def run(self, handler: logging.Handler, texts: list[str]) -> None:
        """Hand ``handler`` lines rendered for it, in order, as ``call`` would each.

        Under one hold of its lock when its flush is deferred and it is not
        failing (``_sink.write_line_run``); otherwise line by line, so a
        failing handler's writes and recoveries are counted as they happen.
        """
        deferred = self._deferred.get(id(handler))
        watch = self.watch(handler)
        if deferred is None or watch.failed or isinstance(handler, _sink.LineSink):
            for text in texts:
                self.call(handler, None, text)
            return
        deferred.inside = self._thread
        try:
            _sink.write_line_run(handler, texts, self._line_failed)  # type: ignore[arg-type]
        finally:
            deferred.inside = None

    def _line_failed(self, exc: Exception) -> None:
        self.failed("(a line)", exc)

    def lines(self, handler: _sink.LineSink, data: bytes, count: int) -> None:
        """Hand ``handler`` a block of ``count`` rendered lines (``_sink.write_lines``).

        Only file-like sinks get blocks (``LineSink``): they count what lands,
        so writing again is noticed after a flush, as for their single lines.
        """
        self.watch(handler)
        try:
            _sink.write_lines(handler, data, count)
        except Exception as exc:
            self.failed("(a line)", exc)

    def failed(self, name: str, exc: Exception) -> None:
        """Count and print an exception that escaped a handler or a filter of record ``name``."""
        self.stats.handler_errors += 1
        if self.stats.handler_errors <= 10 or self.stats.handler_errors % 1000 == 0:
            print(
                f"logfunnel writer: handling a record of {name!r} raised "
                f"{type(exc).__name__}: {exc}; the other handlers got it, and the writer "
                f"goes on ({self.stats.handler_errors} such errors so far)",
                file=sys.stderr,
            )

    def _report_resumed(self, handler: logging.Handler, failed: int) -> None:
        self._report(
            logging.WARNING,
            f"{handler!r} writes again: resumed after {failed} failed records",
        )

    def _check_resumed(self) -> None:
        """Report the file sinks that wrote records again since they last failed."""
        again = [
            (watch.handler, failed)
            for watch in list(self._watches.values())
            if watch.failed and (failed := watch.resumed())
        ]
        for handler, failed in again:
            self._report_resumed(handler, failed)
        if again:
            self._flush(self.batched)  # the reports themselves

    def unwritten(self) -> int:
        """Return how many records the sinks failed to write since the writer started."""
        return sum(watch.total for watch in self._watches.values())

    def exported_dropped(self) -> int:
        """Return how many records the exporters called here dropped (``sink.Exporter``)."""
        return sum(
            watch.handler.exported_dropped
            for watch in self._watches.values()
            if isinstance(watch.handler, _sink.Exporter)
        )

    def _flush(self, handlers: Iterable[logging.Handler]) -> None:
        for handler in handlers:
            try:
                handler.flush()
            except Exception:
                self.stats.handler_errors += 1

    def flush_batched(self) -> None:
        """Write what the batching file sinks and deferred handlers hold (after each turn)."""
        if self._held:
            self._flush_held()
        if self.batched:
            self._flush(self.batched)
            self._check_resumed()

    def _flush_held(self) -> None:
        """Flush the program's handlers whose flush the writer deferred (``DeferredFlush``).

        A flush that fails reports the records it held through the handler's
        watch (one line per episode, as a failing ``emit`` would have), and
        the first that succeeds after it says the handler writes again.
        """
        held = self._held[:]
        self._held.clear()  # in place: each DeferredFlush appends to this very list
        for deferred in held:
            records = deferred.held
            if not records:
                continue  # flushed meanwhile (a barrier, the program)
            watch = self.watch(deferred.handler)
            try:
                deferred.now()
            except OSError as exc:
                deferred.held = 0
                try:
                    _lost(exc, records)
                except _sink.LinesLostError:
                    watch(logging.makeLogRecord({}))  # reads the error off sys.exc_info()
                continue
            except Exception as exc:
                deferred.held = 0
                self.failed("(a flush)", exc)
                continue
            if watch.failed:
                failed, watch.failed = watch.failed, 0
                self._report_resumed(deferred.handler, failed)

    def flush_all(self, sinks: Iterable[logging.Handler]) -> None:
        """Flush every handler a record may have reached: a barrier's last step.

        That is ``sinks``, every handler called here, and those on this
        process's logger tree (a thread host's program writes through them
        too).  The tree holds the program's own loggers only (the writer
        creates none), so the cost does not grow with the names peers send.
        """
        # The program's handlers whose flush the writer deferred go first, the way
        # a turn's end flushes them: a failed flush counts its records, and the
        # first good one after failures says so ("resumed after ...").  Flushed
        # below as plain handlers instead, a barrier between a record and its
        # turn's end (a process's exit asks for one) left that note unwritten.
        if self._held:
            self._flush_held()
        handlers: dict[int, logging.Handler] = {}
        for handler in sinks:
            handlers.setdefault(id(handler), handler)
        for watch in self._watches.values():
            handlers.setdefault(id(watch.handler), watch.handler)
        loggers = [logging.root, *logging.root.manager.loggerDict.values()]
        for logger in loggers:
            if isinstance(logger, logging.Logger):
                for handler in logger.handlers:
                    handlers.setdefault(id(handler), handler)
        self._flush(list(handlers.values()))
        self.barrier_work = len(loggers) + len(handlers)
        self._check_resumed()

    def restore(self) -> None:
        """Give every handler watched here its own ``handleError``, ``flush`` and time text back."""
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.restore()
        deferred = list(self._deferred.values())
        self._deferred.clear()
        self._held.clear()
        for flush in deferred:
            flush.restore()
        time_texts = list(self._time_texts.values())
        self._time_texts.clear()
        for time_text in time_texts:
            time_text.restore()
