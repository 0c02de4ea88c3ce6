"""What the syslog exporter delivers, and what it costs the file sink beside it.

Usage::

    python benchmarks/export.py              # ~2 min; rewrites its section of docs/export.md
    python benchmarks/export.py --repeats 5 --records 50000 --out /tmp/export.md

Each run installs a funnel (thread host) with a file sink, and for the
exporter rows ``syslog=`` to a real rsyslog on loopback (started as a child
with the configuration tests/syslogd.py writes; a Python octet-counting
reader stands in where rsyslog cannot be had, and the table says so).  Then
``--procs`` forked workers log ``--records`` records each (one extra field,
so every record travels as a record), and two times are taken from the first
record: when ``flush()`` returned (every record in the file: the writer's
throughput) and when the collector had written the last one (the exporter's
end-to-end throughput).  Rows: the file alone; the file with syslog over TCP,
UDP and TLS; the file with a collector that refuses connections (what the
file keeps while the exporter drops).  Each figure is the median of
``--repeats`` runs (the cases taken in turn), in records per second, and the
CPU the installing process spent per record (its writer thread and the sink's
sender thread: the cost of exporting, less sensitive than wall time to the
other work of a shared machine).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _sections

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- export:begin -->", "<!-- export:end -->"
_DEADLINE = 120.0
#: Records that never reached the collector, per run (UDP only, one hopes).
LOST: list[int] = []


def work(records: int) -> None:
    """Log ``records`` records (a forked worker)."""
    log = logging.getLogger("bench.export")
    for i in range(records):
        log.warning("record %d of the export benchmark", i, extra={"i": i})


def _lines(path: Path) -> Callable[[], int]:
    def count() -> int:
        try:
            with path.open("rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0

    return count


def run_once(
    syslog: str | None, procs: int, records: int, tmp: Path, received: Callable[[], int] | None,
    ca: str | None,
) -> tuple[float, float | None, float]:
    """Return (file records/s, collector records/s or None, installer CPU µs/record)."""
    import logfunnel  # noqa: PLC0415

    log = tmp / f"bench-{time.monotonic_ns()}.log"
    if syslog is not None and syslog.startswith("http"):  # the OTLP exporter's endpoint
        funnel = logfunnel.install(file=str(log), otlp=syslog)
    else:
        funnel = logfunnel.install(file=str(log), syslog=syslog, syslog_ca=ca)
    total = procs * records
    before = received() if received is not None else 0
    try:
        context = multiprocessing.get_context("fork")
        workers = [context.Process(target=work, args=(records,)) for _ in range(procs)]
        started, cpu = time.perf_counter(), time.process_time()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert funnel.flush(timeout=_DEADLINE)
        file_done = time.perf_counter() - started
        collector_done = None
        if received is not None:
            # Until every record came, or (UDP loses some) none came for a second.
            deadline = time.monotonic() + _DEADLINE
            got, last = received() - before, time.perf_counter()
            while got < total and time.perf_counter() - last < 1.0:
                if time.monotonic() > deadline:
                    msg = f"the collector had {got} of {total} records"
                    raise TimeoutError(msg)
                time.sleep(0.005)  # polling the collector's count; bounded by the deadline
                if received() - before > got:
                    got, last = received() - before, time.perf_counter()
            collector_done = last - started
            LOST.append(total - got)
        # The writer thread and the sink's sender are threads of this process,
        # which otherwise only waits: its CPU is what the funnel spent.
        cpu_us = (time.process_time() - cpu) / total * 1e6
    finally:
        funnel.shutdown(timeout=30)
    delivered = total - (LOST[-1] if received is not None else 0)
    rate = delivered / collector_done if collector_done else None
    return total / file_done, rate, cpu_us


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--records", type=int, default=20_000, help="records per process")
    p.add_argument("--out", default=str(ROOT / "docs" / "export.md"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    import syslogd  # noqa: PLC0415 - the tests' daemon runner

    rows: list[tuple[str, list[float], list[float], list[float]]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        found = syslogd.find_rsyslog()
        daemon = None
        if isinstance(found, syslogd.Found):
            certs = syslogd.Certs.make(tmp) if found.tls is None else None
            daemon = syslogd.Daemon("rsyslog", found, tmp / "rsyslog", certs)
            daemon.start()
            collector = "rsyslog " + _version(found.argv[0])
        else:
            collector = f"a Python reader ({found})"
        reader = syslogd.Collector()  # a Python reader: the tests' stand-in collector
        cases: list[tuple[str, str | None, Callable[[], int] | None, str | None]] = [
            ("file only", None, None, None),
        ]
        if daemon is not None:
            for transport in ("tcp", "udp", "tls"):
                if transport == "tls" and daemon.certs is None:
                    continue
                cases.append((
                    f"file + syslog {transport}://", daemon.url(transport),
                    _lines(daemon.outputs[transport]),
                    str(daemon.certs.ca) if transport == "tls" and daemon.certs else None,
                ))  # fmt: skip
        cases.append((
            "file + syslog tcp:// (Python reader)", reader.url,
            lambda: len(reader.messages), None,
        ))  # fmt: skip
        cases.append(("file + syslog, collector refusing", f"tcp://127.0.0.1:{_free_port()}",
                      None, None))  # fmt: skip
        otlp = _otlp_receiver(tmp)
        if otlp is not None:
            cases.append(("file + OTLP/HTTP (a Python receiver)", otlp[0], otlp[1], None))
        results: dict[str, tuple[list[float], list[float], list[float], list[int]]] = {
            label: ([], [], [], []) for label, *_ in cases
        }
        try:
            # Round robin: the machine's other load falls on every case alike.
            for _ in range(args.repeats):
                for label, url, received, ca in cases:
                    files, collected, cpus, lost = results[label]
                    LOST.clear()
                    f, c, cpu = run_once(url, args.procs, args.records, tmp, received, ca)
                    files.append(f)
                    cpus.append(cpu)
                    lost.extend(LOST)
                    if c is not None:
                        collected.append(c)
                    print(label, f"{f:,.0f}/s {cpu:.1f} us", file=sys.stderr)
            sent = args.repeats * args.procs * args.records
            for label, (files, collected, cpus, lost) in results.items():
                note = f" ({sum(lost):,} of {sent:,} lost)" if sum(lost) else ""
                rows.append((label + note, files, collected, cpus))
        finally:
            if daemon is not None:
                daemon.stop()
            if otlp is not None:
                otlp[2].kill()
                otlp[2].wait()
    table = [
        ("| funnel | in the file, records/s | at the collector, records/s | "
        "installer's CPU, µs/record |"),
        "|---|---|---|---|",
    ]
    for label, files, collected, cpus in rows:
        at = f"{statistics.median(collected):,.0f}" if collected else "-"
        table.append(
            f"| {label} | {statistics.median(files):,.0f} | {at} | "
            f"{statistics.median(cpus):.1f} |"
        )
    heading = (
        f"`python benchmarks/export.py`: {args.procs} forked processes x {args.records:,} "
        f"records, medians of {args.repeats} runs, thread host, collector {collector} on "
        f"loopback, Python {sys.version.split()[0]}, {os.cpu_count()} cores (a machine shared "
        f"with other work: compare rows of one run, not runs):"
    )
    section = "\n".join([BEGIN, heading, "", *table, END])
    print(section)
    _sections.write(args.out, section)
    return 0


def _otlp_receiver(tmp: Path) -> tuple[str, Callable[[], int], subprocess.Popen[str]] | None:
    """Start benchmarks/_otlp_receiver.py; None without opentelemetry-proto."""
    try:
        import opentelemetry.proto.collector.logs.v1.logs_service_pb2  # noqa: F401, PLC0415
    except ImportError:
        return None
    count = tmp / "otlp-count"
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "_otlp_receiver.py"),
                             str(count)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline())

    def received() -> int:
        try:
            return int(count.read_text() or 0)
        except (OSError, ValueError):
            return 0

    return f"http://127.0.0.1:{port}", received, proc


def _version(binary: str) -> str:
    import subprocess  # noqa: PLC0415

    try:
        first = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split("\n", 1)[0]
    except (OSError, subprocess.SubprocessError):
        return ""
    return first.split(" (")[0].split(",")[0].removeprefix("rsyslogd ").strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
