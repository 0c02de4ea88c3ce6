"""Dispatch: what a connection's frames carry, handed to the sinks or to the logger tree.

The writer loop (``_writer``) reads bytes, cuts them into frames and handles
the frames about the connection itself (HELLO, FLUSH).  Every other frame
comes here with the peer that sent it (``Dispatcher.frame``): SITE and THREAD
define ids in that peer's ``_protocol.Tables``, RECORD is decoded into a
``LogRecord`` for the sinks, LINE (a record its sender rendered with the
sinks' formatter) is written as it is, RENDERED (adopt mode: a record and the
line its sender rendered with the installer's stock formatter) is written as
that line where the tree still takes it (``adopt_render.Route``) and handled
as a RECORD elsewhere, DROPPED is reported; anything else is counted as a bad
frame.  Nothing here touches a socket: ``tests/test_dispatch.py``
builds frames and a logger tree and calls a ``Dispatcher`` directly.

Where a record goes:

* ``Writer(sinks=[...])``: each of exactly those handlers whose level the
  record reaches, on no logger.  A process host builds them from
  ``install()``'s options (``logfunnel.sinks.build.build_handlers``).
* Without sinks ("adopt mode"): the handlers of this process's logger tree, as
  ``Logger.handle`` and ``Logger.callHandlers`` would, without creating a
  logger for a name the tree does not have (``Names``: the nearest ancestor).

Each handler is called through ``_calls``, which catches what it raises and
watches its write errors.

Who owns what: one ``Dispatcher`` per ``Writer``, used only by the writer
thread.  It holds the ``Stats`` the whole writer counts in, the names it
resolved (``names.Names``, bounded) and its ``_calls.Calls``.  It owns no handler:
the sinks belong to whoever built them (the installing ``Funnel``, or a writer
process), the tree's handlers to the program, whose own threads call them too
in a thread host; each handler's lock orders the two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Final, Protocol

from logfunnel._core import adopt_render as _adopt_render
from logfunnel._core import calls as _calls
from logfunnel._core import formatters as _formatters
from logfunnel._core import protocol as _protocol
from logfunnel._core import sink as _sink
from logfunnel._core.lines import count_lines, one_line_each, valid_utf8
from logfunnel._core.names import Names

_OWN_LOGGER: Final = "logfunnel"
# A DROPPED count above this is not a real count: refused as a bad frame.
_MAX_DROPPED: Final = 2**40
# A RENDERED frame: the kind, a RECORD's fields, the line.
_RENDERED_LEN: Final = len(_protocol.RECORD_FIELDS) + 2
# The most rendered lines written under one hold of a handler's lock (``frames``): a
# program thread logging through the same handler waits for at most this many
# lines' writes, not for a whole read's (up to ~2,000 lines of 117 bytes).
_RUN_LIMIT: Final = 128
_UNKNOWN: Final = object()


@dataclasses.dataclass
class Stats:
    """What a writer has seen since it started."""

    #: The process the writer loop runs in (a writer process's pid changes on restart).
    pid: int = dataclasses.field(default_factory=os.getpid)
    records: int = 0
    #: Of ``records``, those written as their sender rendered them (LINE, RENDERED).
    lines: int = 0
    #: Distinct processes (by process id) that said who they are (HELLO): a
    #: process that reconnects, after a writer restart, counts once.
    processes: int = 0
    #: Connections accepted, refused ones included; ``connections_open`` are open now.
    connections: int = 0
    connections_open: int = 0
    cut_frames: int = 0
    bad_frames: int = 0
    dropped_reported: int = 0
    handler_errors: int = 0
    #: TCP connections refused: wrong token, or no answer in time.
    refused: int = 0
    #: accept() calls that failed for want of descriptors or memory (EMFILE, ENFILE, ...).
    accept_failures: int = 0
    #: Records a sink failed to write (a full disk), summed over the sinks.
    unwritten: int = 0
    #: Of those, records exporters (``sink.Exporter``: syslog) dropped: a collector was behind.
    exported_dropped: int = 0


class Sender(Protocol):
    """What dispatch needs of the connection a frame came on (``_gate.Peer``)."""

    tables: _protocol.Tables

    def describe(self) -> str:
        """Name the process for a report line."""
        ...


class Dispatcher:
    """Hand records and lines to the sinks, or to the logger tree as if logged here."""

    def __init__(self, sinks: list[logging.Handler] | None, stats: Stats | None = None) -> None:
        """``sinks``: the handlers every record goes to; None: the logger tree's (adopt mode)."""
        self.sinks = list(sinks) if sinks is not None else None
        self.stats = stats if stats is not None else Stats()
        self.calls = _calls.Calls(self.stats, self.report)
        self._call = self.calls.call
        #: Adopt mode: the logger a record's name starts at (no logger created).
        self._logger_for = Names().logger_for
        #: The handlers a LINE is written to; None: LINEs refused.  Set by start().
        self.line_sinks: list[logging.Handler] | None = None
        #: Runs of LINE frames (``_lines.LineReader``) may be written as blocks:
        #: every line sink is a ``LineSink``.  Set by start().
        self.takes_runs = False
        #: Adopt mode with a stock formatter: where RENDERED lines may go.  Set by start().
        self.route: _adopt_render.Route | None = None

    def start(self, *, lines: bool, adopt: _adopt_render.Spec | None = None) -> None:
        """Take the sinks over, in the thread that will dispatch (before its first record).

        The file sinks install() built leave flushing to that thread when it
        writes through them: one write(2) per batch instead of per record.
        ``lines``: LINE frames may be written (a writer process with
        install()'s own sinks told its senders their formatter).  ``adopt``:
        the Spec adopt mode's senders render with (``adopt_render``).
        """
        self.calls.batch(self.sinks if self.sinks is not None else logging.getLogger().handlers)
        for handler in self.sinks or ():
            # Watched from the start: the installing program's threads may
            # write through them before the writer does (a thread host).
            self.calls.watch(handler)
        self.line_sinks = self._find_line_sinks() if lines else None
        self.takes_runs = self.line_sinks is not None and all(
            isinstance(h, _sink.LineSink) for h in self.line_sinks
        )
        if adopt is not None and self.sinks is None:
            self.route = _adopt_render.Route(adopt)

    def _find_line_sinks(self) -> list[logging.Handler] | None:
        """Return the handlers LINE frames may be written to, or None: refuse LINEs.

        Only when every sink is one whose formatter the senders were told of
        (``_sink.LINE_SINKS``) and nothing filters or drops a record here.
        """
        if self.sinks is not None:
            candidates, filtered = self.sinks, False
        else:
            root = logging.getLogger()
            candidates, filtered = root.handlers, bool(root.filters)
        if (
            candidates
            and not filtered
            and all(
                isinstance(h, _sink.LINE_SINKS) and not h.filters and h.level == logging.NOTSET
                for h in candidates
            )
        ):
            return list(candidates)
        return None

    def frames(self, frames: list[list[Any]], peer: Sender) -> None:
        """Handle frames ``peer`` sent, in order, as ``frame`` handles each.

        In adopt mode, consecutive RENDERED frames whose records reach the
        same handlers go to each handler as one run (``Calls.run``: one lock
        hold, each line still written and flushed as its ``emit`` would), and
        the handlers of a name and level are found once for all the frames.
        """
        route = self.route
        if route is None:
            for fields in frames:
                self.frame(fields, peer)
            return
        run: list[str] = []
        run_handlers: list[logging.Handler] = []
        # The handlers of each (name, level) are looked up once per call: the frames
        # of one read, handled in well under a millisecond.  A handler a program
        # thread adds meanwhile is used from the next read on, as if this read had
        # come that much earlier.
        known: dict[tuple[str, int], Any] = {}
        for fields in frames:
            if (
                fields[0] == _protocol.RENDERED
                and len(fields) == _RENDERED_LEN
                and type(fields[-1]) is str
                and type(fields[1]) is str
                and type(fields[2]) is int
            ):
                key = (fields[1], fields[2])
                handlers = known.get(key, _UNKNOWN)
                if handlers is _UNKNOWN:
                    logger, own = self._logger_for(fields[1])
                    handlers = known[key] = route.handlers(logger, own, fields[2])
                if handlers is not None:
                    if run and (handlers != run_handlers or len(run) >= _RUN_LIMIT):
                        self._write_run(run_handlers, run)
                        run = []
                    run_handlers = handlers
                    run.append(fields[-1])
                    continue
            if run:
                self._write_run(run_handlers, run)
                run = []
            self.frame(fields, peer)
        if run:
            self._write_run(run_handlers, run)

    def _write_run(self, handlers: list[logging.Handler], texts: list[str]) -> None:
        """Write rendered lines to the handlers their records reach (``frames``)."""
        self.stats.records += len(texts)
        self.stats.lines += len(texts)
        if len(handlers) > 1 and len({id(getattr(h, "stream", h)) for h in handlers}) < len(
            handlers
        ):
            # Two handlers on one stream (stderr twice): each line goes to both before
            # the next, as the records came, not one handler's run and then the other's.
            for text in texts:
                for handler in handlers:
                    self._call(handler, None, text)
            return
        for handler in handlers:
            self.calls.run(handler, texts)

    def frame(self, fields: list[Any], peer: Sender) -> None:
        """Handle one frame ``peer`` sent that is not about the connection (HELLO, FLUSH)."""
        kind = fields[0]
        if kind == _protocol.LINE:
            sinks = self.line_sinks
            if sinks is None or len(fields) != 2 or type(fields[1]) is not str:
                why = "malformed" if sinks is not None else "not expected by this writer"
                self._discard("a line", peer, why)
                return
            self.stats.records += 1
            self.stats.lines += 1
            text = fields[1]
            if "\n" in text or "\r" in text:  # one record, one line, whoever rendered it
                text = _formatters.continued(text)
            for handler in sinks:
                self._call(handler, None, text)
        elif kind == _protocol.RENDERED:
            if len(fields) != _RENDERED_LEN or type(fields[-1]) is not str:
                self._discard("a malformed rendered record", peer, f"{len(fields)} fields")
                return
            text = fields.pop()
            fields[0] = _protocol.RECORD
            route = self.route
            if route is not None and type(fields[1]) is str and type(fields[2]) is int:
                logger, own = self._logger_for(fields[1])
                handlers = route.handlers(logger, own, fields[2])
                if handlers is not None:
                    self.stats.records += 1
                    self.stats.lines += 1
                    for handler in handlers:  # as their emit() writes the formatted record
                        self._call(handler, None, text)
                    return
            self.frame(fields, peer)  # the tree changed, or an unexpected sender: the record
        elif kind == _protocol.RECORD:
            try:
                record = _protocol.decode_record(fields, peer.tables)
            except _protocol.FrameError as exc:
                self._discard("a malformed record", peer, exc)
                return
            self.stats.records += 1
            self._deliver(record)
        elif kind in (_protocol.SITE, _protocol.THREAD):
            try:
                peer.tables.define(fields)
            except _protocol.FrameError as exc:
                self._discard("a malformed frame", peer, exc)
        elif (
            kind == _protocol.DROPPED
            and len(fields) == 2
            and isinstance(fields[1], int)
            and 0 < fields[1] <= _MAX_DROPPED
        ):
            self.stats.dropped_reported += fields[1]
            self.report(
                logging.WARNING,
                f"{fields[1]:,} records dropped from {peer.describe()}: the writer was behind "
                f"for longer than its on_full='drop' wait",
            )
        else:  # LEVELS too: levels travel in a file the installer writes, not through here
            self.stats.bad_frames += 1

    def lines(self, texts: list[bytearray], peer: Sender) -> None:
        """Write a run of LINE frames' texts (UTF-8) ``peer`` sent, in order, as those frames.

        As one block (``_sink.write_lines``: one call per sink, no record or
        str per line) when every text is valid UTF-8 without a line break,
        so the block is byte for byte what ``frame`` would write line by line;
        otherwise each text goes through ``frame`` as the LINE it came in
        (invalid bytes replaced, as the decoder does; line breaks continued).
        ``texts`` is used up.
        """
        count = len(texts)
        texts.append(bytearray())  # the last line's end
        data = b"\n".join(texts)
        sinks = self.line_sinks
        if (
            sinks is not None
            and self.takes_runs
            and (data.isascii() or valid_utf8(data))
            and one_line_each(data, texts, count)
        ):
            self.stats.records += count
            self.stats.lines += count
            for handler in sinks:
                self.calls.lines(handler, data, count)  # type: ignore[arg-type]
            return
        for text in texts[:count]:
            self.frame([_protocol.LINE, text.decode("utf-8", "replace")], peer)

    def block(self, data: bytes, peer: Sender) -> None:
        r"""Write a block of bare lines ``peer`` sent (UTF-8, each ending in ``\n``), in order.

        As one block, as ``lines`` does, when it is valid UTF-8 without a
        ``\r`` (the only line break a bare line could still hold: ``\n`` ends
        one, and the reader cut the block before any NUL); otherwise each line
        goes through ``frame`` as the LINE it means.
        """
        sinks = self.line_sinks
        if sinks is None:
            count = count_lines(data)
            what = "a line" if count == 1 else f"{count:,} lines"
            self._discard(what, peer, "not expected by this writer")
            return
        if self.takes_runs and (data.isascii() or valid_utf8(data)) and b"\r" not in data:
            count = count_lines(data)
            self.stats.records += count
            self.stats.lines += count
            for handler in sinks:
                self.calls.lines(handler, data, count)  # type: ignore[arg-type]
            return
        for text in data.split(b"\n")[:-1]:
            self.frame([_protocol.LINE, text.decode("utf-8", "replace")], peer)

    def _discard(self, what: str, peer: Sender, why: object) -> None:
        self.stats.bad_frames += 1
        self.report(logging.ERROR, f"discarded {what} from {peer.describe()}: {why}")

    def record(self, record: logging.LogRecord) -> None:
        """Count ``record`` as one a process logged, and hand it on (see ``_deliver``)."""
        self.stats.records += 1
        self._deliver(record)

    def report(self, level: int, message: str) -> None:
        """Put a record about the funnel itself into the sinks (not counted in ``records``)."""
        record = logging.LogRecord(_OWN_LOGGER, level, __file__, 0, message, None, None)
        record.processName = "logfunnel-writer"
        self._deliver(record)

    def _deliver(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to the sinks, or to the logger tree as if it had been logged here.

        With ``sinks``, every sink whose level the record reaches gets it.  In
        adopt mode this is ``Logger.handle`` and ``Logger.callHandlers`` with
        three differences: no logger is created for the record's name (see
        ``Names``); an exception escaping one handler (or a filter) is
        counted and reported, and the other handlers still get the record; and
        a handler that fails to write (``handleError``) is reported once, not
        once per record (see ``_calls.SinkWatch``).
        """
        call = self._call
        if self.sinks is not None:
            for handler in self.sinks:
                if record.levelno >= handler.level:
                    call(handler, record)
            return
        logger, own = self._logger_for(record.name)
        # Logger levels were applied where the record was made, when it was
        # made: checking them again here would drop a record whose logging
        # call returned, if the installing process raised a level between
        # the call and this moment.  Handler levels apply here, as always.
        if own:
            # As Logger.handle: the filters and `disabled` of the logger the
            # record was logged on; a name with no logger here has neither.
            if logger.disabled:
                return
            try:
                passed = logger.filter(record)
            except Exception as exc:
                self.calls.failed(record.name, exc)
                return
            if not passed:
                return
            if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = passed
        found = 0
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                found += 1
                if record.levelno >= handler.level:
                    call(handler, record)
            current = current.parent if current.propagate else None
        if not found:
            last = logging.lastResort
            if last is not None and record.levelno >= last.level:
                call(last, record)

    def flush_all(self) -> None:
        """Flush the sinks, every handler called and those of the tree (see ``_calls``)."""
        self.calls.flush_all(self.sinks or ())
