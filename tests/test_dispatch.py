"""In-process unit tests of ``_dispatch`` and ``_calls``: frames to the sinks or the logger tree.

No socket and no writer loop: each test builds ``LogRecord``s (or the frames a
connection would send, with ``_wire.Encoder`` and ``_wire.FrameReader``) and a
small logger tree under a name of its own, calls a ``Dispatcher`` and looks
at what the handlers got.  The ``tree`` fixture puts the logging module back
as it was (root handlers and filters, ``lastResort``, loggers created here).
"""

from __future__ import annotations

import errno
import itertools
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Sender
from logfunnel._core import calls as _calls
from logfunnel._core import dispatch as _dispatch
from logfunnel._core import formatters as _formatters
from logfunnel._core import wire as _wire
from logfunnel._core.deferred_flush import DeferredFlush
from logfunnel._core.names import Names
from logfunnel._core.time_text import TimeText
from logfunnel.sinks import files as _sinks

_names = itertools.count()


class Keep(logging.Handler):
    """Keep ``name|level|message`` of every record handled, and count flushes."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        """Keep records at ``level`` and above."""
        super().__init__(level)
        self.got: list[str] = []
        self.flushes = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's name, level and message."""
        self.got.append(f"{record.name}|{record.levelname}|{record.getMessage()}")

    def flush(self) -> None:
        """Count the flush."""
        self.flushes += 1


class Raising(logging.Handler):
    """A handler whose ``handle`` raises (what a broken filter or lock would do)."""

    def handle(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        """Raise."""
        raise RuntimeError("broken handler")


class FailingWrites(logging.Handler):
    """A handler that fails to write (``handleError``, as a full disk makes it) until told."""

    def __init__(self) -> None:
        """Fail from the start."""
        super().__init__()
        self.failing = True
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Write the message, or fail as a full disk does (``handleError``)."""
        try:
            self._write(record.getMessage())
        except OSError:
            self.handleError(record)

    def _write(self, text: str) -> None:
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written.append(text)


@pytest.fixture
def tree() -> Iterator[str]:
    """Yield a logger name prefix of this test's own; put the logging module back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.filters[:], root.level, logging.lastResort)
    loggers = root.manager.loggerDict
    before = set(loggers)
    try:
        yield f"dispatch{next(_names)}"
    finally:
        root.handlers[:], root.filters[:] = saved[0], saved[1]
        root.setLevel(saved[2])  # also clears every logger's isEnabledFor cache
        logging.lastResort = saved[3]
        for name in set(loggers) - before:
            del loggers[name]


def record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
    """Return a record as ``decode_record`` would make it (its logger levels already applied)."""
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def frames(*records: logging.LogRecord, lines: bool = False) -> list[list[Any]]:
    """Return the frames a connection sends for ``records``, decoded as the writer reads them."""
    encoder = _wire.Encoder()
    if lines:
        blob = b"".join(encoder.line(r.getMessage()) for r in records)
    else:
        blob = b"".join(encoder.record(r) for r in records)
    return _wire.FrameReader().feed(blob)


# -- where a record goes ----------------------------------------------------------------


def test_given_sinks_get_every_record_their_level_reaches_and_the_tree_none(tree: str) -> None:
    """``Dispatcher(sinks=...)``: exactly those handlers, by their level; no logger's."""
    on_tree = Keep()
    logging.getLogger().addHandler(on_tree)
    logging.getLogger(tree).addHandler(on_tree)
    every, warnings = Keep(), Keep(logging.WARNING)
    dispatcher = _dispatch.Dispatcher([every, warnings])
    dispatcher.start(lines=False)
    dispatcher.record(record(tree, "info"))
    dispatcher.record(record(tree, "warning", logging.WARNING))
    assert every.got == [f"{tree}|INFO|info", f"{tree}|WARNING|warning"]
    assert warnings.got == [f"{tree}|WARNING|warning"]
    assert on_tree.got == []
    assert dispatcher.stats.records == 2


def test_adopt_mode_reaches_the_nearest_ancestor_without_creating_a_logger(tree: str) -> None:
    """A name the tree does not have goes where a new logger of that name would send it."""
    app, top = Keep(), Keep()
    logging.getLogger(tree).addHandler(app)
    logging.getLogger().handlers[:] = [top]
    loggers = logging.root.manager.loggerDict
    count = len(loggers)
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    dispatcher.record(record(f"{tree}.worker.step", "deep"))
    dispatcher.record(record("elsewhere.entirely", "far"))
    assert app.got == [f"{tree}.worker.step|INFO|deep"]
    assert top.got == [f"{tree}.worker.step|INFO|deep", "elsewhere.entirely|INFO|far"]
    assert len(loggers) == count  # no logger per name
    assert f"{tree}.worker.step" not in loggers


def test_adopt_mode_applies_handler_levels_but_not_logger_levels(tree: str) -> None:
    """Logger levels were applied where the record was made; handler levels apply here."""
    logger = logging.getLogger(tree)
    logger.setLevel(logging.ERROR)
    errors, every = Keep(logging.ERROR), Keep()
    logger.handlers[:] = [errors, every]
    logger.propagate = False
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.record(record(tree, "info"))
    assert errors.got == []
    assert every.got == [f"{tree}|INFO|info"]


def test_a_logger_made_later_wins_from_the_next_record_on(tree: str) -> None:
    """The cache of resolved names is dropped when the tree gains a logger."""
    outer, inner = Keep(), Keep()
    logging.getLogger(tree).addHandler(outer)
    logging.getLogger(tree).propagate = False
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.record(record(f"{tree}.a.b", "first"))
    logging.getLogger(f"{tree}.a").addHandler(inner)
    dispatcher.record(record(f"{tree}.a.b", "second"))
    assert outer.got == [f"{tree}.a.b|INFO|first", f"{tree}.a.b|INFO|second"]
    assert inner.got == [f"{tree}.a.b|INFO|second"]


def test_names_resolve_past_placeholders_and_do_not_cache_through_them(tree: str) -> None:
    """``Names.logger_for``: as ``Manager._fixupParents``; a PlaceHolder is not a parent."""
    logging.getLogger(f"{tree}.x.y.z")  # makes PlaceHolders for tree.x and tree.x.y
    top = logging.getLogger(tree)
    names = Names()
    assert names.logger_for(f"{tree}.x.y.z") == (logging.getLogger(f"{tree}.x.y.z"), True)
    assert names.logger_for(f"{tree}.x.q") == (top, False)
    assert names.logger_for(f"{tree}.x.y") == (top, False)  # a PlaceHolder's own name
    made = logging.getLogger(f"{tree}.x")  # replaces its PlaceHolder, adds no entry
    assert names.logger_for(f"{tree}.x.q") == (made, False)
    assert names.logger_for("") == (logging.root, True)
    assert names.logger_for("root") == (logging.root, True)


def test_a_disabled_logger_or_its_filter_stops_the_record(tree: str) -> None:
    """As ``Logger.handle``: `disabled` and the filters of the record's own logger."""
    logger = logging.getLogger(tree)
    keep = Keep()
    logger.handlers[:] = [keep]
    logger.propagate = False
    logger.addFilter(lambda r: r.getMessage() != "filtered")
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.record(record(tree, "filtered"))
    dispatcher.record(record(tree, "passed"))
    logger.disabled = True
    dispatcher.record(record(tree, "while disabled"))
    assert keep.got == [f"{tree}|INFO|passed"]


def test_no_handler_anywhere_goes_to_last_resort(tree: str) -> None:
    """With no handler on the way up, ``logging.lastResort`` gets what reaches its level."""
    logging.getLogger().handlers[:] = []
    last = Keep(logging.WARNING)
    logging.lastResort = last
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.record(record(tree, "info"))
    dispatcher.record(record(tree, "warning", logging.WARNING))
    assert last.got == [f"{tree}|WARNING|warning"]


def test_a_raising_handler_or_filter_is_counted_and_the_others_still_get_it(
    tree: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception escaping one handler (or a filter) costs no other handler its record."""
    logger = logging.getLogger(tree)
    keep = Keep()
    logger.handlers[:] = [Raising(), keep]
    logger.propagate = False
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.record(record(tree, "one"))

    def broken(_record: logging.LogRecord) -> bool:
        raise ValueError("broken filter")

    logger.addFilter(broken)
    dispatcher.record(record(tree, "two"))
    assert keep.got == [f"{tree}|INFO|one"]
    assert dispatcher.stats.handler_errors == 2
    err = capsys.readouterr().err
    assert "RuntimeError: broken handler" in err
    assert "ValueError: broken filter" in err


def test_reports_reach_the_sinks_and_are_not_counted_as_records(tree: str) -> None:
    """``report``: a record of logger ``logfunnel`` from ``logfunnel-writer``, not in ``records``."""
    keep = Keep()
    seen: list[str] = []

    def note(r: logging.LogRecord) -> bool:
        seen.append(r.processName or "")
        return True

    keep.addFilter(note)
    dispatcher = _dispatch.Dispatcher([keep])
    dispatcher.report(logging.WARNING, f"about {tree}")
    assert keep.got == [f"logfunnel|WARNING|about {tree}"]
    assert seen == ["logfunnel-writer"]
    assert dispatcher.stats.records == 0


# -- frames -----------------------------------------------------------------------------


def test_record_frames_decode_against_their_peers_definitions(tree: str) -> None:
    """SITE and THREAD frames define ids in the sender's tables; RECORD frames use them."""
    keep = Keep()
    dispatcher = _dispatch.Dispatcher([keep])
    peer = Sender()
    sent = frames(record(tree, "a"), record(tree, "b", logging.ERROR))
    assert [f[0] for f in sent] == [_wire.SITE, _wire.THREAD, _wire.RECORD, _wire.RECORD]
    for fields in sent:
        dispatcher.frame(fields, peer)
    assert keep.got == [f"{tree}|INFO|a", f"{tree}|ERROR|b"]
    assert dispatcher.stats.records == 2
    assert dispatcher.stats.bad_frames == 0
    # The same RECORD from a peer that never defined its site and thread is refused.
    other = Sender()
    dispatcher.frame(sent[2], other)
    assert dispatcher.stats.bad_frames == 1
    assert keep.got[-1].startswith("logfunnel|ERROR|discarded a malformed record from process")


def test_malformed_definitions_dropped_counts_and_unknown_kinds(tree: str) -> None:
    """A bad SITE is discarded and reported; DROPPED is reported when its count is real."""
    keep = Keep()
    dispatcher = _dispatch.Dispatcher([keep])
    peer = Sender()
    dispatcher.frame([_wire.SITE, "not an id"], peer)
    dispatcher.frame([_wire.DROPPED, 12], peer)
    dispatcher.frame([_wire.DROPPED, 2**41], peer)  # not a real count
    dispatcher.frame([_wire.DROPPED, 0], peer)
    dispatcher.frame([_wire.LEVELS, 1], peer)  # levels travel in a file, not here
    dispatcher.frame([99], peer)
    assert dispatcher.stats.dropped_reported == 12
    assert dispatcher.stats.bad_frames == 5
    assert [line.split("|")[1] for line in keep.got] == ["ERROR", "WARNING"]
    assert keep.got[0].startswith("logfunnel|ERROR|discarded a malformed frame from process 1234")
    assert keep.got[1].startswith("logfunnel|WARNING|12 records dropped from process 1234 (test)")
    assert dispatcher.stats.records == 0


def test_lines_are_refused_unless_the_writer_allows_them(tree: str) -> None:
    """A LINE reaches the sinks only when started with ``lines=True`` and every sink takes lines."""
    sink = logging.StreamHandler(sys.stdout)
    keep = Keep()
    refusing = _dispatch.Dispatcher([keep])
    refusing.start(lines=True)  # Keep is not one of _sink.LINE_SINKS
    assert refusing.line_sinks is None
    line = frames(record(tree, "rendered"), lines=True)[0]
    refusing.frame(line, Sender())
    assert refusing.stats.bad_frames == 1
    assert keep.got == [
        "logfunnel|ERROR|discarded a line from process 1234 (test): not expected by this writer"
    ]
    allowing = _dispatch.Dispatcher([sink])
    allowing.start(lines=False)
    assert allowing.line_sinks is None
    allowing.start(lines=True)
    assert allowing.line_sinks == [sink]


def test_a_line_is_written_whole_and_on_one_line(
    tree: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LINE is written as rendered; a line after a break in it starts as a continuation."""
    sink = logging.StreamHandler(sys.stdout)
    dispatcher = _dispatch.Dispatcher([sink])
    dispatcher.start(lines=True)
    peer = Sender()
    dispatcher.frame([_wire.LINE, f"{tree} one"], peer)
    dispatcher.frame([_wire.LINE, f"{tree} two\nmore"], peer)
    dispatcher.frame([_wire.LINE, 3], peer)  # malformed
    out = capsys.readouterr().out.splitlines()
    prefix = _formatters.LineFormatter.continuation[1:]
    assert out == [
        f"{tree} one",
        f"{tree} two",
        f"{prefix}more",
        "discarded a line from process 1234 (test): malformed",  # the report, in the sink too
    ]
    assert (dispatcher.stats.records, dispatcher.stats.lines, dispatcher.stats.bad_frames) == (
        2,
        2,
        1,
    )


# -- handlers: write errors and flushing ------------------------------------------------


def test_write_errors_are_reported_once_counted_and_resumed(
    tree: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing sink: one line on stderr, every record counted, "resumed" once it writes."""
    failing, keep = FailingWrites(), Keep()
    dispatcher = _dispatch.Dispatcher([failing, keep])
    dispatcher.start(lines=False)
    for i in range(5):
        dispatcher.record(record(tree, f"lost {i}"))
    err = capsys.readouterr().err
    assert err.count("cannot write") == 1
    assert "OSError" in err
    assert dispatcher.calls.unwritten() == 5
    failing.failing = False
    dispatcher.record(record(tree, "written"))
    assert failing.written[0] == "written"
    assert failing.written[1].endswith("writes again: resumed after 5 failed records")
    assert len(keep.got) == 7  # 6 records and the report
    assert dispatcher.calls.unwritten() == 5


def test_handlers_get_their_own_handle_error_back(tree: str) -> None:
    """``Calls.restore``: the instance's own ``handleError`` again, or none on the instance."""
    plain, own = Keep(), Keep()

    def own_handle_error(_record: logging.LogRecord) -> None:
        pass

    own.handleError = own_handle_error  # type: ignore[method-assign,assignment]
    dispatcher = _dispatch.Dispatcher([plain, own])
    dispatcher.start(lines=False)
    assert isinstance(vars(plain)["handleError"], _calls.SinkWatch)
    assert isinstance(vars(own)["handleError"], _calls.SinkWatch)
    dispatcher.calls.restore()
    assert "handleError" not in vars(plain)
    assert vars(own)["handleError"] is own_handle_error
    assert tree


def test_a_barrier_flushes_each_distinct_handler_once(tree: str) -> None:
    """``flush_all``: sinks, handlers called and the tree's, each once; work counted."""
    shared, own = Keep(), Keep()
    logging.getLogger().handlers[:] = [shared]
    logging.getLogger(tree).handlers[:] = [shared, own]
    dispatcher = _dispatch.Dispatcher(None)
    for i in range(100):
        dispatcher.record(record(f"{tree}.n{i}", "m"))
    dispatcher.flush_all()
    assert (shared.flushes, own.flushes) == (1, 1)
    assert len(shared.got) == 200  # on the tree's logger and on root, as logging does
    tree_loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    # Loggers other tests configured (an engine's own handlers, say) are flushed too.
    handlers = {id(h) for lg in tree_loggers for h in getattr(lg, "handlers", ())}
    assert dispatcher.calls.barrier_work == len(tree_loggers) + len(handlers)


def test_file_sinks_leave_flushing_to_the_dispatching_thread(tree: str, tmp_path: Any) -> None:
    """``start``: a FileSink batches; ``flush_batched`` writes what it holds."""
    path = tmp_path / "out.log"
    sink = _sinks.FileSink(str(path))
    sink.setFormatter(logging.Formatter("%(message)s"))
    try:
        dispatcher = _dispatch.Dispatcher([sink])
        dispatcher.start(lines=False)
        assert dispatcher.calls.batched == [sink]
        dispatcher.record(record(tree, "batched"))
        assert path.read_text() == ""
        dispatcher.calls.flush_batched()
        assert path.read_text() == "batched\n"
    finally:
        sink.close()


# -- the program's stream handlers: flushed once per turn ---------------------------


class CountingStream:
    """A stream that keeps what was written and counts flushes; fails to flush when told."""

    def __init__(self) -> None:
        """Start empty, flushing fine."""
        self.written: list[str] = []
        self.flushed = ""
        self.flushes = 0
        self.failing = False

    def write(self, text: str) -> int:
        """Keep ``text`` until a flush."""
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        """Move what was written to ``flushed``, or fail as a full disk does."""
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.flushes += 1
        self.flushed += "".join(self.written)
        self.written.clear()


def test_the_programs_stream_handler_is_flushed_once_per_turn(tree: str) -> None:
    """Adopt mode: a ``StreamHandler``'s emit no longer flushes each record; the turn's end does."""
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger(tree).handlers[:] = [handler]
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    for i in range(100):
        dispatcher.record(record(f"{tree}.child", f"r{i}"))
    assert stream.flushes == 0
    assert len(stream.written) == 100
    dispatcher.calls.flush_batched()
    assert stream.flushes == 1
    assert stream.flushed == "".join(f"r{i}\n" for i in range(100))
    dispatcher.calls.flush_batched()  # nothing held: no flush
    assert stream.flushes == 1


def test_the_programs_own_records_and_flushes_are_not_deferred(tree: str) -> None:
    """Outside the writer's own ``handle()`` call the handler flushes as always, held records too."""
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(tree)
    logger.handlers[:], logger.propagate = [handler], False
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    dispatcher.record(record(tree, "from a child"))
    assert stream.flushes == 0
    logger.warning("the program's own")  # this thread, but not inside the writer's call
    assert stream.flushes == 1
    assert stream.flushed == "from a child\nthe program's own\n"
    dispatcher.record(record(tree, "again"))
    done = threading.Event()

    def other_thread() -> None:
        handler.flush()
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set()
    assert stream.flushes == 2
    assert stream.flushed.endswith("again\n")
    dispatcher.flush_all()  # a barrier flushes at once too
    assert stream.flushes == 3
    logger.propagate = True


def test_only_the_stdlib_stream_flush_is_deferred_and_restore_gives_it_back(tree: str) -> None:
    """A handler with a ``flush`` of its own keeps it; ``restore`` takes the deferred one off."""
    stream = CountingStream()
    plain, own = logging.StreamHandler(stream), Keep()
    logging.getLogger(tree).handlers[:] = [plain, own]
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    dispatcher.record(record(tree, "m"))
    assert isinstance(vars(plain)["flush"], DeferredFlush)
    assert "flush" not in vars(own)
    assert own.got == [f"{tree}|INFO|m"]
    dispatcher.calls.restore()
    assert "flush" not in vars(plain)
    assert stream.flushes == 0  # restore never flushes (it also runs in a forked child)


def test_a_failing_deferred_flush_is_reported_once_counted_and_resumed(
    tree: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk under a deferred flush: one line on stderr, its records counted, "resumed".

    Counted as the stdlib's handler counts them (``handleError`` for each
    record whose flush failed); a stream that kept them writes them later.
    """
    stream = CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().handlers[:] = [handler]  # the writer's own report goes there too
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    stream.failing = True
    for turn in range(3):
        for i in range(4):
            dispatcher.record(record(tree, f"t{turn} r{i}"))
        dispatcher.calls.flush_batched()
    err = capsys.readouterr().err
    assert err.count("cannot write") == 1, err
    assert "No space left on device" in err
    assert dispatcher.calls.unwritten() == 12
    stream.failing = False
    dispatcher.record(record(tree, "written"))
    dispatcher.calls.flush_batched()
    assert stream.flushed.endswith("written\n")
    dispatcher.calls.flush_batched()  # the report, made by the flush that wrote again
    assert stream.flushed.endswith("writes again: resumed after 12 failed records\n")
    assert dispatcher.calls.unwritten() == 12


def test_the_programs_formatter_renders_its_time_once_per_second_with_the_same_text(
    tree: str,
) -> None:
    """Adopt mode: the writer's calls give the program's ``Formatter`` a per-second time text.

    The lines are the ones a formatter of the same configuration writes on
    its own; ``restore`` gives the formatter its class's ``formatTime`` back.
    """
    fmt, datefmt = "%(asctime)s|%(message)s", "%d/%m/%Y %H:%M:%S %Z"
    stream, reference = CountingStream(), logging.Formatter(fmt, datefmt)
    handler = logging.StreamHandler(stream)
    formatter = logging.Formatter(fmt, datefmt)
    handler.setFormatter(formatter)
    logging.getLogger(tree).handlers[:] = [handler]
    dispatcher = _dispatch.Dispatcher(None)
    dispatcher.start(lines=False)
    made = [record(tree, f"r{i}") for i in range(40)]
    for i, one in enumerate(made):
        one.created, one.msecs = 1_700_000_000 + i * 0.3, (i * 300) % 1000
        dispatcher.record(one)
    assert isinstance(vars(formatter)["formatTime"], TimeText)
    dispatcher.calls.flush_batched()
    assert stream.flushed == "".join(reference.format(one) + "\n" for one in made)
    dispatcher.calls.restore()
    assert "formatTime" not in vars(formatter)
