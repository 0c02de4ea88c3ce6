"""The syslog sink on real sockets, against a collector written here (no daemon needed).

The daemons themselves (rsyslog, syslog-ng) are in tests/test_syslog_daemons.py;
this checks install()'s wiring under both hosts, the argument checks, and the
failure behaviour: a collector down at start, gone mid-run or back again never
holds back the file sink, and what the sink dropped is counted and reported once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import pytest

import logfunnel
from conftest import run_python
from logfunnel.sinks.syslog import SyslogSink, parse_url
from syslogd import Collector

_DEADLINE = 30.0


def test_parse_url_and_install_checks(tmp_path: Path, no_funnel_env: None) -> None:
    assert parse_url("tcp://127.0.0.1:5514") == ("tcp", "127.0.0.1", 5514)
    assert parse_url("udp://[::1]:514") == ("udp", "::1", 514)
    assert parse_url("tls://logs.example") == ("tls", "logs.example", 6514)
    for bad in ("http://h:1", "tcp://", "tcp://h:notaport", "tcp://h:1/path", "h:514"):
        with pytest.raises(ValueError, match="give tcp://HOST:PORT"):
            parse_url(bad)
    log = str(tmp_path / "a.log")
    with pytest.raises(ValueError, match="syslog_facility"):
        logfunnel.install(file=log, syslog="tcp://127.0.0.1:1", syslog_facility="nope")
    with pytest.raises(ValueError, match="give syslog=URL too"):
        logfunnel.install(file=log, syslog_facility="local0")
    with pytest.raises(ValueError, match="TLS collector"):
        logfunnel.install(file=log, syslog="tcp://127.0.0.1:1", syslog_ca=log)
    with pytest.raises(ValueError, match="not a PEM file of CA certificates"):
        logfunnel.install(file=log, syslog="tls://127.0.0.1:1", syslog_ca=__file__)
    with pytest.raises(ValueError, match="config= or syslog="):
        logfunnel.install(config={"version": 1}, syslog="tcp://127.0.0.1:1")
    assert logfunnel.current() is None


@pytest.mark.parametrize("host", ["thread", "process"])
def test_install_exports_every_record_once(
    tmp_path: Path, host: str, no_funnel_env: None
) -> None:
    """Records of this process go to both the file and the collector, the collector's once."""
    collector = Collector()
    log = tmp_path / "app.log"
    funnel = logfunnel.install(
        file=str(log), syslog=collector.url, syslog_app_name="app", host=host  # type: ignore[arg-type]
    )
    try:
        for i in range(200):
            logging.getLogger("t.export").warning("rec %d\nsecond line ü", i, extra={"i": i})
        assert funnel.flush()
        texts = collector.wait_for(200)
    finally:
        funnel.shutdown()
        collector.close()
    ours = [t for t in texts if " t.export " in t]
    assert len(ours) == 200
    assert [int(t.split('i="')[1].split('"')[0]) for t in ours] == list(range(200))
    assert all(t.endswith("second line ü") for t in ours)
    assert log.read_text(encoding="utf-8").count("rec ") == 200


def test_collector_down_at_start_never_holds_back_the_file(
    tmp_path: Path, no_funnel_env: None
) -> None:
    """Nothing listens: the file gets every record at once, the sink drops and counts."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nothing listens on: connections are refused
    log = tmp_path / "app.log"
    funnel = logfunnel.install(
        file=str(log), syslog=f"tcp://127.0.0.1:{port}", level="INFO", host="thread"
    )
    sink = next(h for h in funnel._sinks if isinstance(h, SyslogSink))
    sink.queue_size = 100  # so the test fills it quickly
    started = time.monotonic()
    try:
        for i in range(5000):
            logging.getLogger("t.down").info("rec %d", i)
        assert funnel.flush()
        elapsed = time.monotonic() - started
        stats = funnel.stats()
    finally:
        funnel.shutdown(timeout=10)
    assert log.read_text(encoding="utf-8").count("rec ") == 5000
    assert elapsed < 10, f"5000 records took {elapsed:.1f} s with the collector down"
    assert sink.exported_dropped >= 4900
    assert stats.exported_dropped >= 4900
    assert stats.unwritten >= 4900


def test_collector_dies_and_comes_back_drops_reported_once(
    tmp_path: Path, no_funnel_env: None
) -> None:
    """Killed mid-run, restarted on the same port: the file has all, one report of the drops."""
    collector = Collector()
    port = collector.port
    log = tmp_path / "app.log"
    funnel = logfunnel.install(
        file=str(log), syslog=collector.url, level="INFO", host="thread"
    )
    sink = next(h for h in funnel._sinks if isinstance(h, SyslogSink))
    events = logging.getLogger("t.phase")
    back: Collector | None = None
    try:
        for i in range(100):
            events.info("before %d", i)
        assert funnel.flush()
        collector.wait_for(100)
        collector.close()
        # Until the sender has seen the collector go, it may still write records
        # into the dead connection, making room in the queue: drops begun before
        # that would end as soon as they began (the queue takes records again: a
        # first episode, reported) and begin again (a second). So first the
        # sender sees the outage, then the queue is made small enough to fill.
        deadline = time.monotonic() + _DEADLINE
        i = 0
        while sink.down is None:
            assert time.monotonic() < deadline, "the sink never noticed the collector died"
            events.info("during %d", i)
            i += 1
            if i % 100 == 0:
                assert funnel.flush()
        sink.queue_size = 50  # so the outage fills it quickly
        while sink.exported_dropped == 0:
            assert time.monotonic() < deadline, "the sink never noticed the collector died"
            events.info("during %d", i)
            i += 1
            if i % 100 == 0:
                assert funnel.flush()
        during = i
        assert funnel.flush()
        dropped_while_down = sink.exported_dropped
        back = Collector(port)
        for j in range(100):
            events.info("after %d", j)
            if j % 10 == 0:
                assert funnel.flush()
        # The sender reconnects after its back-off; what was queued goes first.
        deadline = time.monotonic() + _DEADLINE
        while not any("after 99" in t for t in back.texts()):
            assert time.monotonic() < deadline, f"{len(back.texts())} messages after the restart"
            events.info("after %d", 99)
            time.sleep(0.05)  # letting the sender's back-off run out; bounded by the deadline
        assert funnel.flush()
        stats = funnel.stats()
    finally:
        funnel.shutdown(timeout=10)
        if back is not None:
            back.close()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert sum(" before " in line for line in lines) == 100
    assert sum(" during " in line for line in lines) == during
    assert sum(" after " in line for line in lines) >= 100
    reports = [line for line in lines if "writes again: resumed after" in line]
    assert len(reports) == 1, reports
    assert f"SyslogSink tcp://127.0.0.1:{port}" in reports[0]
    assert stats.exported_dropped >= dropped_while_down > 0


def test_process_host_collector_down_counts_drops_in_stats(
    tmp_path: Path, no_funnel_env: None
) -> None:
    """host="process": the sink lives in the writer process; its drops reach ``Stats``."""
    port = _refused_port()
    log = tmp_path / "app.log"
    funnel = logfunnel.install(
        file=str(log), syslog=f"tcp://127.0.0.1:{port}", level="INFO", host="process"
    )
    count = 15_000  # more than the queue holds (10,000 messages)
    started = time.monotonic()
    try:
        for i in range(count):
            logging.getLogger("t.down").info("rec %d", i)
        assert funnel.flush(timeout=60)
        elapsed = time.monotonic() - started
        stats = funnel.stats()
        closing = time.monotonic()
    finally:
        assert funnel.shutdown(timeout=20)
    shutdown_took = time.monotonic() - closing
    assert log.read_text(encoding="utf-8").count(" rec ") == count
    assert elapsed < 30, f"{count} records took {elapsed:.1f} s with the collector down"
    assert stats.exported_dropped >= count - 10_000
    # The queue's drain at shutdown is bounded (drain_timeout, 2 s) with nobody listening.
    assert shutdown_took < 10


def test_collector_that_never_reads_never_slows_the_file(
    tmp_path: Path, no_funnel_env: None
) -> None:
    """A collector that accepts and stops reading: sends stall, the queue fills, the file doesn't."""
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen()
    port = stuck.getsockname()[1]
    log = tmp_path / "app.log"
    funnel = logfunnel.install(
        file=str(log), syslog=f"tcp://127.0.0.1:{port}", level="INFO", host="thread"
    )
    sink = next(h for h in funnel._sinks if isinstance(h, SyslogSink))
    sink.queue_size = 500
    big = "x" * 2000  # fills the socket buffers quickly
    try:
        started = time.monotonic()
        for i in range(20_000):
            logging.getLogger("t.stuck").info("rec %d %s", i, big)
        assert funnel.flush(timeout=60)
        elapsed = time.monotonic() - started
        dropped = sink.exported_dropped
    finally:
        funnel.shutdown(timeout=20)
        stuck.close()
    assert log.read_text(encoding="utf-8").count(" rec ") == 20_000
    assert elapsed < 30, f"20,000 records took {elapsed:.1f} s with a stuck collector"
    assert dropped > 10_000


def test_udp_one_datagram_per_message_cut_with_a_marker(no_funnel_env: None) -> None:
    """RFC 5426: one message a datagram; longer than 2048 octets is cut, marked, valid UTF-8."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(_DEADLINE)
    sink = SyslogSink(f"udp://127.0.0.1:{receiver.getsockname()[1]}", app_name="app")
    try:
        for msg in ("short\nsecond line ü", "ü" * 3000):
            sink.handle(logging.makeLogRecord({"msg": msg, "levelno": 30, "name": "u"}))
        first, second = receiver.recv(65536), receiver.recv(65536)
    finally:
        sink.close()
        receiver.close()
    assert first.endswith("\ufeffshort\nsecond line ü".encode())
    assert not first[:1].isdigit()  # no octet count over UDP
    assert len(second) <= 2048
    assert second.endswith(b" [logfunnel: cut to fit]")
    second.decode("utf-8")


def _refused_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()  # nothing listens there now: connections are refused
    return port


def test_run_syslog_exports_with_the_script_as_app_name(tmp_path: Path) -> None:
    """``logfunnel run --syslog URL`` exports; APP-NAME is the script's name, not logfunnel's."""
    collector = Collector()
    script = tmp_path / "job.py"
    script.write_text(
        "import logging\nlogging.getLogger('job').warning('from the job\\nline 2', "
        "extra={'k': 1})\n",
        encoding="utf-8",
    )
    log = tmp_path / "run.log"
    try:
        run_python(
            "-m", "logfunnel", "run", "--file", str(log), "--syslog", collector.url,
            "--syslog-facility", "local2", "--", str(script),
        )  # fmt: skip
        texts = collector.wait_for(1)
    finally:
        collector.close()
    job = [t for t in texts if " job " in t]
    assert len(job) == 1, texts
    assert job[0].startswith(f"<{18 * 8 + 4}>1 ")  # local2, warning
    assert " job.py " in job[0]
    assert job[0].endswith('[logfunnel@32473 k="1"] \ufefffrom the job\nline 2')
    assert "from the job" in log.read_text(encoding="utf-8")


def test_sender_keeps_up_without_waiting_per_message(no_funnel_env: None) -> None:
    """A busy queue is sent as fast as the socket takes it: the 2 ms linger is once per wake-up.

    10,000 datagrams must leave in well under the 20 s a wait per message would take.
    """
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    sink = SyslogSink(f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    try:
        record = logging.makeLogRecord({"msg": "m", "levelno": 30, "name": "u"})
        for _ in range(10_000):
            sink.handle(record)
        assert sink.exported_dropped == 0
        started = time.monotonic()
        assert sink.drain(timeout=10), f"{sink.pending()} still queued after 10 s"
        took = time.monotonic() - started
    finally:
        sink.close()
        receiver.close()
    assert sink.sent == 10_000
    assert took < 5, f"10,000 datagrams took {took:.1f} s to leave"


def test_sender_works_with_descriptors_above_fd_setsize(no_funnel_env: None) -> None:
    """A writer with over 1024 descriptors open (many peers): the sender must not use select()."""
    import resource  # noqa: PLC0415 - Unix only, like the rest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard if hard != resource.RLIM_INFINITY else 4096) < 1200:
        pytest.skip(f"RLIMIT_NOFILE {soft}/{hard}: cannot open 1,100 descriptors")
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    collector = Collector()
    sink = SyslogSink(collector.url)
    try:
        for i in range(3):
            sink.handle(logging.makeLogRecord({"msg": f"m{i}", "levelno": 30, "name": "fd"}))
            collector.wait_for(i + 1)  # each batch checks the connection first
        assert sink.down is None
    finally:
        sink.close()
        collector.close()
        for fd in held:
            os.close(fd)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
