"""Diagnosing a live hang: every attached process can be asked for its Python stacks.

Each process attached to a funnel registers ``faulthandler`` on ``SIGUSR2``,
writing to a file of its own, ``<funnel dir>/stacks/<pid>.txt``, opened for
appending.  The file's existence is the registration: ``logfunnel stacks``
only ever signals a pid that has one, so no other process is sent a signal
whose default action would kill it.  A process whose program already handles
``SIGUSR2`` is left alone (and has no file).

``faulthandler`` writes from its C signal handler without taking any lock or
the GIL, so even a process stuck forever in a lock acquisition answers -- the
case this exists for.  The funnel directory is private (0700), so only the
installing user can read the files or find the pids.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Final

from logfunnel._core.rundir import (
    FUNNEL_DIR_PREFIX,
    SOCKET_NAME,
    STACKS_NAME,
    alive,
    funnel_bases,
    has_live_process,
    listening,
    stacks_directory,
)

if TYPE_CHECKING:
    from logfunnel._running import Funnel

STACK_SIGNAL: Final = signal.SIGUSR2
_LOCK_FRAMES: Final = re.compile(
    r'File "[^"]*(?:threading|queue|logging/__init__|multiprocessing/synchronize)\.py", '
    r"line \d+ in (?P<func>acquire|wait|__enter__|_acquireLock|put|get|_wait_for_tstate_lock)"
)
_FRAME: Final = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+) in ')
_LOCK_SOURCE: Final = re.compile(
    r"\.acquire\(|^with .*(?:lock|mutex|cond|not_full|not_empty)", re.IGNORECASE
)
_THREAD_HEADER: Final = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+")

def collect(address: str, timeout: float = 5.0) -> dict[int, str]:
    """Signal every registered live process of a funnel and return each one's stack dump."""
    directory = stacks_directory(address)
    if directory is None or not os.path.isdir(directory):
        return {}
    sizes: dict[int, int] = {}
    for name in os.listdir(directory):
        if not name.endswith(".txt") or not name[:-4].isdigit():
            continue
        pid, path = int(name[:-4]), os.path.join(directory, name)
        if not alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)  # a process gone: its file tells nothing more
            continue
        size = os.path.getsize(path)
        try:
            os.kill(pid, STACK_SIGNAL)
        except OSError:
            continue
        sizes[pid] = size
    dumps: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    pending = dict(sizes)
    while pending and time.monotonic() < deadline:
        for pid, size in list(pending.items()):
            text = _read_from(os.path.join(directory, f"{pid}.txt"), size)
            # faulthandler ends a dump with the current thread's frames and a
            # blank line; a dump is complete once the file stops growing.
            if text and text.endswith("\n") and _settled(directory, pid, size + len(text)):
                dumps[pid] = text
                del pending[pid]
        if pending:
            time.sleep(0.02)  # polling a file another process writes; bounded by timeout
    for pid in pending:
        dumps[pid] = "(no answer: the process did not dump its stacks in time)\n"
    return dumps


def _settled(directory: str, pid: int, size: int) -> bool:
    time.sleep(0.01)  # the dump is written by several write() calls in a row
    return os.path.getsize(os.path.join(directory, f"{pid}.txt")) == size


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _process_name(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as stream:
        return stream.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120]
    return "?"


def annotate(text: str) -> tuple[str, int]:
    """Mark each thread whose innermost Python frame waits on a lock; return text and count."""
    out: list[str] = []
    blocked = 0
    block: list[str] = []

    def close_block() -> None:
        nonlocal blocked
        if not block:
            return
        frames = [line for line in block[1:] if line.strip().startswith("File ")]
        waiting = _lock_wait(frames[0]) if frames else None
        if waiting is not None:
            blocked += 1
            block[0] += f"   <-- blocked acquiring a lock ({waiting})"
        out.extend(block)
        block.clear()

    for line in text.splitlines():
        if _THREAD_HEADER.match(line):
            close_block()
            block.append(line)
        elif block:
            block.append(line)
        else:
            out.append(line)
    close_block()
    return "\n".join(out), blocked


def lock_frame(dump: str) -> tuple[int, str] | None:
    """Return the index and text of the innermost frame of a dump that waits on a lock.

    faulthandler lists a thread's frames innermost first, so the first match is
    the frame that waits.
    """
    for index, line in enumerate(dump.splitlines()):
        if _LOCK_FRAMES.search(line):
            return index, line.strip()
    return None


def _lock_wait(frame: str) -> str | None:
    """Say how the innermost frame waits on a lock, or None if it does not seem to."""
    match = _LOCK_FRAMES.search(frame)
    if match is not None:
        return f"in {match['func']}"
    # A C-level acquire (lock.acquire(), `with lock:`) shows only its caller's
    # frame: look at the source line that frame is on.
    where = _FRAME.search(frame)
    if where is None:
        return None
    import linecache  # noqa: PLC0415 - the command's needs, kept off every start-up

    source = linecache.getline(where["path"], int(where["line"])).strip()
    if _LOCK_SOURCE.search(source):
        return f"at {source!r}"
    return None


def report(dumps: dict[int, str]) -> str:
    """Render collected dumps grouped by process, with lock waits marked."""
    parts = []
    total_blocked = 0
    for pid in sorted(dumps):
        text, blocked = annotate(dumps[pid])
        total_blocked += blocked
        note = f", {blocked} thread(s) waiting on a lock" if blocked else ""
        parts.append(f"=== process {pid}: {_process_name(pid)}{note}\n{text.rstrip()}\n")
    summary = f"{len(dumps)} process(es), {total_blocked} thread(s) waiting on a lock"
    return "\n".join([*parts, summary])


# -- funnel directories: what find_funnels and install()'s cleanup both know -----------

#: ``install()`` makes each funnel's private directory with
def find_funnels(pid: int | None = None) -> list[str]:
    """Return the addresses of this user's funnels (with PID attached, if given).

    Every attached process has a stack file named by its pid in its funnel's
    private directory, so those directories are where to look; this user can
    list only their own (they are 0700).
    """
    import glob  # noqa: PLC0415 - the command's needs, kept off every start-up

    found = []
    for base in funnel_bases():
        pattern = os.path.join(base, f"{FUNNEL_DIR_PREFIX}*", STACKS_NAME)
        for stacks in glob.glob(pattern):
            if pid is not None:
                attached = os.path.exists(os.path.join(stacks, f"{pid}.txt"))
            else:  # a directory a killed installer left behind has no live process
                attached = has_live_process(stacks)
            # A pid number can be reused, and an installer killed with SIGKILL
            # leaves its directory behind: only a funnel that answers counts.
            socket_path = os.path.join(os.path.dirname(stacks), SOCKET_NAME)
            if attached and listening(socket_path) is True:
                found.append("unix:" + socket_path)
    return found


def main(argv: list[str]) -> int:
    """``logfunnel stacks``: print the stacks of every process attached to a funnel."""
    parser = argparse.ArgumentParser(
        prog="logfunnel stacks",
        description="Print the Python stacks of every process attached to a running funnel.",
    )
    parser.add_argument("pid", nargs="?", type=int, help="any process of the funnel's program")
    parser.add_argument("--address", help="the funnel's address (default: from PID's environment)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for answers")
    args = parser.parse_args(argv)
    address = args.address or os.environ.get("LOGFUNNEL_ADDRESS")
    if address is None:
        funnels = find_funnels(args.pid)
        if len(funnels) > 1:
            listing = "\n  ".join(funnels)
            parser.error(f"several funnels run; give a PID or --address:\n  {listing}")
        if not funnels:
            parser.error("no funnel found: give the PID of a process running under logfunnel")
        address = funnels[0]
    dumps = collect(address, args.timeout)
    if not dumps:
        print(f"no live process is attached to {address}", file=sys.stderr)
        return 1
    print(report(dumps))
    return 0


class HangWatchdog:
    """Log every process's stacks when nothing has been logged for ``timeout`` seconds.

    Progress is a record reaching the installing process's root logger or the
    writer.  After a dump the watchdog waits for progress before it can fire
    again, so one hang gives one dump.
    """

    def __init__(self, funnel: Funnel, timeout: float) -> None:
        """Watch ``funnel``; dump after ``timeout`` seconds without a record."""
        if timeout <= 0:
            msg = f"hang timeout {timeout!r}: give a number of seconds > 0"
            raise ValueError(msg)
        self._funnel = funnel
        self._timeout = timeout
        self._stop = threading.Event()
        self._counter = _CountingHandler()
        self._thread = threading.Thread(
            target=self._run, name="logfunnel-hang-watchdog", daemon=True
        )
        self.dumps = 0

    def start(self) -> None:
        """Start watching."""
        logging.getLogger().addHandler(self._counter)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join()
        logging.getLogger().removeHandler(self._counter)

    def _progress(self) -> int:
        try:
            written = self._funnel.stats(timeout=1.0).records
        except (RuntimeError, TimeoutError):  # shut down, or too busy to answer: no news
            written = 0
        return self._counter.count + written

    def _run(self) -> None:
        last, since, armed = self._progress(), time.monotonic(), True
        interval = min(1.0, self._timeout / 4)
        while not self._stop.wait(interval):
            now, progress = time.monotonic(), self._progress()
            if progress != last:
                last, since, armed = progress, now, True
                continue
            if armed and now - since >= self._timeout:
                armed = False
                self._dump(now - since)
                last = self._progress()  # the dump's own records are not progress

    def _dump(self, quiet: float) -> None:
        self.dumps += 1
        dumps = collect(self._funnel.address)
        log = logging.getLogger("logfunnel.hang")
        log.warning(
            "nothing was logged for %.1f s: the stacks of %d process(es) follow\n%s",
            quiet,
            len(dumps),
            report(dumps),
        )


class _CountingHandler(logging.Handler):
    """Count records reaching the root logger: the watchdog's sign of progress."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle(self, record: logging.LogRecord) -> bool:  # noqa: ARG002 - the stdlib signature
        """Count one record; no lock, as a lost increment only delays the watchdog."""
        self.count += 1
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Count (``handle`` does it without the handler lock)."""
