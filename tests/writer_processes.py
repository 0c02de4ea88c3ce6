"""Helpers for tests whose writer process outlives the process that started it.

Such a writer is no child of the test: it is found in ``/proc`` by what it
runs (``process_main``) and the ``TMPDIR`` it inherited (each test gives its
own), and waited for by polling with a deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def writer_pids(tmpdir: Path) -> set[int]:
    """Return the live writer processes (supervisor and writer) started with ``TMPDIR=tmpdir``."""
    found = set()
    wanted = f"TMPDIR={tmpdir}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"process_main" not in cmdline:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted in environ and state not in ("Z", "X"):
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process (not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def funnel_entries(tmpdir: Path) -> list[str]:
    """Return what logfunnel left in ``tmpdir``: funnel directories and the file registry."""
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("logfunnel-"))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)  # polling processes that are not our children; bounded by the deadline
