"""One benchmark run: one system, P forked worker processes, one log file; prints one JSON line.

Started by ``benchmarks/run.py`` as a fresh interpreter per run, so no run inherits
another's threads, handlers, page cache state of its own heap, or a warmed-up writer.

Usage (normally only run.py calls this)::

    python benchmarks/_one.py --system logfunnel-thread --procs 4 --n 20000 \
        --size 100 --dir /tmp/x [--mode main|slow|backlog|conn] [--slow-us 60] [--rate R]

What is timed (``wall_s``): from the instant every worker is released (all were
set up and waiting on a pipe) until the last record is in the file, i.e. after
the workers exited *and* the system's writer drained and closed its file
(``Funnel.shutdown()``, the cookbook listener's join, ``logger.remove()``...).
"In the file" means written with write(2); nothing calls fsync, for any system.

Each record's message is ``task <worker> step <seq> value=<payload>``, so the
file can be checked afterwards for lost, duplicated and torn lines; the check
is not part of the timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

FMT = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"
LOGURU_FMT = "{time:YYYY-MM-DD HH:mm:ss,SSS} {process.name} {name} {level} {message}"
LOGGER_NAME = "bench"
# A payload whose every byte is predictable, so a torn or spliced line is caught
# even when its length happens to be right.
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# "task 7 step 12345 value=" is about 24 bytes; the payload makes up the rest of --size.
_MESSAGE_OVERHEAD = 24
_LINE = re.compile(
    rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3} \S+ \S+ INFO task (\d+) step (\d+) value=(\S*)$"
)
_MONITOR_PERIOD_S = 0.05
_CLK_TCK = os.sysconf("SC_CLK_TCK")

SYSTEMS = (
    "floor",
    "ceiling",
    "inherited",
    "cookbook",
    "mplogging",
    "loguru",
    "clh",
    "logfunnel-thread",
    "logfunnel-process",
    "logfunnel-adopt",
)


def payload_for(size: int) -> str:
    length = max(1, size - _MESSAGE_OVERHEAD)
    return (_ALPHABET * (length // len(_ALPHABET) + 1))[:length]


# -- /proc readers ------------------------------------------------------------------------


def vm_kib(pid: int | str, field: str) -> int:
    """Return a ``VmHWM``/``VmRSS`` line of /proc/<pid>/status in KiB (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(stat_path: str) -> float:
    """Return utime+stime of a /proc/.../stat file in seconds (clock-tick resolution)."""
    try:
        with open(stat_path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return float("nan")
    # The command name in parentheses may contain spaces; fields follow the last ')'.
    rest = text[text.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


class Monitor(threading.Thread):
    """Sample a writer process's peak and current RSS while the run goes on.

    A writer process exits inside shutdown, so its VmHWM cannot be read after
    the run; the last sample before exit is the peak (VmHWM only grows).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="bench-monitor")
        self.pid = pid
        self.hwm_kib = 0
        self.rss_series: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        # Event.wait as the pacing: this thread only samples, nothing waits on it.
        while not self._halt.wait(_MONITOR_PERIOD_S):
            self.sample()

    def sample(self) -> None:
        hwm = vm_kib(self.pid, "VmHWM")
        if hwm:
            self.hwm_kib = max(self.hwm_kib, hwm)
            self.rss_series.append((time.perf_counter() - self._t0, vm_kib(self.pid, "VmRSS")))

    def stop(self) -> None:
        self.sample()
        self._halt.set()
        self.join()


# -- the sink of the slow-sink mode (imported by name in a writer process) --


class SlowHandler(logging.Handler):
    """A sink that burns ``delay_us`` of CPU per record: a handler slower than the producers."""

    def __init__(self, delay_us: float = 100.0) -> None:
        super().__init__()
        self.delay_s = delay_us / 1e6

    def emit(self, record: logging.LogRecord) -> None:
        # A busy wait, not sleep(): sleep's granularity is coarser than the delay,
        # and a CPU-bound sink (formatting, compression) is the realistic slow case.
        del record  # the cost is the point, not the record
        end = time.perf_counter() + self.delay_s
        while time.perf_counter() < end:
            pass


def _slow_config(path: str, slow_us: float) -> dict[str, Any]:
    handlers: dict[str, Any] = {
        "file": {"class": "logging.FileHandler", "filename": path, "formatter": "f"},
    }
    if slow_us:
        handlers["slow"] = {"()": "_one.SlowHandler", "delay_us": slow_us}
    return {
        "version": 1,
        # The parent made the "bench" logger already; keep it enabled.
        "disable_existing_loggers": False,
        "formatters": {"f": {"format": FMT}},
        "handlers": handlers,
        "root": {"level": "INFO", "handlers": list(handlers)},
    }


# -- the systems: parent setup, worker setup, one logging call, drain ------------------------


class System:
    """What a system does in the parent before forking, in each worker, and at the end."""

    #: pid whose RSS is the writer's (None: there is no writer, each worker writes).
    writer_pid: int | None = None

    def __init__(self, path: str, procs: int, args: argparse.Namespace) -> None:
        self.path = path
        self.procs = procs
        self.args = args

    def parent_setup(self) -> None:
        pass

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        del index  # only the ceiling names its worker itself
        logger = logging.getLogger(LOGGER_NAME)
        info = logger.info

        def call(i: int, j: int, s: str) -> None:
            info("task %d step %d value=%s", i, j, s)

        return call

    def drain(self) -> None:
        pass

    def writer_cpu_s(self) -> float:
        return float("nan")


def _file_handler(path: str) -> logging.FileHandler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FMT))
    return handler


def _reset_root(*handlers: logging.Handler) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)


class Floor(System):
    """One process, a plain FileHandler of its own: the number every funnel is compared to."""

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        _reset_root(_file_handler(self.path))
        return super().worker_setup(index)


class Ceiling(System):
    """Raw os.write of a preformatted line to an O_APPEND file: no logging at all."""

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # The timestamp is fixed per worker: this is the I/O bound, not a logger.
        prefix = time.strftime("%Y-%m-%d %H:%M:%S,000") + f" w{index} {LOGGER_NAME} INFO "
        write = os.write

        def call(i: int, j: int, s: str) -> None:
            write(fd, f"{prefix}task {i} step {j} value={s}\n".encode())

        return call


class Inherited(System):
    """A FileHandler made in the parent and inherited by forked workers (unsafe, for reference)."""

    def parent_setup(self) -> None:
        self.handler = _file_handler(self.path)
        _reset_root(self.handler)

    def drain(self) -> None:
        self.handler.close()


class ClhSystem(System):
    """concurrent-log-handler: every worker writes the file itself under a lock file."""

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        from concurrent_log_handler import ConcurrentRotatingFileHandler  # noqa: PLC0415

        handler = ConcurrentRotatingFileHandler(self.path, "a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(FMT))
        _reset_root(handler)
        return super().worker_setup(index)


def _cookbook_listener(queue: Any, path: str, slow_us: float) -> None:
    """The logging cookbook's listener process: one FileHandler, records from a queue."""
    handlers: list[logging.Handler] = [_file_handler(path)]
    if slow_us:
        handlers.append(SlowHandler(slow_us))
    _reset_root(*handlers)
    while True:
        record = queue.get()
        if record is None:
            break
        logging.getLogger(record.name).handle(record)
    for h in handlers:
        h.close()


class Cookbook(System):
    """The stdlib cookbook: QueueHandler over a multiprocessing.Queue, a listener process."""

    def parent_setup(self) -> None:
        import logging.handlers  # noqa: PLC0415

        ctx = multiprocessing.get_context("fork")
        self.queue = ctx.Queue(-1)
        self.listener = ctx.Process(
            target=_cookbook_listener,
            args=(self.queue, self.path, self.args.slow_us if self.args.mode == "slow" else 0),
            name="listener",
        )
        self.listener.start()
        self.writer_pid = self.listener.pid
        self._qh = logging.handlers.QueueHandler(self.queue)

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        _reset_root(self._qh)
        return super().worker_setup(index)

    def drain(self) -> None:
        self.queue.put_nowait(None)
        self.listener.join()


class MpLogging(System):
    """multiprocessing-logging: the parent's handlers wrapped, a receiving thread in the parent."""

    def parent_setup(self) -> None:
        import multiprocessing_logging  # type: ignore[import-untyped]  # noqa: PLC0415

        _reset_root(_file_handler(self.path))
        multiprocessing_logging.install_mp_handler()
        self.writer_pid = os.getpid()

    def drain(self) -> None:
        for h in list(logging.getLogger().handlers):
            h.close()  # joins the receiving thread once its queue is empty


class Loguru(System):
    """loguru with enqueue=True: a queue to a thread of the parent that owns the file."""

    def parent_setup(self) -> None:
        from loguru import logger  # noqa: PLC0415

        logger.remove()
        logger.add(self.path, format=LOGURU_FMT, enqueue=True, level="INFO")
        self.logger = logger
        self.writer_pid = os.getpid()

    def worker_setup(self, index: int) -> Callable[[int, int, str], None]:
        del index
        info = self.logger.info

        def call(i: int, j: int, s: str) -> None:
            info("task {} step {} value={}", i, j, s)

        return call

    def drain(self) -> None:
        self.logger.remove()  # puts a sentinel and joins the writing thread


class Logfunnel(System):
    """logfunnel.install(file=..., fmt=FMT, level="INFO", host=...), then Funnel.shutdown()."""

    host: Literal["thread", "process"] = "thread"

    def parent_setup(self) -> None:
        import logfunnel  # noqa: PLC0415

        mode = self.args.mode
        # The backlog keeps install()'s own sinks, as in the main runs: a process
        # host's writer is frozen with SIGSTOP, a thread host's by holding its
        # sinks' locks (hold_writer).
        if mode == "slow":
            self.funnel = logfunnel.install(
                config=_slow_config(self.path, self.args.slow_us), host=self.host
            )
        else:
            self.funnel = logfunnel.install(file=self.path, fmt=FMT, level="INFO", host=self.host)
        # The writer loop's pid comes from stats(): a writer process is a
        # supervisor that forks the loop, so Funnel's own child is not it.
        # (The thread host's thread: reaching into the Funnel, a benchmark's business.)
        if self.host == "process":
            stats = self.funnel.stats()  # a dict before logfunnel.Stats (--logfunnel-rev)
            self.writer_pid = stats["pid"] if isinstance(stats, dict) else stats.pid
            self._stat = f"/proc/{self.writer_pid}/stat"
        else:
            self.writer_pid = os.getpid()
            tid = self.funnel._thread.native_id  # type: ignore[union-attr]
            self._stat = f"/proc/self/task/{tid}/stat"

    def hold_writer(self) -> None:
        """Stop the writer from reading (backlog mode)."""
        if self.host == "process":
            os.kill(self.writer_pid, signal.SIGSTOP)  # type: ignore[arg-type]
        else:
            # The writer thread takes a sink's lock to write through it, and
            # stops reading until it gets it (a benchmark reaching into the Funnel).
            for sink in self.funnel._sinks:  # type: ignore[attr-defined]
                sink.acquire()

    def release_writer(self) -> None:
        if self.host == "process":
            os.kill(self.writer_pid, signal.SIGCONT)  # type: ignore[arg-type]
        else:
            for sink in self.funnel._sinks:  # type: ignore[attr-defined]
                sink.release()

    def writer_cpu_s(self) -> float:
        return cpu_seconds(self._stat)

    def drain(self) -> None:
        if not self.funnel.shutdown(timeout=600):
            print("logfunnel shutdown did not drain in time", file=sys.stderr)


class LogfunnelProcess(Logfunnel):
    host: Literal["thread", "process"] = "process"


class LogfunnelAdopt(System):
    """Adopt mode: the program's own FileHandler on the root logger, then ``install()``."""

    def parent_setup(self) -> None:
        import logfunnel  # noqa: PLC0415

        _reset_root(_file_handler(self.path))
        self.funnel = logfunnel.install()
        self.writer_pid = os.getpid()
        tid = self.funnel._thread.native_id  # type: ignore[union-attr]
        self._stat = f"/proc/self/task/{tid}/stat"

    def writer_cpu_s(self) -> float:
        return cpu_seconds(self._stat)

    def drain(self) -> None:
        if not self.funnel.shutdown(timeout=600):
            print("logfunnel shutdown did not drain in time", file=sys.stderr)


SYSTEM_CLASSES: dict[str, type[System]] = {
    "floor": Floor,
    "ceiling": Ceiling,
    "inherited": Inherited,
    "cookbook": Cookbook,
    "mplogging": MpLogging,
    "loguru": Loguru,
    "clh": ClhSystem,
    "logfunnel-thread": Logfunnel,
    "logfunnel-process": LogfunnelProcess,
    "logfunnel-adopt": LogfunnelAdopt,
}


# -- the worker ---------------------------------------------------------------------------


def worker_main(
    system: System,
    index: int,
    n: int,
    size: int,
    ready_w: int,
    go_r: int,
    out: str,
    rate: float = 0.0,
) -> None:
    call = system.worker_setup(index)
    s = payload_for(size)
    # --rate: a worker that logs as a real job does, a record now and then, so the writer
    # wakes for a few records at a time; its sleeps are not in its CPU per call.
    period = 1.0 / rate if rate > 0 else 0.0
    # Time a sample of calls only: timing every call would add two clock reads to each.
    stride = max(1, n // 2500)
    lat: list[int] = []
    clock = time.perf_counter_ns
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    t_wall = time.perf_counter()
    t_cpu = time.process_time()
    for j in range(n):
        if period:
            ahead = t_wall + j * period - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        if j % stride:
            call(index, j, s)
        else:
            t = clock()
            call(index, j, s)
            lat.append(clock() - t)
    cpu = time.process_time() - t_cpu
    wall = time.perf_counter() - t_wall
    result = {"cpu_s": cpu, "wall_s": wall, "lat_ns": lat, "hwm_kib": vm_kib("self", "VmHWM")}
    with open(out, "w", encoding="ascii") as f:
        json.dump(result, f)


# -- checking the file --------------------------------------------------------------------


def check_file(path: str, procs: int, n: int, size: int) -> dict[str, int]:
    """Count records lost, duplicated and torn (a line that is not one whole expected record)."""
    expected_payload = payload_for(size).encode()
    seen = [bytearray(n) for _ in range(procs)]
    torn = dup = other = 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n")
            m = _LINE.match(line)
            if m is None:
                # A line of the funnel's own (a warning) is not a record; anything else is torn.
                if b" logfunnel " in line and b"task " not in line:
                    other += 1
                else:
                    torn += 1
                continue
            i, j, value = int(m[1]), int(m[2]), m[3]
            if i >= procs or j >= n or value != expected_payload or not raw.endswith(b"\n"):
                torn += 1
                continue
            if seen[i][j]:
                dup += 1
            else:
                seen[i][j] = 1
    lost = sum(n - sum(row) for row in seen)
    return {"lost": lost, "dup": dup, "torn": torn, "other_lines": other}


# -- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = os.path.join(args.dir, f"{args.system}-p{args.procs}.log")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with open("/proc/loadavg", encoding="ascii") as f:
        load_start = float(f.read().split()[0])
    system = SYSTEM_CLASSES[args.system](path, args.procs, args)
    logging.getLogger(LOGGER_NAME)  # exists before any dictConfig, as in a real program
    system.parent_setup()
    if args.patch:
        # A what-if run (benchmarks/whatif.py): candidate src/ changes applied in this
        # process, inherited by the forked workers; the thread host's writer runs here too.
        if args.system != "logfunnel-thread":
            raise SystemExit("--patch applies to logfunnel-thread only")
        import _patches  # noqa: PLC0415 - only what-if runs load it

        _patches.apply(args.patch)
    monitor = Monitor(system.writer_pid) if system.writer_pid is not None else None
    if monitor is not None:
        monitor.start()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    ctx = multiprocessing.get_context("fork")
    outs = [os.path.join(args.dir, f"w{i}.json") for i in range(args.procs)]
    workers = [
        ctx.Process(
            target=worker_main,
            args=(system, i, args.n, args.size, ready_w, go_r, outs[i], args.rate),
            name=f"w{i}",
        )
        for i in range(args.procs)
    ]
    for w in workers:
        w.start()
    got = 0
    while got < args.procs:  # every worker set up and waiting: nothing else is timed
        chunk = os.read(ready_r, args.procs - got)
        if not chunk:
            raise RuntimeError("a worker died during setup")
        got += len(chunk)
    if args.mode == "backlog":
        system.hold_writer()  # type: ignore[attr-defined]
    cpu_before = system.writer_cpu_s()
    t0 = time.perf_counter()
    os.write(go_w, b"g" * args.procs)
    release_at = None
    finished_at_release = 0
    if args.mode == "backlog":
        # Let the workers fill every buffer between them and the frozen writer;
        # then time how long the writer takes to work the whole backlog off.
        deadline = time.monotonic() + args.fill_s
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        finished_at_release = sum(1 for w in workers if not w.is_alive())
        release_at = time.perf_counter()
        system.release_writer()  # type: ignore[attr-defined]
    for w in workers:
        w.join()
    t_workers = time.perf_counter()
    writer_cpu = float("nan")
    if args.mode == "conn":
        # Barrier first: every record written, then the writer's CPU is read.
        system.funnel.flush(timeout=600)  # type: ignore[attr-defined]
        writer_cpu = system.writer_cpu_s() - cpu_before
    system.drain()
    t_end = time.perf_counter()
    writer_hwm = 0
    rss_series: list[tuple[float, int]] = []
    if monitor is not None:
        monitor.stop()
        writer_hwm = monitor.hwm_kib
        rss_series = monitor.rss_series
    if system.writer_pid == os.getpid():
        writer_hwm = vm_kib("self", "VmHWM")
    results = []
    for out in outs:
        with open(out, encoding="ascii") as f:
            results.append(json.load(f))
        os.unlink(out)
    total = args.procs * args.n
    check = check_file(path, args.procs, args.n, args.size)
    if not args.keep:
        os.unlink(path)
    lat = sorted(x for r in results for x in r["lat_ns"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else float("nan")

    return {
        # Other work on the machine skews timings: each run says how busy it was.
        "loadavg_start": load_start,
        "system": args.system,
        "procs": args.procs,
        "n": args.n,
        "size": args.size,
        "mode": args.mode,
        "rate_per_worker": args.rate,
        "patch": args.patch,
        "records": total,
        "wall_s": t_end - t0,
        "rate": total / (t_end - t0),
        "drain_s": t_end - t_workers,
        "backlog_drain_s": (t_end - release_at) if release_at is not None else None,
        "finished_at_release": finished_at_release,
        "cpu_us_per_call": sum(r["cpu_s"] for r in results) / total * 1e6,
        "worker_wall_s": max(r["wall_s"] for r in results),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "worker_hwm_kib": max(r["hwm_kib"] for r in results),
        "writer_hwm_kib": writer_hwm,
        "writer_rss_series": rss_series if args.mode == "slow" else [],
        "writer_cpu_us_per_record": writer_cpu / total * 1e6 if args.mode == "conn" else None,
        **check,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--system", required=True, choices=SYSTEMS)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--n", type=int, default=20_000, help="records per worker")
    p.add_argument("--size", type=int, default=100, help="message size in bytes")
    p.add_argument("--dir", required=True, help="directory for the log file")
    p.add_argument("--mode", choices=("main", "slow", "backlog", "conn"), default="main")
    p.add_argument("--slow-us", type=float, default=100.0, help="slow sink's cost per record")
    p.add_argument("--fill-s", type=float, default=1.0, help="backlog mode: time to fill")
    p.add_argument("--rate", type=float, default=0.0, help="records/s per worker (0: flat out)")
    p.add_argument("--keep", action="store_true", help="keep the log file")
    p.add_argument("--patch", default="", help="what-if patches of _patches.py, comma-separated")
    args = p.parse_args(argv)
    # This file is imported by name ("_one.SlowHandler") by a writer process's dictConfig.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    result = run(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
