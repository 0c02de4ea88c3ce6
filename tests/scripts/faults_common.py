"""Shared pieces of the fault scripts: the record format, test sinks, and waiting on conditions.

Every record the fault scripts log has the message ``rec TAG SEQ pad=N XXX...``
(``N`` times ``x``): a line whose padding does not have exactly ``N`` characters
was torn or merged.  ``TAG`` names the logging process (or thread), ``SEQ``
counts its records from 0.  Each process writes the ``SEQ`` of its last logging
call that *returned* to shared memory right after the call returns, so a test
knows exactly which records must be in the sink.

The handler classes here are importable by a writer process too (the scripts
put this directory on ``PYTHONPATH`` and name them in a ``dictConfig``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

FORMAT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"
#: The longest a ``GateHandler`` holds one record at its closed gate (seconds).
GATE_WAIT = 60.0
REC = re.compile(r"rec (\S+) (\d+) pad=(\d+) (x*)\Z")


def rec(log: logging.Logger, tag: str, seq: int, pad: int = 0) -> None:
    """Log one numbered record with ``pad`` characters of padding."""
    log.info("rec %s %d pad=%d %s", tag, seq, pad, "x" * pad)


def log_timed(log: logging.Logger, tag: str, records: int, pad: int) -> float:
    """Log ``records`` records as fast as possible; return the longest call in seconds."""
    longest = 0.0
    for seq in range(records):
        start = time.perf_counter()
        rec(log, tag, seq, pad)
        longest = max(longest, time.perf_counter() - start)
    return longest


def finish(
    funnel: Any, root: logging.Logger, handlers: list[logging.Handler], timeout: float
) -> tuple[bool, dict[str, int], bool]:
    """Flush and shut the funnel down, then detach and close ``handlers``.

    Returns (flushed, the writer's stats, drained).
    """
    flushed = funnel.flush(timeout)
    stats = dataclasses.asdict(funnel.stats())
    drained = funnel.shutdown()
    for handler in handlers:
        root.removeHandler(handler)
    for handler in handlers:
        handler.close()
    return flushed, stats, drained


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` with a deadline, checking often; raise if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.0005)


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Return VmRSS and VmHWM of a process in KiB (from /proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def proc_state(pid: int) -> str:
    """Return the one-letter scheduler state of a process (R, S, D, Z, ...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0]


class GateHandler(logging.Handler):
    """A sink that blocks every record while its gate is closed (a stuck disk, a hung server).

    ``entered`` is set when a record first waits at the closed gate, ``left`` when
    a wait ends; ``timeouts`` counts the waits that gave up after ``GATE_WAIT``
    seconds with the gate still closed (a scenario that saw one did not keep its
    sink stuck as long as it meant to).
    """

    def __init__(self) -> None:
        """Start with the gate open."""
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.left = threading.Event()
        self.timeouts = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Wait for the gate (at most a minute, so a broken test cannot hang forever)."""
        del record  # every record waits alike
        if not self.gate.is_set():
            self.entered.set()
            if not self.gate.wait(GATE_WAIT):
                self.timeouts += 1
            self.left.set()


class StuckHandler(logging.Handler):
    """A sink that hangs for ``seconds`` on a record whose message starts with ``stuck``.

    It creates the file ``entered`` first, so a test can wait for the hang to
    begin, and the file ``left`` when the hang is over, so a test can tell
    whether something happened while it lasted.
    """

    def __init__(self, entered: str, seconds: float, left: str = "") -> None:
        """Remember where to say that the hang began and ended, and how long it lasts."""
        super().__init__()
        self.entered = entered
        self.left = left
        self.seconds = seconds

    def emit(self, record: logging.LogRecord) -> None:
        """Hang on ``stuck`` records, like a write to a dead NFS server."""
        if record.getMessage().startswith("stuck"):
            with open(self.entered, "w", encoding="utf-8"):
                pass
            time.sleep(self.seconds)  # the hang itself, not a wait for a condition
            if self.left:
                with open(self.left, "w", encoding="utf-8"):
                    pass


class SlowFileHandler(logging.FileHandler):
    """A file sink that sleeps ``delay`` seconds every ``every`` records and notes its memory.

    When closed it writes ``{"early": {...}, "samples": [...], "end": {...}}`` (KiB,
    from /proc/self/status) to ``report``: the memory of the process it runs in.
    """

    def __init__(self, filename: str, report: str, delay: float, every: int) -> None:
        """Open ``filename``; sample memory every 10,000 records."""
        super().__init__(filename, encoding="utf-8")
        self.setFormatter(logging.Formatter(FORMAT))
        self.report = report
        self.pause = delay
        self.every = every
        self.count = 0
        self.samples: list[dict[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, and now and then stall like a slow disk."""
        super().emit(record)
        self.count += 1
        if self.count % self.every == 0:
            time.sleep(self.pause)
        if self.count % 10_000 == 1:
            self.samples.append({"records": self.count, **proc_status()})

    def close(self) -> None:
        """Close the file and write the memory report once."""
        if self.report:
            with open(self.report, "w", encoding="utf-8") as out:
                json.dump({"samples": self.samples, "end": proc_status()}, out)
            self.report = ""
        super().close()


class RaisingHandler(logging.Handler):
    """A sink whose ``emit`` always raises, as a broken exporter would."""

    def emit(self, record: logging.LogRecord) -> None:
        """Raise instead of writing."""
        raise RuntimeError(f"the sink broke ({record.name})")


class OddRaisingFilter(logging.Filter):
    """A filter that raises for records of another process whose sequence number is odd.

    Records of the process it lives in pass: a filter on a logger is inherited
    by forked children, where it would raise into the logging call itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Raise on odd ``SEQ`` from another process, pass the rest."""
        match = REC.match(record.getMessage())
        if match and int(match.group(2)) % 2 and record.process != os.getpid():
            raise ValueError("the filter broke")
        return True


def scripts_on_pythonpath() -> None:
    """Make the writer process able to import this module by name."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def emit_report(report: dict[str, Any]) -> None:
    """Print the JSON report a test reads (last line of stdout)."""
    print(json.dumps(report), flush=True)
