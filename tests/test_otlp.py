"""OTLP/HTTP export against a real HTTP receiver that decodes the protobuf with opentelemetry-proto.

No collector binary can be installed here (docs/export.md says so): the receiver
is an ``http.server`` in the test, answering as a collector does (200, or 503
with ``Retry-After`` to exercise the retries, or 400 to refuse for good).
"""

from __future__ import annotations

import collections
import gzip
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_python

logs_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.logs.v1.logs_service_pb2",
    reason="opentelemetry-proto is a test extra (pip install -e '.[test]')",
)

PROGRAM = r"""
import logging, multiprocessing, sys
import logfunnel

def child(tag):
    log = logging.getLogger("otlp.child")
    for i in range(int(sys.argv[3])):
        log.warning("%s %d", tag, i, extra={"shard": 7, "tag": tag})

if __name__ == "__main__":
    funnel = logfunnel.install(otlp=sys.argv[1], file=sys.argv[2], level="INFO",
                               fmt="%(name)s|%(message)s", host=sys.argv[4])
    log = logging.getLogger("otlp.main")
    for i in range(int(sys.argv[3])):
        log.info("main %d", i)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("it failed")
    for method in ("fork", "spawn"):
        p = multiprocessing.get_context(method).Process(target=child, args=(method,))
        p.start(); p.join()
    assert funnel.flush(timeout=30)
    if sys.argv[5:] == ["refused"]:  # wait (bounded) until the collector refused a batch
        import time
        deadline = time.monotonic() + 30
        while funnel.stats().exported_dropped == 0 and time.monotonic() < deadline:
            funnel.flush(timeout=1)
        log.info("after the refusal")  # its emit says the refusal, in the writer's thread
        funnel.flush(timeout=30)
    print("dropped", funnel.stats().exported_dropped, flush=True)
    funnel.shutdown()
"""


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint that keeps every request it accepted, decoded."""

    def __init__(self, port: int = 0, *, answers: list[int] | None = None) -> None:
        """Listen on loopback; ``answers`` are the statuses of the first requests (then 200)."""
        super().__init__(("127.0.0.1", port), _Handler)
        self.answers = list(answers or [])
        self.requests: list[Any] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Return the endpoint's URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def records(self) -> list[Any]:
        """Return every LogRecord accepted, in order."""
        with self.lock:
            return [
                record
                for request in self.requests
                for resource in request.resource_logs
                for scope in resource.scope_logs
                for record in scope.log_records
            ]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = self.server.answers.pop(0) if self.server.answers else 200
            self.server.statuses.append(status)
            if status == 200:
                assert self.path == "/v1/logs"
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = logs_service_pb2.ExportLogsServiceRequest()
                request.ParseFromString(gzip.decompress(body))
                self.server.requests.append(request)
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        """Keep the test's output clean."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(answers=[503, 503])  # the first two batches are retried
    yield server
    server.stop()


def _attributes(record: Any) -> dict[str, Any]:
    out = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


@pytest.mark.parametrize("host", ["thread", "process"])
def test_every_record_arrives_once_with_severity_attributes_and_resource(
    receiver: Receiver, tmp_path: Path, host: str
) -> None:
    """Installer, fork and spawn children: each record once, retried past two 503s."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    log = tmp_path / "all.log"
    proc = run_python(str(script), receiver.url, str(log), "40", host, timeout=120)
    assert "dropped 0" in proc.stdout
    records = receiver.records()
    bodies = collections.Counter(r.body.string_value for r in records)
    expected = {f"main {i}" for i in range(40)} | {f"{m} {i}" for m in ("fork", "spawn") for i in range(40)}
    assert set(bodies) - {"it failed"} == expected
    assert all(n == 1 for n in bodies.values()), bodies.most_common(3)
    assert receiver.statuses[:2] == [503, 503]
    by_body = {r.body.string_value: r for r in records}
    main, failed, child = by_body["main 0"], by_body["it failed"], by_body["spawn 3"]
    assert (main.severity_number, main.severity_text) == (9, "INFO")
    assert (child.severity_number, child.severity_text) == (13, "WARNING")
    assert failed.severity_number == 17
    assert "ZeroDivisionError" in _attributes(failed)["exception.stacktrace"]
    attrs = _attributes(child)
    assert attrs["logger.name"] == "otlp.child"
    assert attrs["shard"] == 7
    assert attrs["tag"] == "spawn"
    assert attrs["process.pid"] != _attributes(main)["process.pid"]
    assert attrs["code.function"] == "child"
    assert main.time_unix_nano > 1_600_000_000 * 10**9
    resource = {kv.key: kv.value.string_value for kv in receiver.requests[0].resource_logs[0].resource.attributes}
    assert resource["service.name"] == "program.py"
    assert resource["host.name"] == socket.gethostname()
    # The file sink beside it has every record too.
    assert len([line for line in log.read_text().splitlines() if "|main " in line]) == 40


def test_a_collector_down_at_start_gets_everything_once_it_is_up(tmp_path: Path) -> None:
    """Nothing listens at first; the sink retries with back-off and delivers when it comes up."""
    with socket.socket() as probe:  # a free port, then nothing on it until the receiver
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "program.py"
    script.write_text(PROGRAM.replace("assert funnel.flush(timeout=30)",
                                      "assert funnel.flush(timeout=30); sys.stdin.readline()"))  # fmt: skip
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from conftest import child_env  # noqa: PLC0415

    proc = subprocess.Popen(
        [sys.executable, str(script), f"http://127.0.0.1:{port}", str(tmp_path / "all.log"),
         "30", "thread"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        # Every record is in the file while the collector is down: exports never hold it back.
        assert proc.stdin is not None
        receiver = Receiver(port)
        try:
            proc.stdin.write("\n")
            proc.stdin.flush()
            out = proc.communicate(timeout=60)[0]
        finally:
            receiver.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "dropped 0" in out
    bodies = collections.Counter(r.body.string_value for r in receiver.records())
    assert len(bodies) == 91  # 30 + 30 + 30 and the exception
    assert all(n == 1 for n in bodies.values())
    assert len((tmp_path / "all.log").read_text().splitlines()) >= 91


def test_a_collector_that_refuses_costs_the_batch_counted_and_reported(tmp_path: Path) -> None:
    """A 400 is for good: the batch is dropped, counted in Stats and said once."""
    server = Receiver(answers=[400] * 50)
    try:
        script = tmp_path / "program.py"
        script.write_text(PROGRAM)
        log = str(tmp_path / "all.log")
        proc = run_python(str(script), server.url, log, "10", "thread", "refused")
    finally:
        server.stop()
    dropped = int(proc.stdout.split("dropped ", 1)[1].split()[0])
    assert dropped > 0
    assert server.records() == []
    # Said once, by the writer's watch on the sink, not once per record.
    assert proc.stderr.count("refused by the collector") == 1, proc.stderr
