"""Fuzz the decoder of a real running writer: garbage in on raw sockets, records still flow.

A child process (``tests/scripts/bad_input_writer_host.py``) runs a real funnel
writing a real file.  The tests connect raw Unix sockets to its writer and send
random bytes, valid-looking frames with wrong types, huge length prefixes and
truncated frames; after each attack a normal client (``_connection.Connection``,
what every ``FunnelHandler`` sends through) logs a record, waits on the
writer's flush barrier, and must find that record in the file.  The writer's
``Funnel.stats()`` must count the bad and cut frames.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logfunnel._core import connection as _connection
from logfunnel._core import wire as _wire
from logfunnel._core.options import Options

if TYPE_CHECKING:
    from collections.abc import Iterator

SCRIPTS = Path(__file__).parent / "scripts"
HOST_SCRIPT = SCRIPTS / "bad_input_writer_host.py"
ATHERIS_SCRIPT = SCRIPTS / "bad_input_atheris_fuzz.py"
LIMIT = _wire.DEFAULT_FRAME_LIMIT
DEADLINE = 20.0  # seconds any single step may take before the writer counts as wedged
SEND_TIMEOUT = 2.0  # a raw peer gives up sending after this (the writer may have dropped it)


class WriterHost:
    """A child process running a real funnel, its log file, and a normal client to it."""

    def __init__(self, tmp: Path, host: str = "thread") -> None:
        """Start the child and wait for its writer's address."""
        self.log_path = tmp / "out.log"
        self.stderr_path = tmp / "stderr.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(HOST_SCRIPT), str(self.log_path), host],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=tmp,
            )
        assert self.proc.stdout is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        hello = self._read_answer()
        self.address: str = hello["address"]
        self.pid: int = hello["pid"]
        self.path = self.address.removeprefix("unix:")
        self._offset = 0
        self._tags = itertools.count()
        self.client = _connection.Connection(self.address, Options())

    def _read_answer(self, timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the writer host did not answer in time"
            if self._selector.select(remaining):
                chunk = os.read(fd, 65536)
                assert chunk, f"the writer host exited: {self.stderr()[-3000:]}"
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def command(self, command: str) -> Any:
        """Send one command line to the host and return its JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read_answer()

    def stats(self) -> dict[str, int]:
        """Return ``Funnel.stats()`` of the running writer."""
        stats = self.command("stats")
        assert stats, "Funnel.stats() got no answer from the writer"
        return dict(stats)

    def new_log_text(self) -> str:
        """Return what the sink wrote since the last call (strict UTF-8)."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        return data.decode("utf-8")

    def prove_alive(self) -> str:
        """Log a record through a normal client, wait on the barrier, find it; return new text."""
        tag = f"[fuzz-sentinel-{next(self._tags)}]"
        record = logging.LogRecord("fuzz.sentinel", logging.INFO, __file__, 1, tag, None, None)
        self.client.send_record(record)
        assert self.client.flush(DEADLINE), "the writer did not answer a flush: wedged or dead"
        text = self.new_log_text()
        assert text.count(tag) == 1, f"sentinel {tag} missing from {text[-2000:]!r}"
        return text

    def wait_for_log(self, needle: str, count: int = 1) -> str:
        """Flush until the sink holds ``count`` lines with ``needle``; return all text since.

        A peer's end of stream is handled by the writer's loop, not by the
        barrier, so what the writer reports about it can come after a flush.
        """
        text = ""
        deadline = time.monotonic() + DEADLINE
        while text.count(needle) < count:
            assert time.monotonic() < deadline, f"{needle!r} not {count}x in {text[-3000:]!r}"
            text += self.prove_alive()
        return text

    def wait_for_stats(self, key: str, value: int) -> dict[str, int]:
        """Ask for stats until ``key`` reaches ``value`` (end of stream is handled late)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            stats = self.stats()
            if stats[key] >= value or time.monotonic() > deadline:
                return stats
            self.prove_alive()

    def raw_send(self, chunks: list[bytes], *, keep_open: bool = False) -> socket.socket | None:
        """Connect a raw socket, send ``chunks``; close it unless ``keep_open``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.connect(self.path)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the writer dropped us mid-way (bad frame): expected
            pass
        if keep_open:
            return sock
        sock.close()
        return None

    def writer_peak_rss_kib(self) -> int:
        """Return the peak resident memory (VmHWM) of the process the writer runs in."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        msg = "no VmHWM"
        raise AssertionError(msg)

    def stderr(self) -> str:
        """Return what the host wrote to standard error so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="backslashreplace")

    def close(self) -> None:
        """Shut the funnel down and reap the child (killing it if it does not exit)."""
        self.client.close()
        try:
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self._read_answer(timeout=15.0)
        except (AssertionError, OSError, ValueError):
            pass
        finally:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(15.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self._selector.close()


@pytest.fixture(scope="module")
def writer_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WriterHost]:
    """One real funnel in a child process, shared by the fuzz tests of this module."""
    host = WriterHost(tmp_path_factory.mktemp("fuzz-writer"))
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def own_writer_host(tmp_path: Path) -> Iterator[WriterHost]:
    """Run a real funnel of its own, for a test that may leave its writer broken."""
    host = WriterHost(tmp_path)
    try:
        yield host
    finally:
        host.close()


def frame(fields: Any) -> bytes:
    """Return a frame of ``fields`` packed as any peer could (even invalid UTF-8)."""
    payload = msgpack.packb(fields, use_bin_type=True, unicode_errors="surrogatepass")
    return struct.pack(">I", len(payload)) + payload


def valid_record_bytes(message: str = "valid") -> bytes:
    """Return what a new connection sends for one record: its SITE, THREAD and RECORD frames."""
    record = logging.LogRecord("fuzz.valid", logging.INFO, __file__, 1, message, None, None)
    return _wire.Encoder().record(record)


def valid_frames(message: str = "valid") -> list[list[Any]]:
    """Return the arrays of ``valid_record_bytes``: a SITE, a THREAD and a RECORD."""
    frames = [list(fields) for fields in _wire.FrameReader().feed(valid_record_bytes(message))]
    assert [fields[0] for fields in frames] == [_wire.SITE, _wire.THREAD, _wire.RECORD]
    return frames


def valid_record_fields(message: str = "valid") -> list[Any]:
    """Return the fields of a well-formed RECORD frame naming site 0 and thread 0."""
    return valid_frames(message)[-1]


#: The SITE and THREAD frames that define site 0 and thread 0 on a connection.
DEFINITIONS = b"".join(frame(fields) for fields in valid_frames()[:2])


# -- strategies -------------------------------------------------------------------------

# Ints stay within 32 bits, so that the shared writer's counters stay meaningful;
# huge DROPPED counts have a test of their own, on a writer of its own.
small_ints = st.integers(min_value=-(2**31), max_value=2**31)
leaves = (
    st.none()
    | st.booleans()
    | small_ints
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4) | small_ints, children, max_size=4),
    max_leaves=12,
)
kinds = st.integers(min_value=-3, max_value=14)
# Site and thread ids: the ones a connection can define, and a few just outside.
ids = st.integers(min_value=-2, max_value=_wire.TABLE_SIZE + 1)


@st.composite
def record_with_one_wrong_field(draw: st.DrawFn) -> bytes:
    """Draw a valid RECORD frame with one field replaced, after its definitions or not."""
    fields = valid_record_fields()
    fields[draw(st.integers(min_value=0, max_value=len(fields) - 1))] = draw(values)
    return (DEFINITIONS if draw(st.booleans()) else b"") + frame(fields)


@st.composite
def record_naming_any_ids(draw: st.DrawFn) -> bytes:
    """Draw a valid RECORD frame naming site and thread ids that may never have been defined."""
    fields = valid_record_fields()
    fields[8] = draw(ids)  # site
    fields[9] = draw(ids)  # thread
    return (DEFINITIONS if draw(st.booleans()) else b"") + frame(fields)


@st.composite
def definition_with_one_wrong_field(draw: st.DrawFn) -> bytes:
    """Draw a valid SITE or THREAD frame with its id or one field replaced, or cut, or extended."""
    fields = valid_frames()[draw(st.integers(min_value=0, max_value=1))]
    change = draw(st.sampled_from(["id", "field", "shorter", "longer"]))
    if change == "id":
        fields[1] = draw(ids | values)
    elif change == "field":
        fields[draw(st.integers(min_value=2, max_value=len(fields) - 1))] = draw(values)
    elif change == "shorter":
        fields.pop()
    else:
        fields.append(draw(values))
    return frame(fields)


@st.composite
def truncated_record(draw: st.DrawFn) -> bytes:
    """Draw a valid record with its definitions cut short (a peer that died mid-send)."""
    whole = _wire.Encoder().record(
        logging.LogRecord("fuzz.cut", logging.INFO, __file__, 1, draw(st.text()), None, None)
    )
    return whole[: draw(st.integers(min_value=1, max_value=len(whole) - 1))]


pieces = st.one_of(
    st.binary(min_size=1, max_size=2000),
    st.tuples(kinds, st.lists(values, max_size=24)).map(lambda t: frame([t[0], *t[1]])),
    st.lists(values, min_size=13, max_size=13).map(lambda v: frame([_wire.RECORD, *v])),
    st.tuples(st.sampled_from([_wire.SITE, _wire.THREAD]), ids, st.lists(values, max_size=6)).map(
        lambda t: frame([t[0], t[1], *t[2]])
    ),
    record_with_one_wrong_field(),
    record_naming_any_ids(),
    definition_with_one_wrong_field(),
    values.map(frame),
    st.integers(min_value=LIMIT + 1, max_value=2**32 - 1).map(lambda n: struct.pack(">I", n)),
    truncated_record(),
    st.just(frame([_wire.RECORD, msgpack.ExtType(3, b"ext")])),
    st.just(frame([_wire.HELLO, _wire.PROTOCOL_VERSION, 2**40, "x" * 1000])),
    st.just(frame([_wire.HELLO, 1, 7, "protocol 1"])),  # refused: the rest is not read
    st.just(DEFINITIONS),
    st.just(valid_record_bytes("[fuzz-valid-in-attack]")),
)


@st.composite
def attacks(draw: st.DrawFn) -> list[bytes]:
    """Draw pieces joined into one stream, then split into chunks at arbitrary points."""
    stream = b"".join(draw(st.lists(pieces, min_size=1, max_size=4)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=4))))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _fuzz_once(host: WriterHost, chunks: list[bytes]) -> None:
    host.raw_send(chunks)
    host.prove_alive()


# -- the suite's fuzz tests ---------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chunks=attacks())
def test_writer_survives_any_bytes_on_a_raw_connection(
    writer_host: WriterHost, chunks: list[bytes]
) -> None:
    """After any bytes from a raw peer, a normal client's next record still reaches the sink."""
    _fuzz_once(writer_host, chunks)


def test_fuzzing_left_the_writer_alive_and_counting(writer_host: WriterHost) -> None:
    """After a fuzzing run of its own, the writer runs, has counted bad frames, wrote no traceback.

    The run is this test's own (derandomized, so the same attacks every time):
    it does not depend on which other test used the shared writer before it.
    """
    writer_host.prove_alive()
    before = writer_host.stats()

    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(chunks=attacks())
    def fuzz(chunks: list[bytes]) -> None:
        _fuzz_once(writer_host, chunks)

    fuzz()
    writer_host.prove_alive()
    after = writer_host.stats()
    assert after["bad_frames"] > before["bad_frames"]
    assert after["records"] > before["records"]  # the sentinels, at least
    assert writer_host.command("alive") is True
    assert "Traceback" not in writer_host.stderr()


def test_each_kind_of_bad_frame_is_counted_and_reported(writer_host: WriterHost) -> None:
    """Oversized, undecodable, non-array, mistyped, unknown-kind, NUL-holding and cut frames count."""
    writer_host.prove_alive()
    before = writer_host.stats()
    bad_record = valid_record_fields()
    bad_record[2] = "not a level"
    writer_host.raw_send([struct.pack(">I", 2**24 - 1)])  # bad 1: oversized prefix
    writer_host.raw_send([b"\x00\x00\x00\x02\xc1\xc1"])  # bad 2: not msgpack
    writer_host.raw_send([frame({"not": "an array"})])  # bad 3: not an array
    writer_host.raw_send(
        [DEFINITIONS, frame(bad_record), frame(valid_record_fields("[after-bad-record]"))]
    )
    writer_host.raw_send([frame([99, "unknown kind"])])  # bad 5
    writer_host.raw_send([b"a bare line with a NUL\x00 inside\n"])  # bad 6: not logfunnel's
    whole = frame(valid_record_fields("[never-whole]"))
    writer_host.raw_send([whole[: len(whole) // 2]])  # cut 1
    text = writer_host.wait_for_log("bytes of a cut frame")
    after = writer_host.wait_for_stats("cut_frames", before["cut_frames"] + 1)
    assert after["bad_frames"] - before["bad_frames"] == 6
    assert after["cut_frames"] - before["cut_frames"] == 1
    assert text.count("dropped the connection of process") == 4
    assert "exceeds the limit" in text
    assert "line holds a NUL byte" in text
    assert text.count("discarded a malformed record") == 1
    assert "record field levelno has type str" in text
    assert "[after-bad-record]" in text  # a bad record does not end its connection
    assert "[never-whole]" not in text


def test_bad_definitions_and_undefined_ids_are_counted_and_reported(
    writer_host: WriterHost,
) -> None:
    """A malformed SITE or THREAD frame, or a record naming an undefined id, is counted and reported.

    None of them ends the connection: a record sent after them on it lands.
    """
    writer_host.prove_alive()
    before = writer_host.stats()
    site, thread, _ = valid_frames()
    site[1] = _wire.TABLE_SIZE  # id out of range
    thread[3] = 5  # threadName an int
    undefined = valid_record_fields("[undefined-site]")
    undefined[8] = 7  # site 7: never defined on this connection
    writer_host.raw_send(
        [frame(site), frame(thread), frame(undefined), valid_record_bytes("[after-bad-definitions]")]
    )
    text = writer_host.wait_for_log("[after-bad-definitions]")
    after = writer_host.stats()
    assert after["bad_frames"] - before["bad_frames"] == 3
    assert text.count("discarded a malformed frame") == 2
    assert f"definition id {_wire.TABLE_SIZE} outside 0..{_wire.TABLE_SIZE - 1}" in text
    assert f"malformed definition frame of kind {_wire.THREAD}" in text
    assert "discarded a malformed record" in text
    assert "undefined site (7)" in text
    assert "[undefined-site]" not in text
    assert "dropped the connection" not in text


def test_oversized_frames_are_refused_without_allocating(writer_host: WriterHost) -> None:
    """Prefixes claiming up to 4 GiB are refused at once: the writer's peak memory stays put."""
    writer_host.prove_alive()
    before_rss = writer_host.writer_peak_rss_kib()
    before = writer_host.stats()
    megabyte = b"\x00" * (1024 * 1024)
    sent_total = 0
    for claimed in (LIMIT + 1, 2**31, 2**32 - 1) * 4:
        sock = writer_host.raw_send([struct.pack(">I", claimed)], keep_open=True)
        assert sock is not None
        with sock:
            try:
                for _ in range(256):  # try to push 256 MB of the claimed payload
                    sock.sendall(megabyte)
                    sent_total += len(megabyte)
            except OSError:  # the writer closed the connection: refused
                pass
    writer_host.prove_alive()
    after = writer_host.stats()
    assert after["bad_frames"] - before["bad_frames"] == 12
    # Only what the kernel buffered before the writer hung up could be sent.
    assert sent_total < 12 * 8 * 1024 * 1024
    assert writer_host.writer_peak_rss_kib() - before_rss < 32 * 1024


def test_half_sent_frames_on_open_connections_do_not_block_others(writer_host: WriterHost) -> None:
    """Peers that stop mid-frame and stay connected delay no one; the barrier still answers."""
    whole = valid_record_bytes("[stalled]")  # cut in its definitions or in its record
    stalled = [
        writer_host.raw_send([whole[:cut]], keep_open=True) for cut in (1, 3, 4, 5, len(whole) - 1)
    ]
    try:
        for _ in range(3):
            writer_host.prove_alive()
    finally:
        for sock in stalled:
            if sock is not None:
                sock.close()
    writer_host.prove_alive()


# -- writer bugs this suite found (src/logfunnel/_core/writer.py): each wedged or killed it -----


def test_peer_that_never_reads_its_flush_answer_cannot_wedge_the_writer(
    own_writer_host: WriterHost,
) -> None:
    """A peer that asks for a 3 MB FLUSH answer and never reads it must not stop other clients."""
    own_writer_host.prove_alive()
    request = "x" * (3 * 1024 * 1024)
    greedy = own_writer_host.raw_send([frame([_wire.FLUSH, request])], keep_open=True)
    assert greedy is not None
    try:
        # Wait until the writer has begun answering: then it is inside that answer.
        with selectors.DefaultSelector() as selector:
            selector.register(greedy, selectors.EVENT_READ)
            assert selector.select(DEADLINE), "the writer never began its FLUSH answer"
        record = logging.LogRecord("fuzz.sentinel", logging.INFO, __file__, 1, "[wedge]", None, None)
        own_writer_host.client.send_record(record)
        # A wedge would last until the greedy peer goes: any bound tells them apart.
        assert own_writer_host.client.flush(DEADLINE), "the writer is wedged on the greedy peer"
    finally:
        greedy.close()  # unwedges the writer (EPIPE), so the host shuts down cleanly


def test_huge_dropped_counts_cannot_crash_the_writer(own_writer_host: WriterHost) -> None:
    """Two DROPPED frames with a count of 2**64 - 1 must leave the writer running."""
    own_writer_host.raw_send([frame([_wire.DROPPED, 2**64 - 1])] * 2)
    own_writer_host.prove_alive()
    assert own_writer_host.stats()
    assert own_writer_host.command("alive") is True
    own_writer_host.prove_alive()


def test_a_peer_dropped_during_a_barrier_is_counted_once(own_writer_host: WriterHost) -> None:
    """A bad peer dropped by another peer's flush barrier counts one bad frame and no cut one."""
    host = own_writer_host
    host.prove_alive()
    before = host.stats()
    # Hold the writer inside a blocking FLUSH answer, so that a FLUSH from X and a bad frame
    # from Y arrive together and come back from one select(), X's first.
    greedy = host.raw_send([frame([_wire.FLUSH, "x" * (3 * 1024 * 1024)])], keep_open=True)
    assert greedy is not None
    with selectors.DefaultSelector() as selector:
        selector.register(greedy, selectors.EVENT_READ)
        assert selector.select(DEADLINE), "the writer never began the greedy FLUSH answer"
    flusher = host.raw_send([frame([_wire.FLUSH, 1])], keep_open=True)
    bad = host.raw_send([b"\x00\x00\x00\x01\xc1"], keep_open=True)
    assert flusher is not None
    assert bad is not None
    greedy.close()  # the writer's answer fails with EPIPE: it goes back to select()
    with selectors.DefaultSelector() as selector:
        selector.register(flusher, selectors.EVENT_READ)
        assert selector.select(DEADLINE), "the writer never answered X's FLUSH"
    flusher.close()
    bad.close()
    deadline = time.monotonic() + DEADLINE
    while host.stats()["connections_open"] > 1 and time.monotonic() < deadline:
        host.prove_alive()
    for _ in range(3):  # every end of stream is handled by now: three more loop turns
        host.prove_alive()
    stats = host.stats()
    assert stats["bad_frames"] - before["bad_frames"] == 1
    assert stats["cut_frames"] - before["cut_frames"] == 0
    assert stats["connections_open"] == 1  # the normal client's own connection


# -- soak ---------------------------------------------------------------------------------


@pytest.mark.soak
@pytest.mark.timeout(600)
@settings(
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chunks=attacks())
def test_soak_writer_survives_any_bytes_on_a_raw_connection(
    writer_host: WriterHost, chunks: list[bytes]
) -> None:
    """The suite's raw-connection fuzz, with 5,000 examples."""
    _fuzz_once(writer_host, chunks)


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris is not installed"
)
def test_soak_atheris_fuzz_of_the_decoder() -> None:
    """Run the atheris (libFuzzer) target of FrameReader, decode_record and the formatters."""
    proc = subprocess.run(
        [sys.executable, str(ATHERIS_SCRIPT), "-max_total_time=60", "-rss_limit_mb=2048"],
        capture_output=True,
        timeout=200,
        check=False,
    )
    output = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 0, output[-5000:]
    assert "Done" in output, output[-5000:]
