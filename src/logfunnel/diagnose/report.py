"""``logfunnel report run.jsonl -o report.html``: a picture of a run, one self-contained page.

Reads logfunnel's JSON lines (``install(json=True)``, ``run --json``) and writes
one HTML page with no network access (inline CSS, JS and SVG): a timeline per
process (records per second, warnings and errors marked, the gaps where it
went silent -- where a pool stalled), counts by logger and level, and the
longest silences.

Fields are read defensively, because the JSON schema grows (``_core/formatters``
is being extended with a version, ``host``, ``task``, ``extra``): the time from
``created`` (seconds since the epoch) or ``time`` (ISO 8601), the process from
``process`` / ``process_name`` (or the ``LogRecord`` names ``processName``),
the level from ``level`` / ``levelname`` / ``levelno``, the logger from
``logger`` / ``name``.  A line that is not a JSON object, or has no usable
time, is skipped and counted; the page says how many and where.

The reading is streaming: per process only times and levels are kept, and
silences are found as records arrive (each process's records reach the file
in the order it logged them, one connection per process).
"""

from __future__ import annotations

import argparse
import array
import dataclasses
import datetime as dt
import heapq
import html
import json
import logging
import math
import sys
from collections import Counter
from importlib import resources
from typing import IO, Any, Final

__all__ = ["Run", "main", "read_run", "render", "write_report"]

#: The longest silences listed; marks (warnings, errors) drawn per process.
_TOP_SILENCES: Final = 15
_MARKS_PER_PROCESS: Final = 400
_SILENCES_PER_PROCESS: Final = 200
#: About this many bins across the run (a "nice" width: 1, 2 or 5 times a power of ten).
_BINS: Final = 160
_MESSAGE_CHARS: Final = 160
_INVALID_EXAMPLES: Final = 10


@dataclasses.dataclass
class Process:
    """What the report keeps of one process: its records' times and levels, its silences."""

    pid: int | None
    name: str
    #: The schema's ``host`` (remote processes reach a collector from many hosts).
    host: str | None
    #: Its place in ``Run.processes``: what the longest silences name it by.
    index: int
    times: array.array[float] = dataclasses.field(default_factory=lambda: array.array("d"))
    levels: array.array[int] = dataclasses.field(default_factory=lambda: array.array("h"))
    last_time: float = -math.inf
    last_message: str = ""
    #: (start, end, message before, message after); capped at _SILENCES_PER_PROCESS.
    silences: list[tuple[float, float, str, str]] = dataclasses.field(default_factory=list)
    marks: list[tuple[float, int, str, str]] = dataclasses.field(default_factory=list)
    warnings: int = 0
    errors: int = 0

    def label(self, with_host: bool = False) -> str:
        """Name the process as the report shows it: ``SpawnPoolWorker-2 [4242]`` (``@ host``)."""
        label = f"{self.name} [{self.pid}]" if self.pid is not None else self.name
        return f"{label} @ {self.host}" if with_host and self.host else label


@dataclasses.dataclass
class Run:
    """Everything read from one JSON lines file."""

    source: str
    min_gap: float
    processes: dict[tuple[str | None, int | None, str], Process] = dataclasses.field(
        default_factory=dict
    )
    by_logger: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    by_level: Counter[str] = dataclasses.field(default_factory=Counter)
    records: int = 0
    invalid: int = 0
    invalid_lines: list[int] = dataclasses.field(default_factory=list)
    #: The longest silences of all processes, a min-heap:
    #: (length, start, end, process index, message before, message after).
    longest: list[tuple[float, float, float, int, str, str]] = dataclasses.field(
        default_factory=list
    )
    start: float = math.inf
    end: float = -math.inf
    #: The trailing silences (last record to the end of the run) were added.
    finished: bool = False


def _time_of(obj: dict[str, Any]) -> float | None:
    created = obj.get("created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created) if math.isfinite(created) else None
    text = obj.get("time") or obj.get("asctime") or obj.get("timestamp")
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10 lacks "Z"
    except ValueError:
        return None
    if when.tzinfo is None:  # no offset: logfunnel writes UTC (see JsonFormatter)
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _level_of(obj: dict[str, Any]) -> tuple[str, int]:
    name = obj.get("level", obj.get("levelname"))
    number = obj.get("levelno")
    if not isinstance(number, int) or isinstance(number, bool):
        number = None
    if not isinstance(name, str):
        name = logging.getLevelName(number) if number is not None else "UNKNOWN"
    if number is None:
        found = logging.getLevelName(name.upper())  # a number for a known name, else a str
        number = found if isinstance(found, int) else 0
    return name, number


def _text(value: Any, default: str) -> str:
    if isinstance(value, str):
        return value
    return default if value is None else str(value)


def read_run(lines: IO[str], source: str = "", min_gap: float = 1.0) -> Run:
    """Read JSON lines from ``lines``; silences are gaps of at least ``min_gap`` seconds."""
    run = Run(source=source, min_gap=min_gap)
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        when = _time_of(obj) if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or when is None:
            run.invalid += 1
            if len(run.invalid_lines) < _INVALID_EXAMPLES:
                run.invalid_lines.append(number)
            continue
        _add(run, obj, when)
    return run


def _add(run: Run, obj: dict[str, Any], when: float) -> None:
    pid = obj.get("process")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    name = _text(obj.get("process_name", obj.get("processName")), "?")
    host = obj.get("host") if isinstance(obj.get("host"), str) else None
    process = run.processes.get((host, pid, name))
    if process is None:
        process = Process(pid, name, host, len(run.processes))
        run.processes[(host, pid, name)] = process
    level, levelno = _level_of(obj)
    logger = _text(obj.get("logger", obj.get("name")), "?")
    message = _text(obj.get("message", obj.get("msg")), "")[:_MESSAGE_CHARS]
    run.records += 1
    run.start, run.end = min(run.start, when), max(run.end, when)
    run.by_level[level] += 1
    run.by_logger.setdefault(logger, Counter())[level] += 1
    process.times.append(when)
    process.levels.append(max(-32768, min(32767, levelno)))
    if levelno >= logging.WARNING:
        if levelno >= logging.ERROR:
            process.errors += 1
        else:
            process.warnings += 1
        if len(process.marks) < _MARKS_PER_PROCESS:
            process.marks.append((when, levelno, level, f"{logger}: {message}"))
    gap = when - process.last_time
    if gap >= run.min_gap and process.last_time > -math.inf:
        _silence(run, process, process.last_time, when, process.last_message, message)
    if when >= process.last_time:
        process.last_time, process.last_message = when, message


def _silence(run: Run, process: Process, start: float, end: float, before: str, after: str) -> None:
    if len(process.silences) < _SILENCES_PER_PROCESS:
        process.silences.append((start, end, before, after))
    entry = (end - start, start, end, process.index, before, after)
    if len(run.longest) < _TOP_SILENCES:
        heapq.heappush(run.longest, entry)
    elif entry > run.longest[0]:
        heapq.heapreplace(run.longest, entry)


def _nice_width(span: float) -> float:
    raw = max(span / _BINS, 0.001)
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def page_data(run: Run) -> dict[str, Any]:
    """Return what the page's script draws, as plain JSON values (times relative to the start)."""
    start = run.start if run.records else 0.0
    end = run.end if run.records else 0.0
    # A process silent from its last record to the end of the run stalled, ended or
    # was killed: that trailing silence counts too.
    for process in () if run.finished else run.processes.values():
        if end - process.last_time >= run.min_gap:
            _silence(run, process, process.last_time, end, process.last_message, "(run ended)")
    run.finished = True
    width = _nice_width(end - start)
    count = max(1, math.ceil((end - start) / width) + 1)
    processes = []
    with_host = len({p.host for p in run.processes.values()}) > 1
    labels = [p.label(with_host) for p in run.processes.values()]  # in index order
    ordered = sorted(run.processes.values(), key=lambda p: (min(p.times), labels[p.index]))
    for process in ordered:
        bins = [0] * count
        for when in process.times:
            bins[min(count - 1, int((when - start) / width))] += 1
        processes.append(
            {
                "label": labels[process.index],
                "records": len(process.times),
                "warnings": process.warnings,
                "errors": process.errors,
                "first": min(process.times) - start,
                "last": max(process.times) - start,
                "bins": bins,
                "marks": [[t - start, n, lv, m] for t, n, lv, m in process.marks],
                "silences": [[a - start, b - start] for a, b, _, _ in process.silences],
            }
        )
    levels = sorted(run.by_level, key=lambda lv: (_level_of({"level": lv})[1], lv))
    loggers = sorted(run.by_logger.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return {
        "source": run.source,
        "records": run.records,
        "invalid": run.invalid,
        "invalid_lines": run.invalid_lines,
        "start": dt.datetime.fromtimestamp(start, dt.timezone.utc).isoformat(timespec="seconds"),
        "duration": end - start,
        "bin": width,
        "min_gap": run.min_gap,
        "levels": levels,
        "by_level": dict(run.by_level),
        "loggers": [[name, dict(counts)] for name, counts in loggers],
        "processes": processes,
        "silences": [
            [length, a - start, b - start, labels[index], before, after]
            for length, a, b, index, before, after in sorted(run.longest, reverse=True)
        ],
    }


def render(run: Run) -> str:
    """Return the report page for ``run``: one HTML document with nothing to fetch."""
    template = resources.files(__package__).joinpath("report.html").read_text("utf-8")
    # JSON inside <script>: "</" would end the element, and U+2028/9 end a JS line.
    data = json.dumps(page_data(run), ensure_ascii=True, allow_nan=False)
    data = data.replace("</", "<\\/").replace("<!--", "<\\!--")
    title = html.escape(f"logfunnel report: {run.source or 'run'}")
    return template.replace("{{TITLE}}", title).replace("{{DATA}}", data)


def write_report(source: str, output: str, min_gap: float = 1.0) -> Run:
    """Read ``source`` (``-``: standard input) and write its report to ``output``."""
    if source == "-":
        run = read_run(sys.stdin, "<stdin>", min_gap)
    else:
        with open(source, encoding="utf-8", errors="replace") as lines:
            run = read_run(lines, source, min_gap)
    page = render(run)
    with open(output, "w", encoding="utf-8") as out:
        out.write(page)
    return run


def main(argv: list[str]) -> int:
    """Run ``logfunnel report``."""
    parser = argparse.ArgumentParser(
        prog="logfunnel report",
        description="Write one self-contained HTML page picturing a run's JSON lines.",
    )
    parser.add_argument("source", help="JSON lines written by install(json=True) or run --json")
    parser.add_argument("-o", "--output", default="report.html", help="the page to write")
    parser.add_argument(
        "--min-gap",
        type=float,
        default=1.0,
        help="a process silent this many seconds counts as a silence (default 1.0)",
    )
    args = parser.parse_args(argv)
    if not args.min_gap > 0:
        parser.error("--min-gap must be > 0")
    try:
        run = write_report(args.source, args.output, args.min_gap)
    except OSError as exc:
        print(f"logfunnel report: {exc}", file=sys.stderr)
        return 1
    skipped = f", {run.invalid} invalid lines skipped" if run.invalid else ""
    print(
        f"logfunnel report: {run.records} records from {len(run.processes)} processes"
        f"{skipped} -> {args.output}"
    )
    return 0 if run.records or not run.invalid else 1
