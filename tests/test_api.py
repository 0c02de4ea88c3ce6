"""The public API: its closed surface, configuration errors, and the funnel's life cycle."""

from __future__ import annotations

import logging
import os
import socket
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import logfunnel
from logfunnel._core import wire as _wire

pytestmark = pytest.mark.usefixtures("no_funnel_env")


@pytest.fixture(autouse=True)
def _shut_down_funnels() -> Iterator[None]:
    """Shut down any funnel a test left running, and restore the root logger."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    funnel = logfunnel.current()
    if funnel is not None:
        funnel.shutdown()
    root.setLevel(level)
    root.handlers[:] = handlers


def test_public_api_is_small_closed_and_sorted() -> None:
    """The package exports exactly the documented names, sorted, and nothing else public."""
    expected = [
        "Funnel",
        "FunnelHandler",
        "JsonFormatter",
        "LineFormatter",
        "Stats",
        "carry",
        "context",
        "current",
        "install",
        "worker_init",
    ]
    assert logfunnel.__all__ == expected
    public = {
        name
        for name in dir(logfunnel)
        if not name.startswith("_") and not isinstance(getattr(logfunnel, name), types.ModuleType)
    }
    assert public == set(expected)


def test_install_twice_raises_with_advice(tmp_path: Path) -> None:
    """A second install() in the same process raises RuntimeError naming the fix."""
    funnel = logfunnel.install(file=tmp_path / "a.log")
    with pytest.raises(RuntimeError, match=r"already installed.*shutdown"):
        logfunnel.install(file=tmp_path / "b.log")
    funnel.shutdown()
    logfunnel.install(file=tmp_path / "b.log").shutdown()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "LOUD"}, r"level='LOUD' is not a logging level: use DEBUG"),
        ({"file": "x.log", "max_bytes": -1}, r"max_bytes=-1: give a size in bytes"),
        ({"file": "x.log", "backups": 3}, r"backups=3 needs max_bytes"),
        ({"max_bytes": 100}, r"max_bytes needs file="),
        ({"host": "cloud"}, r"host='cloud': use 'thread'"),
        ({"host": "process"}, r"host='process' .* pass file=, json=, console= or config="),
        ({"file": "/nonexistent-dir/x.log"}, r"directory '/nonexistent-dir' does not exist"),
        ({"on_full": "explode"}, r"on_full='explode': use 'block'"),
        ({"frame_limit": 10}, r"frame_limit=10: give a whole number of bytes >= 4096"),
        ({"full_timeout": -1}, r"full_timeout=-1: give a number of seconds"),
        ({"config": ["not", "a", "dict"]}, r"config must be a logging.config.dictConfig dict"),
        ({"config": {"version": 1}, "file": "x.log"}, r"either config= or file="),
        ({"fmt": "%(message"}, r"fmt='%\(message' is not a valid %-style format"),
    ],
)
def test_bad_configuration_fails_at_install(kwargs: dict[str, object], message: str) -> None:
    """Each wrong option fails at install() with a message saying what to change."""
    with pytest.raises(ValueError, match=message):
        logfunnel.install(**kwargs)  # type: ignore[arg-type]
    assert logfunnel.current() is None
    assert "LOGFUNNEL_ADDRESS" not in os.environ


def test_process_host_rejects_unsendable_config() -> None:
    """A dictConfig holding a callable cannot reach a writer process: the error says why."""
    config = {"version": 1, "handlers": {"h": {"()": logging.StreamHandler}}}
    with pytest.raises(ValueError, match=r"plain values .* import path"):
        logfunnel.install(config=config, host="process")


def test_process_host_reports_a_config_the_writer_cannot_build() -> None:
    """A dictConfig the writer process fails to apply is reported by install()."""
    config = {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}
    with pytest.raises(ValueError, match="writer process could not build its sinks"):
        logfunnel.install(config=config, host="process")
    assert logfunnel.current() is None


@pytest.mark.parametrize("host", ["thread", "process"])
def test_context_manager_writes_and_undoes_install(tmp_path: Path, host: str) -> None:
    """Leaving the with block drains to the file, unpublishes the address and restores handlers."""
    root = logging.getLogger()
    before = list(root.handlers)
    log = tmp_path / "out.log"
    with logfunnel.install(file=log, level="INFO", fmt="%(message)s", host=host) as funnel:  # type: ignore[arg-type]
        assert os.environ["LOGFUNNEL_ADDRESS"] == funnel.address
        logging.getLogger("api").info("inside")
        assert funnel.flush() is True
        # The installer's own records: no connection in a thread host (they go
        # straight to its handlers), its own one to a writer process.
        own = 0 if host == "thread" else 1
        assert funnel.stats().connections_open == own
        with _peer(funnel.address) as peer:
            peer.sendall(_record_frames("from a peer"))
            _flush_through(peer)  # the writer has read this peer: it is counted
            assert funnel.stats().connections_open == own + 1
        _wait_for_connections(funnel, own)  # its end of stream is seen by the loop, later
    assert log.read_text().splitlines() == ["inside", "from a peer"]
    assert "LOGFUNNEL_ADDRESS" not in os.environ
    assert root.handlers == before
    assert logfunnel.current() is None
    assert funnel.shutdown() is True  # idempotent
    assert funnel.flush() is False


def _peer(address: str) -> socket.socket:
    """Connect to the writer as a process would, HELLO sent."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect(address.removeprefix("unix:"))
    sock.sendall(_wire.Encoder().frame(_wire.hello_fields(os.getpid(), "api-peer")))
    return sock


def _record_frames(message: str) -> bytes:
    record = logging.LogRecord("api.peer", logging.INFO, __file__, 1, message, None, None)
    return _wire.Encoder().record(record)


def _flush_through(sock: socket.socket) -> None:
    """Send a FLUSH barrier on ``sock`` and wait for its answer."""
    sock.sendall(_wire.Encoder().frame([_wire.FLUSH, 7]))
    reader = _wire.FrameReader()
    while True:
        data = sock.recv(65536)
        assert data, "the writer closed the peer's connection"
        if [_wire.FLUSHED, 7] in reader.feed(data):
            return


def _wait_for_connections(funnel: logfunnel.Funnel, expected: int) -> None:
    """Ask the writer until it counts ``expected`` open connections (bounded)."""
    deadline = time.monotonic() + 20.0
    while (count := funnel.stats().connections_open) != expected:
        assert time.monotonic() < deadline, f"{count} connections open, expected {expected}"
        assert funnel.flush() is True  # one more turn of the writer's loop


def test_private_socket_directory_is_owner_only(tmp_path: Path) -> None:
    """The Unix socket lives in a 0700 directory that is removed at shutdown."""
    funnel = logfunnel.install(file=tmp_path / "out.log")
    path = funnel.address.removeprefix("unix:")
    directory = os.path.dirname(path)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    funnel.shutdown()
    assert not os.path.exists(directory)


def test_adopting_leaves_the_programs_handlers_in_place(tmp_path: Path) -> None:
    """With no sink options, install() changes nothing in this process's logging."""
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "own.log")
    root.addHandler(handler)
    try:
        before = list(root.handlers)
        funnel = logfunnel.install()
        assert root.handlers == before
        assert funnel.host == "thread"
        funnel.shutdown()
    finally:
        root.removeHandler(handler)
        handler.close()


def test_funnel_handler_without_a_funnel_writes_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A FunnelHandler in a process attached to no funnel falls back to standard error."""
    logger = logging.getLogger("api.orphan")
    logger.propagate = False
    handler = logfunnel.FunnelHandler()
    logger.addHandler(handler)
    try:
        logger.warning("nobody listens")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert "nobody listens" in capsys.readouterr().err


def test_repr_says_where_the_writer_is(tmp_path: Path) -> None:
    """Funnel and FunnelHandler reprs name the address and state."""
    funnel = logfunnel.install(file=tmp_path / "out.log")
    assert funnel.address in repr(funnel)
    assert "running" in repr(funnel)
    funnel.shutdown()
    assert "closed" in repr(funnel)


def test_own_threads_records_are_on_disk_when_the_call_returns(tmp_path: Path) -> None:
    """In a thread host the program's own records are flushed at once; only the writer thread batches."""
    path = tmp_path / "own.log"
    funnel = logfunnel.install(file=path, fmt="%(message)s", host="thread")
    logging.getLogger("own").warning("mine, written through")
    assert path.read_text() == "mine, written through\n"  # no flush(), no shutdown()
    funnel.shutdown()


def test_stats_is_typed_and_counts_processes_not_connections(tmp_path: Path) -> None:
    """``stats()`` returns ``Stats``; a process that reconnects counts once in ``processes``."""
    funnel = logfunnel.install(file=tmp_path / "out.log", fmt="%(message)s")
    with _peer(funnel.address) as first, _peer(funnel.address) as second:  # one pid, two streams
        first.sendall(_record_frames("one"))
        second.sendall(_record_frames("two"))
        _flush_through(first)
        _flush_through(second)
        stats = funnel.stats()
    assert isinstance(stats, logfunnel.Stats)
    assert stats.records == 2
    assert stats.connections == 2
    assert stats.processes == 1
    funnel.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        funnel.stats()
