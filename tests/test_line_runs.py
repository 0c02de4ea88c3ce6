"""Runs of LINE frames (``_lines.LineReader``) written as blocks: exactly what frame by frame writes.

In-process: streams built by the real encoder (and raw msgpack for what a
broken or hostile peer could send) are fed in arbitrary splits to a
``LineReader`` and to the ``FrameReader`` it replaces; the frames, the errors,
the bytes left pending, and what a ``Dispatcher`` then writes into real file
sinks (``FileSink``, ``RotatingFileSink``) must be the same, counts included.
A real writer loop in a thread, over a Unix socket, checks that a FLUSH in the
middle of a read sees every line before it; a real process host with forked
workers and a small ``max_bytes`` checks every record once, lines whole,
sizes respected.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import last_json, run_python
from logfunnel._core import dispatch as _dispatch
from logfunnel._core import protocol as _protocol
from logfunnel._core import wire as _wire
from logfunnel._core.lines import LINE_BLOCK, LINE_RUN, LineReader, count_lines
from logfunnel._core.writer import Writer, start_thread
from logfunnel.sinks.files import FileSink, LineFormatter
from logfunnel.sinks.options import FileOptions
from logfunnel.sinks.rotating import RotatingFileSink
from test_wire_support import PROPERTY
from test_writer_support import wait_for

# -- streams ---------------------------------------------------------------------------

# Texts a LINE may carry: ASCII, non-ASCII, line breaks, lone surrogates (the encoder
# escapes them), long enough for every str header (fixstr, str8, str16).
texts = st.text(
    alphabet=st.sampled_from(["a", "z", " ", "é", "☃", "\U0001f600", "\n", "\r", "\udcff", "|"]),
    max_size=40,
) | st.sampled_from(["", "x" * 31, "x" * 32, "y" * 255, "y" * 256, "é" * 40_000])


def _raw(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# Frames that are not a plain LINE: what the reader must hand to the decoder as always.
ODD_FRAMES = [
    _raw(b"\x92\x0d\xd9\x03ab"),  # a str header claiming more bytes than the frame holds
    _raw(b"\x92\x0d\xa2abc"),  # a byte after the text: not one msgpack value
    _raw(b"\x92\x0d\xc4\x02ab"),  # bin, not str: a malformed LINE (discarded, counted)
    _raw(b"\x93\x0d\xa1a\xc0"),  # [LINE, text, None]: three fields
    _raw(b"\x92\x0d\x05"),  # [LINE, 5]
    _raw(b"\x92\x0d\xa3\xff\xfeA"),  # invalid UTF-8 in a str: replaced, as the decoder does
    _raw(b"\x92\x0d\xa3\xed\xa0\x80"),  # an encoded surrogate: not valid UTF-8 either
    _raw(b"\x92\x0d\xda\x00\x02hi"),  # str16 for a short text (valid, not minimal)
    _raw(b"\x92\x0d\xdb\x00\x00\x00\x02hi"),  # str32 for a short text
    _raw(b"\x92\x0d"),  # cut after the kind: undecodable
    _raw(b""),  # an empty payload: undecodable
    _raw(b"\xc1"),  # never used in msgpack: undecodable
    # Bare lines no sender makes (``Encoder.line`` frames such texts):
    b"bare\rline\n",  # a carriage return: the line is continued, as a LINE's is
    b"bad \xff\xfe UTF-8\n",  # invalid UTF-8: replaced, as the decoder does
    b"a NUL\x00inside\n",  # a NUL before the line's end: the stream is refused
    b"x" * 400 + b"\n",  # longer than a small limit: refused
]


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("runs", logging.WARNING, __file__, 7, message, None, None)


@st.composite
def streams(draw: st.DrawFn, odd: bool = True) -> bytes:
    """Draw a connection's bytes: LINEs mixed with RECORD, SITE, THREAD, FLUSH, DROPPED, odd frames."""
    encoder = _wire.Encoder()
    parts: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=25))):
        choice = draw(st.integers(min_value=0, max_value=9 if odd else 8))
        if choice <= 2:
            parts.append(encoder.line(draw(texts)))  # bare when it can be
        elif choice <= 4:
            parts.append(encoder.line_frame(draw(texts)))
        elif choice == 5:
            parts.append(encoder.record(_record(draw(texts))))  # SITE/THREAD first, once
        elif choice == 6:
            parts.append(encoder.frame([_wire.FLUSH, draw(st.integers(0, 9))]))
        elif choice == 7:
            parts.append(encoder.frame([_wire.DROPPED, draw(st.integers(1, 5))]))
        elif choice == 8:
            parts.append(encoder.frame([_wire.RECORD, "bad"]))  # a malformed record
        else:
            parts.append(draw(st.sampled_from(ODD_FRAMES)))
    return b"".join(parts)


@st.composite
def splits(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` cut at any points (bytes by bytes included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def expand(frames: list[Any]) -> list[Any]:
    """Turn runs back into the LINE frames they stand for, texts decoded as the decoder does."""
    out: list[Any] = []
    for fields in frames:
        if fields[0] is LINE_RUN:
            out += [[_protocol.LINE, t.decode("utf-8", "replace")] for t in fields[1]]
        elif fields[0] is LINE_BLOCK:
            lines = fields[1].split(b"\n")[:-1]
            out += [[_protocol.LINE, t.decode("utf-8", "replace")] for t in lines]
        else:
            out.append(fields)
    return out


def feed_each(reader: _wire.FrameReader, chunks: list[bytes]) -> list[Any]:
    """Feed every chunk; each feed's frames, or the FrameError it raised (then stop)."""
    got: list[Any] = []
    for chunk in chunks:
        try:
            got.append(reader.feed(chunk))
        except _wire.FrameError as exc:
            got.append(("error", str(exc)))
            break
    return got


# -- the reader ------------------------------------------------------------------------


@PROPERTY
@given(
    data=st.data(), stream=streams(), limit=st.sampled_from([64, 300, _wire.DEFAULT_FRAME_LIMIT])
)
def test_line_reader_gives_frame_readers_frames_errors_and_pending(
    data: st.DataObject, stream: bytes, limit: int
) -> None:
    """Any stream, any split, any limit: the same frames per feed, the same error, the same rest."""
    chunks = data.draw(splits(stream))
    lines, frames = LineReader(limit), _wire.FrameReader(limit)
    got = feed_each(lines, chunks)
    expected = feed_each(frames, chunks)
    assert [expand(g) if isinstance(g, list) else g for g in got] == expected
    assert lines.pending == frames.pending


def test_consecutive_lines_of_one_feed_are_one_run_in_their_place() -> None:
    """LINEs between other frames become one run each, in order; the others stay frames."""
    encoder = _wire.Encoder()
    stream = b"".join(
        [
            encoder.line_frame("a"),
            encoder.line_frame("b" * 300),
            encoder.frame([_wire.FLUSH, 1]),
            encoder.line_frame("c"),
            encoder.frame([_wire.DROPPED, 2]),
            encoder.line_frame("ü" * 20),
        ]
    )
    frames = LineReader().feed(stream)
    assert frames == [
        (LINE_RUN, [b"a", b"b" * 300]),
        [_wire.FLUSH, 1],
        (LINE_RUN, [b"c"]),
        [_wire.DROPPED, 2],
        (LINE_RUN, ["ü".encode() * 20]),
    ]


def test_consecutive_bare_lines_of_one_feed_are_one_block_in_their_place() -> None:
    """Bare lines become one block (their bytes as sent) between frames and runs, in order."""
    encoder = _wire.Encoder()
    stream = b"".join(
        [
            encoder.line("a"),
            encoder.line("b" * 300),
            encoder.line_frame("framed"),
            encoder.line("ü" * 20),
            encoder.frame([_wire.FLUSH, 1]),
            encoder.line("c"),
            encoder.line("two\nlines"),  # framed: a bare line cannot hold a line break
            encoder.line("d"),
        ]
    )
    assert stream.startswith(b"a\n" + b"b" * 300 + b"\n\x00")
    frames = LineReader().feed(stream)
    assert frames == [
        (LINE_BLOCK, b"a\n" + b"b" * 300 + b"\n"),
        (LINE_RUN, [b"framed"]),
        (LINE_BLOCK, "ü".encode() * 20 + b"\n"),
        [_wire.FLUSH, 1],
        (LINE_BLOCK, b"c\n"),
        (LINE_RUN, [b"two\nlines"]),
        (LINE_BLOCK, b"d\n"),
    ]


def test_an_oversized_frame_after_lines_raises_and_keeps_nothing_of_that_feed() -> None:
    """As FrameReader: a frame over the limit raises; the lines before it in the feed go too."""
    encoder = _wire.Encoder()
    reader = LineReader(limit=100)
    with pytest.raises(_wire.FrameError, match="exceeds the limit"):
        reader.feed(encoder.line_frame("a") + encoder.line("b") + struct.pack(">I", 101))
    assert reader.pending == 4  # its header: the whole frames before it went, as FrameReader's


def test_a_read_of_whole_bare_lines_is_one_block_as_it_came() -> None:
    """Into an empty reader, whole bare lines come out as that read; a NUL or a long line not."""
    reader = LineReader(limit=100)
    read = memoryview(bytearray(b"one\n" + b"x" * 100 + b"\nthree\n"))
    assert reader.feed(read) == [(LINE_BLOCK, bytes(read))]
    assert reader.pending == 0
    flush = _wire.Encoder().frame([_wire.FLUSH, 1])
    assert reader.feed(b"a\n" + flush + b"b\n") == [
        (LINE_BLOCK, b"a\n"),
        [_wire.FLUSH, 1],
        (LINE_BLOCK, b"b\n"),
    ]
    with pytest.raises(_wire.FrameError, match="line longer than the limit of 100 bytes"):
        reader.feed(b"ok\n" + b"y" * 101 + b"\n")
    assert reader.pending == 102  # the lines before the long one were used up


def test_a_cut_last_line_stays_pending() -> None:
    """A LINE cut by the end of what was read waits for its rest; at EOF it is the cut frame."""
    frame = _wire.Encoder().line_frame("the last line")
    reader = LineReader()
    assert reader.feed(frame + frame[:-3]) == [(LINE_RUN, [b"the last line"])]
    assert reader.pending == len(frame) - 3
    assert reader.feed(frame[-3:]) == [(LINE_RUN, [b"the last line"])]
    bare = _wire.Encoder().line("the last line")
    assert bare == b"the last line\n"
    assert reader.feed(bare + bare[:-3]) == [(LINE_BLOCK, bare)]
    assert reader.pending == len(bare) - 3
    assert reader.feed(bare[-3:]) == [(LINE_BLOCK, bare)]


# -- what a dispatcher writes ----------------------------------------------------------


class Peer:
    """The connection a frame came on, as dispatch sees it (``_gate.Peer``)."""

    def __init__(self) -> None:
        """Start with no site or thread defined."""
        self.tables = _protocol.Tables()

    def describe(self) -> str:
        """Name the process as the writer's reports do."""
        return "process 1 (test)"


def _dispatcher(sink: logging.Handler) -> _dispatch.Dispatcher:
    sink.setFormatter(LineFormatter("%(levelname)s|%(message)s"))  # as install() builds
    dispatcher = _dispatch.Dispatcher([sink])
    dispatcher.start(lines=True)
    return dispatcher


def _route(dispatcher: _dispatch.Dispatcher, frames: list[Any], peer: Peer) -> None:
    """Do what ``Peers.read`` does with the frames of one read (HELLO and FLUSH aside)."""
    for fields in frames:
        if fields[0] is LINE_RUN:
            dispatcher.lines(fields[1], peer)
        elif fields[0] is LINE_BLOCK:
            dispatcher.block(fields[1], peer)
        elif fields[0] != _wire.FLUSH:
            dispatcher.frame(fields, peer)
    dispatcher.calls.flush_batched()  # the end of the loop's turn


def _write_both(
    chunks: list[bytes], make_sink: Any, tmp: Path
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Dispatch ``chunks`` frame by frame and in runs; return (files, stats) of each."""
    results = []
    for name, reader in (("frames", _wire.FrameReader()), ("runs", LineReader())):
        directory = tmp / name
        directory.mkdir()
        sink = make_sink(str(directory / "out.log"))
        dispatcher, peer = _dispatcher(sink), Peer()
        for chunk in chunks:
            try:
                frames = reader.feed(chunk)
            except _wire.FrameError:
                break
            _route(dispatcher, frames, peer)
        sink.close()
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir())}
        stats = dataclasses.asdict(dispatcher.stats)
        del stats["pid"]
        results.append((files, stats, reader.pending))
    return results[0], results[1]


def _file_sink(path: str) -> FileSink:
    return FileSink(path, encoding="utf-8", errors="backslashreplace")


@PROPERTY
@given(data=st.data(), stream=streams())
def test_runs_write_the_same_bytes_and_counts_as_frames(data: st.DataObject, stream: bytes) -> None:
    """Into a FileSink: the same file, byte for byte, and the same Stats, for any split."""
    chunks = data.draw(splits(stream))
    with tempfile.TemporaryDirectory() as tmp:
        by_frames, by_runs = _write_both(chunks, _file_sink, Path(tmp))
    assert by_runs == by_frames


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", ""])
def test_long_lines_with_a_break_inside_are_written_as_lines_are(tmp_path: Path, brk: str) -> None:
    """Long texts (searched one by one for breaks, not counted) give the per-line bytes too."""
    encoder = _wire.Encoder()
    texts = ["short one", "x" * 5000 + brk + "y" * 3000, "z" * 70_000, "end"]
    stream = b"".join(encoder.line(text) + encoder.line_frame(text) for text in texts)
    by_frames, by_runs = _write_both([stream], _file_sink, tmp_path)
    assert by_runs == by_frames
    (written,) = by_runs[0].values()
    assert written.count(b"\n") == 2 * (4 + (brk != ""))  # a break inside is continued


@PROPERTY
@given(
    data=st.data(),
    stream=streams(odd=False),
    max_bytes=st.sampled_from([40, 100, 333, 2000]),
)
def test_runs_rotate_by_size_exactly_where_lines_do(
    data: st.DataObject, stream: bytes, max_bytes: int
) -> None:
    """Into a RotatingFileSink: the same files (names, bytes), rotated between the same lines."""
    chunks = data.draw(splits(stream))
    options = FileOptions(file="out.log", max_bytes=max_bytes, backups=10_000)

    def make(path: str) -> RotatingFileSink:
        return RotatingFileSink(path, options)

    with tempfile.TemporaryDirectory() as tmp:
        by_frames, by_runs = _write_both(chunks, make, Path(tmp))
        assert by_runs == by_frames
        for content in by_runs[0].values():  # only a file of one record reaches max_bytes
            records = [x for x in content.split(b"\n")[:-1] if not x.startswith(b"  | ")]
            assert len(content) < max_bytes or len(records) == 1


def test_a_block_is_written_only_within_the_period_and_the_size() -> None:
    """At the period's end, or at max_bytes, a block is refused: its lines rotate one by one."""
    clock = [1_000_000.0]
    with tempfile.TemporaryDirectory() as tmp:
        options = FileOptions(file="out.log", when="S", interval=10, max_bytes=1000, backups=99)
        sink = RotatingFileSink(os.path.join(tmp, "out.log"), options, now=lambda: clock[0])
        assert sink.write_lines(b"a\nb\n", 2)
        clock[0] += 10  # the period is over: the next line starts a new file
        assert not sink.write_lines(b"c\n", 1)
        sink.write_line("c")
        assert sink.write_lines(b"d\n", 1)
        assert not sink.write_lines(b"e" * 999 + b"\n", 1)  # would reach max_bytes
        sink.close()
        contents = sorted(Path(tmp).iterdir(), key=lambda p: p.stat().st_mtime_ns)
        assert sorted(p.read_bytes() for p in contents) == [b"a\nb\n", b"c\nd\n"]


def test_stats_count_each_line_of_a_run() -> None:
    """A run of 1,000 LINEs counts 1,000 records and 1,000 lines, and lands 1,000 in the file."""
    encoder = _wire.Encoder()
    with tempfile.TemporaryDirectory() as tmp:
        sink = _file_sink(os.path.join(tmp, "out.log"))
        dispatcher = _dispatcher(sink)
        frames = LineReader().feed(b"".join(encoder.line(f"line {i}") for i in range(1000)))
        assert len(frames) == 1
        _route(dispatcher, frames, Peer())
        assert (dispatcher.stats.records, dispatcher.stats.lines, sink.landed) == (1000, 1000, 1000)
        sink.close()
        assert Path(tmp, "out.log").read_text().splitlines() == [f"line {i}" for i in range(1000)]


def test_a_sink_that_takes_no_blocks_gets_the_lines_one_by_one(tmp_path: Path) -> None:
    """A StreamHandler among the sinks: no runs at all; a LineSink without blocks: line by line."""

    class Lines(FileSink):
        def write_lines(self, data: bytes, count: int) -> bool:  # noqa: ARG002
            return False

    sink = Lines(str(tmp_path / "a.log"), encoding="utf-8")
    dispatcher = _dispatcher(sink)
    assert dispatcher.takes_runs
    dispatcher.lines([bytearray(b"one"), bytearray(b"two")], Peer())
    sink.close()
    assert (tmp_path / "a.log").read_bytes() == b"one\ntwo\n"
    stream = logging.StreamHandler()
    assert not _dispatcher(stream).takes_runs


# -- a full disk inside a block ---------------------------------------------------------

FULL_DISK = r"""
import json, os, resource, signal, sys
from logfunnel.sinks.files import LineFile
from logfunnel._core.sink import LinesLostError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (250, resource.RLIM_INFINITY))
f = LineFile(sys.argv[1], "a", "utf-8", None)
f.write(b"first line\n".decode())
f.write_lines(b"".join(b"line %02d in a block\n" % i for i in range(20)), 20)
f.write(b"last line\n".decode())
try:
    f.flush()
except LinesLostError as exc:
    print(json.dumps([exc.records, exc.written, exc.lost_bytes]))
"""


def test_a_full_disk_in_a_block_counts_whole_lines_and_tears_none(tmp_path: Path) -> None:
    """EFBIG in the middle of a block: the lines that landed whole count, the cut one is taken back."""
    script, out = tmp_path / "full.py", tmp_path / "out.log"
    script.write_text(FULL_DISK, encoding="utf-8")
    proc = run_python(str(script), str(out))
    records, written, lost_bytes = json.loads(proc.stdout)
    block = [b"line %02d in a block\n" % i for i in range(20)]
    sent = [b"first line\n", *block, b"last line\n"]
    landed = b"".join(sent)[:250]  # what the size limit let through
    whole = landed[: landed.rfind(b"\n") + 1]
    assert 0 < len(whole) < len(landed)  # the limit falls inside a line of the block
    assert out.read_bytes() == whole
    assert written == whole.count(b"\n")
    assert records == len(sent) - written
    assert lost_bytes == len(b"".join(sent)) - len(whole)


# -- a real writer loop: a FLUSH in the middle of a read ----------------------------------


def test_a_flush_between_lines_of_one_read_sees_every_line_before_it(tmp_path: Path) -> None:
    """One send: 2,000 LINEs, a FLUSH, 2,000 more; when FLUSHED comes, the first 2,000 are in the file."""
    path = tmp_path / "out.log"
    sink = _file_sink(str(path))
    sink.setFormatter(logging.Formatter("%(message)s"))
    address = str(tmp_path / "w.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(8)
    listener.setblocking(False)
    control, far = socket.socketpair()
    writer = Writer(listener, far, sinks=[sink])
    writer.lines_allowed = True
    thread = start_thread(writer)
    encoder = _wire.Encoder()
    try:
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.settimeout(60)
        peer.connect(address)
        before = b"".join(encoder.line(f"before {i:04d} ü") for i in range(2000))
        after = b"".join(encoder.line(f"after {i:04d}") for i in range(2000))
        hello = encoder.frame(_wire.hello_fields(os.getpid(), "test"))
        peer.sendall(hello + before + encoder.frame([_wire.FLUSH, 7]) + after)
        reader = _wire.FrameReader()
        answers: list[Any] = []
        while not answers:
            answers = reader.feed(peer.recv(4096))
        assert answers == [[_wire.FLUSHED, 7]]
        written = path.read_text(encoding="utf-8").splitlines()
        assert written[:2000] == [f"before {i:04d} ü" for i in range(2000)]
        assert written[2000:] == [f"after {i:04d}" for i in range(len(written) - 2000)]
        peer.sendall(encoder.line("cut")[:-1])
        peer.close()
        wait_for(lambda: writer.stats.cut_frames == 1, "the cut last frame counted")
        control.sendall(encoder.frame([_wire.SHUTDOWN, 1]))
        thread.join(60)
        assert not thread.is_alive()
    finally:
        control.close()
        sink.close()
    assert (writer.stats.records, writer.stats.lines) == (4000, 4000)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [x for x in lines if not x.startswith("discarded")] == [
        *(f"before {i:04d} ü" for i in range(2000)),
        *(f"after {i:04d}" for i in range(2000)),
    ]


# -- a real process host ---------------------------------------------------------------

PROCESS_HOST = r"""
import dataclasses, json, multiprocessing, sys
import logging
import logfunnel

def work(n):
    log = logging.getLogger(f"w{n}")
    for i in range(3000):
        log.info("%d %05d %s", n, i, "é" * (i % 7) + "x" * (i % 50))
    return n

if __name__ == "__main__":
    funnel = logfunnel.install(file=sys.argv[1], fmt="%(name)s %(message)s", host="process",
                               level="INFO",
                               max_bytes=int(sys.argv[2]), backups=10_000)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=work, args=(n,)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert funnel.flush(timeout=60)
    print(json.dumps(dataclasses.asdict(funnel.stats())))
    assert funnel.shutdown(timeout=60)
"""


def test_a_process_host_rotating_small_files_keeps_every_record_once_and_whole(
    tmp_path: Path,
) -> None:
    """4 forked workers x 3,000 records, max_bytes 20,000: each once, whole, files under the size."""
    script = tmp_path / "host.py"
    script.write_text(PROCESS_HOST, encoding="utf-8")
    max_bytes = 20_000
    proc = run_python(str(script), str(tmp_path / "out.log"), str(max_bytes), timeout=120)
    stats = last_json(proc.stdout)
    assert stats["records"] == stats["lines"] == 12_000
    assert stats["cut_frames"] == stats["bad_frames"] == 0
    files = sorted(tmp_path.glob("out.log*"))
    assert len(files) > 10
    seen: set[tuple[int, int]] = set()
    for path in files:
        content = path.read_bytes()
        assert len(content) < max_bytes
        assert content.endswith(b"\n")
        for line in content.decode("utf-8").splitlines():
            name, n, i, payload = [*line.split(" "), ""][:4]
            key = (int(n), int(i))
            assert name == f"w{n}"
            assert payload == "é" * (key[1] % 7) + "x" * (key[1] % 50)
            assert key not in seen
            seen.add(key)
    assert seen == {(n, i) for n in range(4) for i in range(3000)}


def test_the_writer_lines_benchmark_runs(tmp_path: Path) -> None:
    """A smoke run of benchmarks/writer_lines.py (2 workers, flat out and paced): it checks."""
    out = tmp_path / "result.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "writer_lines.py"
    # /proc counts CPU in 10 ms ticks: at ~0.3 µs a line (since the pipes), 40,000
    # lines were often 0 or 1 tick; 200,000 are ~60 ms.
    args = ("--procs", "2", "--total", "200000", "--repeats", "1", "--out", str(out))
    paced = ("--throttled", "2:500", "--throttled-s", "0.2")
    run_python(str(script), *args, *paced, timeout=180)
    results = json.loads(out.read_text())
    (result,) = results["flat_out"]
    assert result["per_procs"]["2"]["bad"] == 0
    assert result["per_procs"]["2"]["us"] > 0
    (throttled,) = results["throttled"]
    assert throttled["procs"] == 2
    assert throttled["rate_per_worker"] == 500
    assert throttled["bad"] == 0


@PROPERTY
@given(st.lists(st.integers(min_value=0, max_value=70_000), max_size=12), st.booleans())
def test_count_lines_counts_every_line_end_whatever_the_lengths(
    lengths: list[int], cut_last: bool
) -> None:
    """Short lines, long ones, a last one without its end: the count is ``bytes.count``'s.

    ``count_lines`` picks one of three ways by the first line's length (under
    32 bytes, under 4 KiB, longer); each must count the same.
    """
    data = b"".join(b"x" * length + b"\n" for length in lengths)
    if cut_last and data:
        data = data[:-1]
    assert count_lines(data) == data.count(b"\n")
