"""Adopt mode's lines rendered where they are logged (``_core/adopt_render.py``).

The writer writes a line its sender rendered only where the program's own
handler would have written that very line: each test runs a program twice,
with ``install()`` and without it (children logging straight to the inherited
handlers, one at a time), and the files must be the same to the byte.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Sender, last_json, run_python
from logfunnel._core import adopt_render, dispatch, wire

FMT = "%(asctime)s %(levelname)s %(processName)s %(name)s %(funcName)s:%(lineno)d %(message)s"

# argv: main log, own log, "funnel" or "plain", what the installer does after install().
PROGRAM = """
import dataclasses, json, logging, os, sys, time
main_log, own_log, how, after = sys.argv[1:5]
handler = logging.FileHandler(main_log, encoding="utf-8")
handler.setFormatter(logging.Formatter(%(fmt)r))
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
own = logging.FileHandler(own_log, delay=True)
own.setFormatter(logging.Formatter("%%(name)s|%%(levelname)s|%%(message)s"))
logging.getLogger("w.own").addHandler(own)
warnings = logging.FileHandler(main_log + ".warnings")
warnings.setLevel(logging.WARNING)
warnings.setFormatter(logging.Formatter(%(fmt)r))
logging.getLogger("w.loud").addHandler(warnings)
funnel = None
if how == "funnel":
    import logfunnel
    funnel = logfunnel.install()
if after == "reformat":  # after install(), before the children: their lines must follow
    handler.setFormatter(logging.Formatter("NEW %%(levelname)s %%(message)s"))

class SameClock(logging.Filter):
    # Both runs' records carry the same times, so their lines can be compared.
    def filter(self, record):
        record.created, record.msecs, record.relativeCreated = 1_700_000_000.25, 250.0, 5.0
        return True

def work(i):
    clock = SameClock()
    for name in ("w", "w.own", "w.loud", "w.new.deep"):
        logging.getLogger(name).addFilter(clock)
    log = logging.getLogger("w")
    log.info("plain %%d of %%s", i, "ü…")
    log.info("two\\nlines %%d", i)
    log.debug("below the level")
    log.info("with extra", extra={"shard": i})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("traceback %%d", i)
    logging.getLogger("w.own").warning("own handler too %%d", i)
    logging.getLogger("w.loud").info("quiet %%d", i)
    logging.getLogger("w.loud").error("loud %%d", i)
    logging.getLogger("w.new.deep").info("a name with no logger in the installer %%d", i)

for i in range(3):
    pid = os.fork()
    if pid == 0:
        work(i)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
stats = {}
if funnel is not None:
    assert funnel.flush(timeout=30)
    stats = dataclasses.asdict(funnel.stats())
    funnel.shutdown()
logging.shutdown()
print(json.dumps(stats))
"""


def _run(tmp_path: Path, how: str, after: str = "-") -> tuple[dict[str, int], list[bytes]]:
    folder = tmp_path / how
    folder.mkdir()
    program = tmp_path / "program.py"  # one path: the tracebacks name it
    program.write_text(textwrap.dedent(PROGRAM % {"fmt": FMT}))
    logs = [folder / "main.log", folder / "own.log", folder / "main.log.warnings"]
    proc = run_python(str(program), str(logs[0]), str(logs[1]), how, after)
    return last_json(proc.stdout), [log.read_bytes() for log in logs]


def test_forked_childrens_lines_are_the_programs_own_to_the_byte(tmp_path: Path) -> None:
    """Rendered in the children or not, every file holds exactly what it holds without logfunnel."""
    stats, files = _run(tmp_path, "funnel")
    _, expected = _run(tmp_path, "plain")
    assert files == expected
    assert b"two\nlines 1\n" in files[0]  # a line break stays the program's: not continued
    assert files[1].count(b"own handler too") == 3  # the named logger's own formatter
    # Per child, 8 records reach the writer (the debug one is below the level); the
    # plain ones whose handlers are all stock with the installer's formatter are
    # written as their senders rendered them (the plain one, the line break, the
    # extra, w.loud's two, the new name's); the traceback, and the record w.own's
    # other formatter takes too, are handled as records.
    assert stats["records"] == 3 * 8
    assert stats["lines"] == 3 * 6
    assert stats["bad_frames"] == stats["handler_errors"] == 0


def test_a_formatter_changed_after_install_is_the_one_the_lines_follow(tmp_path: Path) -> None:
    """The children render with the formatter install() saw; the writer sees it is gone."""
    stats, files = _run(tmp_path, "funnel", "reformat")
    _, expected = _run(tmp_path, "plain", "reformat")
    assert files == expected
    assert files[0].startswith(b"NEW INFO plain 0 of ")
    assert stats["lines"] == 0


@pytest.mark.parametrize(
    ("formatter", "expected"),
    [
        (logging.Formatter(FMT), (FMT, None, "localtime", "%Y-%m-%d %H:%M:%S", "%s,%03d")),
        (None, ("%(message)s", None, "localtime", "%Y-%m-%d %H:%M:%S", "%s,%03d")),
        (logging.Formatter("%(message)s", "%H:%M"), ("%(message)s", "%H:%M", "localtime",
                                                     "%Y-%m-%d %H:%M:%S", "%s,%03d")),
        (logging.Formatter("%(msg)s"), None),  # the template: the writer only has the message
        (logging.Formatter("%(shard)s"), None),  # an extra
        (logging.Formatter("{message}", style="{"), None),
        (logging.Formatter("%(message)s %(x)s", defaults={"x": 1}), None),
        (type("Own", (logging.Formatter,), {})("%(message)s"), None),
    ],
)
def test_only_a_stock_percent_formatter_of_travelling_fields_is_rendered_by_senders(
    formatter: logging.Formatter | None, expected: adopt_render.Spec | None
) -> None:
    assert adopt_render.spec_of(formatter) == expected


def test_the_converter_and_default_formats_travel_with_the_spec() -> None:
    formatter = logging.Formatter("%(asctime)s %(message)s")
    formatter.converter = time.gmtime
    formatter.default_msec_format = "%s.%03d"
    spec = adopt_render.spec_of(formatter)
    assert spec == ("%(asctime)s %(message)s", None, "gmtime", "%Y-%m-%d %H:%M:%S", "%s.%03d")
    rebuilt = adopt_render.formatter_for(spec)
    assert rebuilt is not None
    record = logging.makeLogRecord({"msg": "m %s", "args": ("x",), "created": 1.5e9, "msecs": 7.0})
    line = adopt_render.Renderer(rebuilt).render(record, record.getMessage())
    assert line == formatter.format(record) == "2017-07-14 02:40:00.007 m x"
    assert "message" in record.__dict__  # set by format(), not by render()


def test_a_handler_with_a_filter_or_of_a_subclass_is_not_rendered_for() -> None:
    spec = adopt_render.spec_of(logging.Formatter(FMT))
    assert spec is not None
    route = adopt_render.Route(spec)
    logger = logging.getLogger("adopt-render-test")
    logger.propagate = False  # the test run's own handlers are on the root
    stock = logging.StreamHandler(sys.stderr)
    stock.setFormatter(logging.Formatter(FMT))
    logger.addHandler(stock)
    assert route.handlers(logger, True, logging.INFO) == [stock]
    stock.addFilter(logging.Filter("other"))
    assert route.handlers(logger, True, logging.INFO) is None
    stock.removeFilter(stock.filters[0])
    assert route.handlers(logger, True, logging.INFO) == [stock]
    sub = type("Sub", (logging.StreamHandler,), {})(sys.stderr)
    sub.setFormatter(logging.Formatter(FMT))
    logger.addHandler(sub)
    assert route.handlers(logger, True, logging.INFO) is None
    logger.removeHandler(sub)
    stock.setLevel(logging.ERROR)  # a record below every handler's level goes nowhere
    assert route.handlers(logger, True, logging.INFO) == []
    logger.removeHandler(stock)
    assert route.handlers(logger, True, logging.INFO) is None  # logging.lastResort's


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """Yield the root logger; put its handlers and level back afterwards."""
    logger = logging.getLogger()
    saved = logger.handlers[:], logger.level
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])


def _adopt_dispatcher(formatter: logging.Formatter | None) -> dispatch.Dispatcher:
    """Return a writer's Dispatcher in adopt mode, its senders rendering with ``formatter``."""
    spec = adopt_render.spec_of(formatter)
    assert spec is not None
    dispatcher = dispatch.Dispatcher(None)
    dispatcher.start(lines=False, adopt=spec)
    return dispatcher


def _rendered(
    encoder: wire.Encoder, name: str, level: int, message: str, line: str
) -> list[list[Any]]:
    """Return the frames a sender sends for a plain record of ``message``, rendered as ``line``."""
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    return [
        list(fields) for fields in wire.FrameReader().feed(encoder.record(record, line, message))
    ]


def test_rendered_frames_are_written_as_sent_or_handled_as_records(
    tmp_path: Path, root: logging.Logger
) -> None:
    """A Dispatcher writes the sender's line where the tree takes it, else rebuilds the record."""
    stock = logging.FileHandler(tmp_path / "out.log")
    stock.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.handlers[:] = [stock]
    dispatcher, peer = _adopt_dispatcher(stock.formatter), Sender()
    sent = _rendered(wire.Encoder(), "r", logging.INFO, "hi", "SENDER'S LINE")
    assert sent[-1][0] == wire.RENDERED
    for fields in sent:
        dispatcher.frame(list(fields), peer)
    stock.setFormatter(logging.Formatter("other %(message)s"))  # the tree changed
    dispatcher.frame(list(sent[-1]), peer)
    dispatcher.frame([wire.RENDERED, "too", "short"], peer)
    dispatcher.flush_all()
    stock.close()
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert lines[:2] == ["SENDER'S LINE", "other hi"]
    assert "discarded a malformed rendered record" in lines[2]
    assert (dispatcher.stats.records, dispatcher.stats.lines) == (2, 1)
    assert dispatcher.stats.bad_frames == 1


def test_a_run_of_rendered_lines_is_written_line_by_line_through_failures(
    root: logging.Logger,
) -> None:
    """Lines written in one run: a failing write costs its own line, counted; the rest land in order."""

    class Disk(io.StringIO):
        def write(self, text: str) -> int:
            if "bad" in text:
                raise OSError(28, "No space left on device")
            return super().write(text)

    def raising(record: logging.LogRecord) -> None:  # a program's own, put after the watch
        raise RuntimeError("handleError raised")

    stock = logging.StreamHandler(Disk())
    stock.setFormatter(logging.Formatter("%(message)s"))
    root.handlers[:] = [stock]
    dispatcher, peer, encoder = _adopt_dispatcher(stock.formatter), Sender(), wire.Encoder()

    def frames(texts: list[str]) -> list[list[Any]]:
        return [f for text in texts for f in _rendered(encoder, "r", logging.INFO, text, text)]

    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        dispatcher.frames(frames(["l0", "l1 bad", "l2", "l3"]), peer)
        dispatcher.flush_all()
    written = stock.stream.getvalue().splitlines()
    assert written[:3] == ["l0", "l2", "l3"]
    assert written[3:] == [f"{stock!r} writes again: resumed after 1 failed records"]
    assert dispatcher.calls.unwritten() == 1
    assert "cannot write (OSError" in stderr.getvalue()
    # A handleError that raises: counted as a handler error, the next line still written.
    other = logging.StreamHandler(Disk())
    other.setFormatter(logging.Formatter("%(message)s"))
    root.handlers[:] = [other]
    dispatcher.frames(frames(["m0"]), peer)  # the writer's watch is on it now
    other.handleError = raising  # type: ignore[method-assign]
    with contextlib.redirect_stderr(io.StringIO()):
        dispatcher.frames(frames(["m1", "m2 bad", "m3"]), peer)
    dispatcher.flush_all()
    assert other.stream.getvalue().splitlines() == ["m0", "m1", "m3"]
    assert dispatcher.stats.handler_errors == 1
    assert (dispatcher.stats.records, dispatcher.stats.lines) == (8, 8)


def test_records_of_one_read_reach_the_handlers_of_their_own_name_and_level(
    tmp_path: Path, root: logging.Logger
) -> None:
    """The handlers found once per (name, level) in a read: each record still goes where it would."""
    loud = logging.getLogger("once.loud")
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    everything = logging.FileHandler(tmp_path / "all.log")
    warnings = logging.FileHandler(tmp_path / "warnings.log")
    warnings.setLevel(logging.WARNING)
    for handler in (everything, warnings):
        handler.setFormatter(fmt)
    root.handlers[:] = [everything]
    loud.addHandler(warnings)
    try:
        dispatcher, encoder = _adopt_dispatcher(fmt), wire.Encoder()
        cases = [("once.loud", logging.INFO), ("once.loud", logging.ERROR), ("once", logging.INFO),
                 ("once.loud", logging.INFO), ("once.loud.deep", logging.ERROR)]  # fmt: skip
        sent = [
            fields
            for n, (name, level) in enumerate(cases)
            for fields in _rendered(
                encoder, name, level, f"m{n}", f"{name} {logging.getLevelName(level)} m{n}"
            )
        ]
        dispatcher.frames(sent, Sender())  # one read's frames
        dispatcher.flush_all()
    finally:
        loud.removeHandler(warnings)
        everything.close()
        warnings.close()
    assert (tmp_path / "all.log").read_text().splitlines() == [
        "once.loud INFO m0", "once.loud ERROR m1", "once INFO m2", "once.loud INFO m3",
        "once.loud.deep ERROR m4",
    ]  # fmt: skip
    assert (tmp_path / "warnings.log").read_text().splitlines() == [
        "once.loud ERROR m1", "once.loud.deep ERROR m4",
    ]  # fmt: skip
    assert dispatcher.stats.lines == 5


SPAWNED = """
import dataclasses, json, logging, multiprocessing, sys

def work(i):
    logging.getLogger("w").info("spawned %d", i)

if __name__ == "__main__":
    import logfunnel
    logging.basicConfig(filename=sys.argv[1], level=logging.INFO,
                        format="%(processName)s %(name)s %(levelname)s %(message)s")
    funnel = logfunnel.install()
    with multiprocessing.get_context(sys.argv[2]).Pool(2) as pool:
        pool.map(work, range(4))
    assert funnel.flush(timeout=30)
    print(json.dumps(dataclasses.asdict(funnel.stats())))
    funnel.shutdown()
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_children_render_with_the_installers_formatter(tmp_path: Path, method: str) -> None:
    """The Spec reaches children that join through the environment, not only forked ones."""
    program = tmp_path / "spawned.py"
    program.write_text(SPAWNED)
    log = tmp_path / "main.log"
    stats = last_json(run_python(str(program), str(log), method).stdout)
    assert (stats["records"], stats["lines"]) == (4, 4)
    pool = "SpawnPoolWorker" if method == "spawn" else "ForkServerPoolWorker"
    lines = sorted(line.split(" ", 1)[1] for line in log.read_text().splitlines())
    assert lines == [f"w INFO spawned {i}" for i in range(4)]
    assert all(line.startswith(pool) for line in log.read_text().splitlines())


# argv: log, "funnel" or "plain".  Two stock handlers on one stream: every record twice.
SHARED_STREAM = """
import json, logging, os, sys
path, how = sys.argv[1:3]
stream = open(path, "a", encoding="utf-8")
for _ in range(2):
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(processName)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
funnel = None
if how == "funnel":
    import logfunnel
    funnel = logfunnel.install()
for i in range(3):
    pid = os.fork()
    if pid == 0:
        log = logging.getLogger("w")
        for j in range(500):  # a burst: the writer reads many at a time
            log.info("burst %d record %d", i, j)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
stats = {}
if funnel is not None:
    assert funnel.flush(timeout=30)
    stats = {"lines": funnel.stats().lines}
    funnel.shutdown()
logging.shutdown()
print(json.dumps(stats))
"""


def test_two_handlers_on_one_stream_get_each_line_in_turn(tmp_path: Path) -> None:
    """Rendered lines written in runs still reach two handlers of one stream record by record."""
    program = tmp_path / "shared.py"
    program.write_text(SHARED_STREAM)
    stats = last_json(run_python(str(program), str(tmp_path / "funnel.log"), "funnel").stdout)
    run_python(str(program), str(tmp_path / "plain.log"), "plain")
    written, expected = (
        (tmp_path / "funnel.log").read_bytes(),
        (tmp_path / "plain.log").read_bytes(),
    )
    assert stats == {"lines": 1500}  # every record written as its sender rendered it
    lines = written.splitlines()
    assert len(lines) == 3000
    assert lines[0::2] == lines[1::2]  # each record twice in a row, as without logfunnel
    assert written == expected
