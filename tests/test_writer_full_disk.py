"""A real full disk (ENOSPC on a small tmpfs): reported once, and every lost record counted.

Issue 9, item 8: on a full tmpfs the thread host lost 2,481 of 3,000 records
while its sink said "resumed after 1 failed records" and stderr printed the
"cannot write" line 47 times; the process host reported nothing.  The test
mounts a 256 KiB tmpfs (we need root, or the right to mount: else it is
skipped, saying so), fills it, logs 3,100 records, frees the space, logs
more, and shuts down.  ``tests/test_faults.py`` fakes a full disk with
``RLIMIT_FSIZE`` instead, which fails differently (EFBIG, checked per write).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from test_writer_support import Host

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INSTALLER = r"""
import dataclasses
import json, logging, subprocess, sys
import logfunnel
log, host, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
funnel = logfunnel.install(file=log, host=host, fmt="%(message)s", max_bytes=max_bytes)
CHILD = '''
import logging, sys
log = logging.getLogger("child")
for i in range(int(sys.argv[2])):
    log.warning("%s %06d %s", sys.argv[1], i, "x" * 60)
'''
main = logging.getLogger("main")
print(json.dumps({"address": funnel.address}), flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "child":  # a child process logs through the funnel
        answer = subprocess.run([sys.executable, "-c", CHILD, *command[1:]], timeout=120).returncode
    elif command[0] == "main":  # the installing process logs itself
        for i in range(int(command[2])):
            main.warning("%s %06d %s", command[1], i, "x" * 60)
        answer = 0
    elif command[0] == "flush":
        answer = funnel.flush(timeout=60)
    elif command[0] == "stats":
        answer = dataclasses.asdict(funnel.stats())
    else:
        answer = funnel.shutdown(timeout=60)
    print(json.dumps(answer), flush=True)
    if command[0] == "quit":
        break
"""

RECORD = re.compile(r"(\w{4}) (\d{6}) x{60}")
RESUMED = re.compile(r"writes again: resumed after (\d+) failed records")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 256 KiB tmpfs for the test, and unmount it afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here: cannot make a real full disk")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"f" * 4096
        error = 0
        while not error:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                error = exc.errno or -1
        assert error == errno.ENOSPC, os.strerror(error)
        return filler
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("host", "max_bytes"), [("thread", 0), ("process", 0), ("process", 1 << 20)]
)
def test_full_disk_is_reported_once_and_every_lost_record_counted(
    small_disk: Path, tmp_path: Path, host: str, max_bytes: int
) -> None:
    """ENOSPC: one "cannot write" line, whole lines only, and "resumed after N" with N the records missing."""
    log = small_disk / "sink.log"
    installer = Host(tmp_path, INSTALLER, str(log), host, str(max_bytes), name="installer")
    try:
        assert installer.command("child prev 20") == 0
        assert installer.command("flush") is True
        filler = _fill(small_disk)
        assert installer.command("child full 3000") == 0
        assert installer.command("main main 100") == 0
        assert installer.command("flush") is True
        filler.unlink()  # space comes back
        assert installer.command("child back 100") == 0
        assert installer.command("main bmai 10") == 0
        assert installer.command("flush") is True
        stats = installer.command("stats")
        assert installer.finish() is True
        stderr = installer.stderr()
    finally:
        installer.kill()
    records: dict[str, list[int]] = {}
    notes = []
    for line in log.read_text(encoding="utf-8").splitlines():
        match = RECORD.fullmatch(line)
        if match:
            records.setdefault(match.group(1), []).append(int(match.group(2)))
        else:  # anything else is the writer's own note; a torn line would land here
            notes.append(line)
    assert records["prev"] == list(range(20))
    assert records["back"] == list(range(100))
    assert records["bmai"] == list(range(10))
    full, main = records.get("full", []), records.get("main", [])
    assert full == list(range(len(full)))  # what landed is a gap-free start: none torn
    assert main == list(range(len(main)))
    missing = 3000 - len(full) + 100 - len(main)
    assert missing > 3000  # the disk really was full
    counts = [int(m.group(1)) for m in map(RESUMED.search, notes) if m]
    assert counts, notes
    assert notes == [n for n in notes if RESUMED.search(n)], notes
    assert sum(counts) == missing, (counts, missing)
    assert stats.get("unwritten") == missing
    cannot = [line for line in stderr.splitlines() if "cannot write" in line]
    assert 1 <= len(cannot) <= 2, cannot
    assert "No space left on device" in cannot[0]
