"""Rotation by size and time, retention and compression with real processes, both hosts.

Every test runs a real installer (``tests/scripts/rotation_run.py`` or a
program of its own) whose spawn and fork children log through the writer;
files are read back in time order, ``.gz`` decompressed, and every record must
be there exactly once, in order per process.  Time rotation uses ``when="S"``
and waits on the condition "rotated files of two periods exist", bounded by a
deadline, never on the clock.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import SCRIPTS, Line, check_records, child_env, last_json, run_python

HOSTS = ["thread", "process"]
ROTATED = re.compile(r"app\.log\.(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})(?:\.([1-9]\d*))?(\.gz)?")


def read_in_order(directory: Path) -> list[Line]:
    """Every line of the rotated files (oldest first: bare, .1, .2 per period) then app.log.

    Fails on a torn line, a ``.gz.tmp`` left behind, or a file no rotation makes.
    """
    rotated = []
    for path in directory.iterdir():
        if path.name == "app.log":
            continue
        found = ROTATED.fullmatch(path.name)
        assert found, f"a file the sink does not make: {path.name}"
        rotated.append(((found.group(1), int(found.group(2) or 0)), path))
    lines = []
    for path in [p for _, p in sorted(rotated)] + [directory / "app.log"]:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for raw in data.decode("utf-8").splitlines():
            parts = raw.split("|", 4)
            assert len(parts) == 5, f"torn line in {path}: {raw!r}"
            assert parts[0].isdigit(), f"torn line in {path}: {raw!r}"
            lines.append(Line(int(parts[0]), parts[1], parts[2], parts[3], parts[4]))
    return lines


def run_rotation(
    directory: Path, host: str, processes: int, least: int, timeout: float, **options: object
) -> dict[str, int]:
    """Run rotation_run.py; return how many records each process logged."""
    proc = run_python(
        str(SCRIPTS / "rotation_run.py"), str(directory), host, str(processes), str(least),
        json.dumps(options), timeout=timeout,
        env=child_env(ROTATION_DEADLINE=str(timeout - 30)),
    )
    counts: dict[str, int] = last_json(proc.stdout)
    return counts


@pytest.mark.parametrize("host", HOSTS)
def test_size_and_time_rotation_with_gzip_keeps_every_record_once(
    tmp_path: Path, host: str
) -> None:
    """3 processes; ``when="S"`` and ``max_bytes``, gzip, retention that keeps everything."""
    counts = run_rotation(
        tmp_path, host, processes=3, least=3000, timeout=100,
        when="S", max_bytes=64 * 1024, compress="gzip", backups=100_000, max_age=3600,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(n == "app.log" or n.endswith(".gz") for n in names), names  # all compressed
    periods = {m.group(1) for n in names if (m := ROTATED.fullmatch(n))}
    assert len(periods) >= 2, f"no time rotation: {names}"
    assert any(re.search(r"\.\d+\.gz$", n) for n in names), f"no size rotation: {names}"
    check_records(read_in_order(tmp_path), counts)


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("host", HOSTS)
def test_soak_eight_processes_rotating_by_size_and_time(tmp_path: Path, host: str) -> None:
    """8 processes, 200k+ records each, rotating about every 64 KiB and every second, gzip."""
    counts = run_rotation(
        tmp_path, host, processes=8, least=200_000, timeout=800,
        when="S", max_bytes=64 * 1024, compress="gzip", backups=1_000_000, max_age=86400,
    )
    check_records(read_in_order(tmp_path), counts)
    assert len(list(tmp_path.glob("*.gz"))) > 100


RESTARTED = r"""
import logging, sys
import logfunnel
funnel = logfunnel.install(file=sys.argv[1], fmt="%(message)s", when="S", host=sys.argv[2])
logging.getLogger("app").warning(sys.argv[3])
funnel.shutdown()
"""


@pytest.mark.parametrize("host", HOSTS)
def test_a_restarted_writer_rotates_by_the_files_period(tmp_path: Path, host: str) -> None:
    """concurrent-log-handler #79/#81: the rotated name is the file's second, not 1969 or now."""
    log = tmp_path / "app.log"
    run_python("-c", RESTARTED, str(log), host, "first run")
    written = log.stat().st_mtime
    deadline = time.monotonic() + 10
    while int(time.time()) <= int(written):  # the next second has begun
        assert time.monotonic() < deadline
        time.sleep(0.01)  # waiting for the wall clock's second to change: bounded
    run_python("-c", RESTARTED, str(log), host, "second run")
    name = "app.log." + time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(int(written)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", name]
    assert (tmp_path / name).read_text() == "first run\n"
    assert log.read_text() == "second run\n"


CLI_PROGRAM = r"""
import glob, logging, sys, time
log = logging.getLogger("cli")
deadline = time.monotonic() + 60
i = 0
while not glob.glob(sys.argv[1] + ".*.gz"):
    assert time.monotonic() < deadline, "nothing rotated"
    log.warning("rec cli %d pc=%d", i, i)
    i += 1
print(i)
"""


def test_logfunnel_run_rotates_with_its_flags(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(CLI_PROGRAM)
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    proc = run_python(
        "-m", "logfunnel", "run", "--file", str(log), "--when", "S", "--max-bytes", "4096",
        "--backups", "100000", "--max-age", "3600", "--compress", "gzip",
        "--fmt", "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s",
        "--", str(script), str(log),
    )
    count = int(proc.stdout.split()[-1])
    check_records(read_in_order(log.parent), {"cli": count})


BAD = r"""
import sys, logfunnel
try:
    logfunnel.install(file=sys.argv[1], **eval(sys.argv[2]))
except ValueError as exc:
    print(exc)
else:
    print("accepted")
"""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{'when': 'X'}", r"when='X': give one of 'S', 'M', 'H'"),
        ("{'when': 'H', 'interval': 0}", r"interval=0: give a whole number"),
        ("{'when': 'H', 'interval': 25}", r"interval=25 with when='H' is longer than a day"),
        ("{'interval': 2}", r"interval=2 needs when="),
        ("{'when': 'D', 'compress': 'zip'}", r"compress='zip': give 'gzip'"),
        ("{'when': 'D', 'max_age': -1}", r"max_age=-1: give seconds > 0 or a datetime.timedelta"),
        ("{'when': 'D', 'max_age': 'x'}", r"max_age='x': give seconds"),
        ("{'backups': 3}", r"backups=3 needs max_bytes= or when="),
        ("{'max_age': 60}", r"max_age=60 needs max_bytes= or when="),
        ("{'compress': 'gzip'}", r"compress='gzip' needs max_bytes= or when="),
        ("{'utc': True}", r"utc=True needs when="),
        ("{'watch': 1}", r"watch=1: give True or False"),
        ("{'watch': True, 'when': 'D'}", r"watch=True is for a file something else rotates"),
    ],
)
def test_wrong_rotation_options_fail_at_install(tmp_path: Path, options: str, message: str) -> None:
    proc = run_python("-c", BAD, str(tmp_path / "app.log"), options)
    assert re.search(message, proc.stdout), proc.stdout
    assert sorted(os.listdir(tmp_path)) == []  # nothing created


def test_timedelta_and_lower_case_when_are_accepted(tmp_path: Path) -> None:
    proc = run_python(
        "-c", BAD, str(tmp_path / "app.log"),
        "{'when': 'midnight', 'max_age': __import__('datetime').timedelta(days=7), 'utc': True}",
    )
    assert proc.stdout.strip() == "accepted", proc.stdout
