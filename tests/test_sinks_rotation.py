"""Rotation strategies and the rotating file sink, in-process, on real files, with a test clock.

``Schedule``, ``TimeNaming``/``ChainNaming``, ``Retention`` and the
compressor are the sink's strategies (``logfunnel.sinks.rotation``,
``retention``, ``compress``); ``RotatingFileSink`` takes its clock as ``now``,
so time rotation is tested without waiting for the wall clock.  The writer
and real processes are in ``test_sinks_rotation_processes.py``.
"""

from __future__ import annotations

import gzip
import logging.handlers
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logfunnel.sinks import compress as _compress
from logfunnel.sinks import retention as _retention
from logfunnel.sinks import rotation as _rotation
from logfunnel.sinks.options import FileOptions
from logfunnel.sinks.rotating import RotatingFileSink


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Europe/Berlin (CET/CEST) for this test."""
    if not Path("/usr/share/zoneinfo/Europe/Berlin").exists():
        pytest.skip("no tzdata: /usr/share/zoneinfo/Europe/Berlin is missing")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(*fields: int, dst: int = -1) -> float:
    """Return the time of a local wall-clock date and time (``dst``: which of a repeated hour)."""
    year, month, day, hour, minute, second = (*fields, 0, 0, 0, 0, 0)[:6]
    return time.mktime((year, month, day, hour, minute, second, 0, 0, dst))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        """Start at ``t``."""
        self.t = t

    def __call__(self) -> float:
        """Return the time the test set."""
        return self.t


def contents(directory: Path, base: str = "app.log") -> list[str]:
    """Every line of ``base`` and its rotated files (``.gz`` decompressed), files in name order."""
    lines: list[str] = []
    for path in sorted(directory.glob(base + "*")):
        if path.name.endswith(".gz.tmp"):
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.decode().splitlines()
    return lines


def sink(path: Path, clock: Clock | None = None, **options: object) -> RotatingFileSink:
    handler = RotatingFileSink(
        str(path), FileOptions(file=str(path), **options),  # type: ignore[arg-type]
        now=clock or time.time,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


# -- Schedule: periods aligned to the clock, DST by the C library's rules -------------------


def test_periods_align_to_the_clock_in_utc() -> None:
    t = 1_796_074_400.5  # 2026-11-30 (a Monday) 21:33:20.5 UTC
    assert time.gmtime(t).tm_wday == 0
    cases = {
        ("S", 1): (t - 0.5, t + 0.5),
        ("S", 15): (t - 5.5, t + 9.5),
        ("M", 5): (t - 200.5, t + 99.5),
        ("H", 1): (t - 2000.5, t + 1599.5),
        ("H", 7): (t - 2000.5, t - 2000.5 + 3 * 3600),  # 21:00-24:00: a day's last, shorter
        ("D", 1): (t - 77600.5, t + 8799.5),
        ("MIDNIGHT", 1): (t - 77600.5, t + 8799.5),
        ("W0", 1): (t - 77600.5, t - 77600.5 + 7 * 86400),
        ("W3", 1): (t - 77600.5 - 4 * 86400, t - 77600.5 + 3 * 86400),
    }
    for (when, interval), want in cases.items():
        assert _rotation.Schedule(when, interval, utc=True).period(t) == want, when


def test_midnight_matches_the_stdlib_on_ordinary_days(berlin: None) -> None:
    """Where the stdlib's TimedRotatingFileHandler is right, the next rollover is its."""
    stdlib = logging.handlers.TimedRotatingFileHandler(os.devnull, when="midnight", delay=True)
    ours = _rotation.Schedule("midnight")
    for t in (local(2026, 1, 14, 10, 30), local(2026, 7, 1, 23, 59, 59), local(2026, 12, 3)):
        assert ours.period(t)[1] == stdlib.computeRollover(int(t)), t


def test_weeks_start_at_midnight_of_their_weekday(berlin: None) -> None:
    """``W0`` is a week from Monday 00:00 (the stdlib's rolls at the end of Monday instead)."""
    wednesday = local(2026, 1, 14, 10, 30)
    assert _rotation.Schedule("W0").period(wednesday) == (local(2026, 1, 12), local(2026, 1, 19))
    assert _rotation.Schedule("W2").period(wednesday) == (local(2026, 1, 14), local(2026, 1, 21))
    two = _rotation.Schedule("W0", 2).period(wednesday)
    assert two[1] - two[0] == 14 * 86400
    assert two[0] <= wednesday < two[1]
    assert _rotation.Schedule("W0", 2).period(two[1]) == (two[1], two[1] + 14 * 86400)


def test_days_are_calendar_days_across_dst(berlin: None) -> None:
    """The spring-forward day is 23 hours long, the fall-back day 25; periods end at midnight."""
    day = _rotation.Schedule("midnight")
    start, end = day.period(local(2026, 3, 29, 12))
    assert (start, end) == (local(2026, 3, 29), local(2026, 3, 30))
    assert end - start == 23 * 3600
    start, end = day.period(local(2026, 10, 25, 12))
    assert end - start == 25 * 3600
    assert time.localtime(end)[3:6] == (0, 0, 0)
    week = _rotation.Schedule("W6")  # Sundays: both DST changes of 2026 fall on one
    start, end = week.period(local(2026, 10, 26, 9))
    assert (start, end) == (local(2026, 10, 25), local(2026, 11, 1))
    assert end - start == 7 * 86400 + 3600


def test_hours_follow_the_wall_clock_across_dst(berlin: None) -> None:
    """A repeated hour (fall back) is two periods of one name: the second gets ``.1``."""
    hour = _rotation.Schedule("H")
    first = local(2026, 10, 25, 2, 30, dst=1)  # 02:30 CEST
    second = local(2026, 10, 25, 2, 30, dst=0)  # 02:30 CET, an hour later
    assert second - first == 3600
    assert hour.period(first) == (first - 1800, first + 1800)
    assert hour.period(second) == (second - 1800, second + 1800)
    assert hour.suffix(first) == hour.suffix(second) == "2026-10-25_02"
    skipped = local(2026, 3, 29, 3, 30)  # 02:00-03:00 does not exist that day
    assert hour.suffix(skipped) == "2026-03-29_03"
    assert hour.period(skipped)[0] == local(2026, 3, 29, 3)


# -- names: recognisable, strictly matched, never overwriting -------------------------------


def test_time_names_never_overwrite(tmp_path: Path) -> None:
    """CPython gh-88352: TimedRotatingFileHandler removes a file of the name it wants."""
    base = tmp_path / "app.log"
    schedule = _rotation.Schedule("D", utc=True)
    naming = _rotation.TimeNaming(str(base), schedule)
    t = 1_796_074_400.0
    day = schedule.suffix(t)
    assert day == "2026-11-30"
    (tmp_path / f"app.log.{day}").write_text("older\n")
    (tmp_path / f"app.log.{day}.1.gz").write_bytes(gzip.compress(b"old\n"))
    base.write_text("current\n")
    assert naming.target(t) == f"{base}.{day}.2"
    assert (tmp_path / f"app.log.{day}").read_text() == "older\n"
    assert naming.match(f"app.log.{day}.2") == (day, 2)
    for foreign in (
        "app.log.2026-13-45", "app.log.2026-11-30.0", "app.log.2026-11-30.x",
        "app.log.2026-11-30_01", "app.log.1", "app.log.bak", "app.logs.2026-11-30",
    ):
        assert naming.match(foreign) is None, foreign


def test_size_chain_shifts_with_gz(tmp_path: Path) -> None:
    base = tmp_path / "app.log"
    naming = _rotation.ChainNaming(str(base))
    (tmp_path / "app.log.1.gz").write_bytes(b"one")
    (tmp_path / "app.log.2").write_text("two")
    (tmp_path / "app.log.01").write_text("not ours")
    base.write_text("now")
    assert naming.target(None) == f"{base}.1"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log.01", "app.log.1", "app.log.2.gz", "app.log.3"]


# -- the sink with a test clock -------------------------------------------------------------


def test_time_and_size_rotate_with_period_names(tmp_path: Path) -> None:
    clock = Clock(1_796_074_400.0)  # 2026-11-30 21:33:20 UTC
    handler = sink(tmp_path / "app.log", clock, when="H", utc=True, max_bytes=100)
    lines = [f"line {i:03d} " + "x" * 20 for i in range(12)]  # 30 bytes each
    for line in lines[:8]:  # three fit in 100 bytes: .., .1, and the live file
        handler.write_line(line)
    clock.t += 3600  # the next hour
    for line in lines[8:]:
        handler.write_line(line)
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "app.log", "app.log.2026-11-30_21", "app.log.2026-11-30_21.1",
        "app.log.2026-11-30_21.2", "app.log.2026-11-30_22",
    ]
    assert contents(tmp_path) == lines[11:] + lines[:3] + lines[3:6] + lines[6:8] + lines[8:11]
    assert sorted(contents(tmp_path)) == lines


def test_restart_takes_the_period_from_the_file(tmp_path: Path) -> None:
    """concurrent-log-handler #79 and #81: the file's period, not the start's, decides."""
    path = tmp_path / "app.log"
    hour = 1_796_068_800.0  # 2026-11-30 20:00:00 UTC
    path.write_text("from the last run\n")
    os.utime(path, (hour + 600, hour + 600))
    # A restart within the same hour keeps appending, and rotates at its end (not an hour later).
    clock = Clock(hour + 3000)
    handler = sink(path, clock, when="H", utc=True)
    assert handler._rollover_at == hour + 3600
    handler.write_line("same hour")
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]
    # A restart after the file's hour rotates at once, under that hour's name.
    os.utime(path, (hour + 3000, hour + 3000))
    clock.t = hour + 5 * 3600
    handler = sink(path, clock, when="H", utc=True)
    handler.write_line("five hours later")
    handler.close()
    assert (tmp_path / "app.log.2026-11-30_20").read_text() == "from the last run\nsame hour\n"
    assert path.read_text() == "five hours later\n"


def test_an_empty_file_is_not_rotated(tmp_path: Path) -> None:
    clock = Clock(1_796_074_400.0)
    handler = sink(tmp_path / "app.log", clock, when="S", utc=True)
    clock.t += 10
    handler.write_line("after ten idle seconds")
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]


# -- retention: only this sink's files, by count and by age ---------------------------------


def test_retention_keeps_count_and_age_and_leaves_others_alone(tmp_path: Path) -> None:
    clock = Clock(1_796_074_400.0)
    now = clock.t
    unrelated = [
        "app.log.bak", "app.log.2026-13-01", "app.log.2026-11-01.txt", "other.log.2026-11-01",
        "app.log.2026-11-01.0", "app.log.1",
    ]
    for name in unrelated:
        (tmp_path / name).write_text("keep me")
        os.utime(tmp_path / name, (now - 10**7, now - 10**7))
    for day in range(1, 8):  # seven rotated days, the 1st the oldest; some compressed
        path = tmp_path / f"app.log.2026-11-{day:02d}"
        if day % 2:
            path = Path(f"{path}.gz")
            path.write_bytes(gzip.compress(b"x\n"))
        else:
            path.write_text("x\n")
        os.utime(path, (now - (30 - day) * 86400, now - (30 - day) * 86400))
    (tmp_path / "app.log").write_text("")
    handler = sink(tmp_path / "app.log", clock, when="D", utc=True, backups=5)
    handler.close()
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name not in unrelated)
    assert kept == [
        "app.log", "app.log.2026-11-03.gz", "app.log.2026-11-04", "app.log.2026-11-05.gz",
        "app.log.2026-11-06", "app.log.2026-11-07.gz",
    ]
    handler = sink(tmp_path / "app.log", clock, when="D", utc=True, max_age=24.5 * 86400)
    handler.close()
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name not in unrelated)
    assert kept == ["app.log", "app.log.2026-11-06", "app.log.2026-11-07.gz"]
    for name in unrelated:
        assert (tmp_path / name).read_text() == "keep me"


def test_retention_spares_a_file_being_compressed(tmp_path: Path) -> None:
    base = tmp_path / "app.log"
    naming = _rotation.ChainNaming(str(base))
    for index in (1, 2, 3):
        (tmp_path / f"app.log.{index}").write_text("x")
    policy = _retention.Retention(backups=1)
    deleted = _retention.apply(policy, naming, time.time(), busy={f"{base}.3"})
    assert deleted == [f"{base}.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log.1", "app.log.3"]


# -- compression: off the loop, safe against a crash ----------------------------------------


def test_rotated_files_are_gzipped_in_a_worker_thread(tmp_path: Path) -> None:
    handler = sink(tmp_path / "app.log", max_bytes=1000, backups=3, compress="gzip")
    lines = [f"line {i:05d} " + "y" * 40 for i in range(200)]
    for line in lines:
        handler.write_line(line)
    assert handler.compressor is not None
    assert handler.compressor.wait_idle(timeout=30)
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1.gz", "app.log.2.gz", "app.log.3.gz"]
    kept = [
        line
        for name in ("app.log.3.gz", "app.log.2.gz", "app.log.1.gz")
        for line in gzip.decompress((tmp_path / name).read_bytes()).decode().splitlines()
    ] + (tmp_path / "app.log").read_text().splitlines()
    assert len(kept) == 3 * 19 + 10
    assert kept == lines[-len(kept) :]  # the newest records, in order, none twice
    gz = tmp_path / "app.log.1.gz"
    with gzip.open(gz) as stream:
        stream.read()
    assert abs(gz.stat().st_mtime - int.from_bytes(gz.read_bytes()[4:8], "little")) < 1


def test_a_crash_mid_compress_leaves_the_plain_file_and_start_finishes(tmp_path: Path) -> None:
    """SIGKILL while gzipping leaves the plain file and a ``.gz.tmp``; the next start cleans up.

    The killed compressor's lock died with it; the next start removes its
    ``.gz.tmp`` and compresses the file again.
    """
    base = tmp_path / "app.log"
    rotated = tmp_path / "app.log.2026-11-30"
    text = "".join(f"{i:08d} {os.urandom(24).hex()}\n" for i in range(600_000))  # ~35 MB
    rotated.write_text(text)
    # The very command the compressor's worker thread runs.
    child = subprocess.Popen([sys.executable, "-I", "-S", _compress.__file__, str(rotated)])
    tmp = Path(f"{rotated}.gz.tmp")
    deadline = time.monotonic() + 30
    while not (tmp.exists() and tmp.stat().st_size > 0):
        assert time.monotonic() < deadline, "compression never started"
        assert child.poll() is None, "the compression ended before it could be killed"
        time.sleep(0.005)  # polling for the file to appear; bounded by the deadline
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert rotated.read_text() == text  # the plain file is whole
    assert not Path(f"{rotated}.gz").exists()  # and no .gz, whole or not
    # A second rotated file got as far as the replace, not the unlink.
    done = tmp_path / "app.log.2026-11-29"
    done.write_text("done\n")
    Path(f"{done}.gz").write_bytes(gzip.compress(b"done\n"))
    handler = sink(base, when="D", compress="gzip")
    assert handler.compressor is not None
    assert handler.compressor.wait_idle(timeout=60)
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.log", "app.log.2026-11-29.gz", "app.log.2026-11-30.gz"
    ]
    assert gzip.decompress(Path(f"{rotated}.gz").read_bytes()).decode() == text


def test_start_leaves_a_file_a_live_compressor_holds(tmp_path: Path) -> None:
    """A compressor left running by a dead writer keeps its file; the next start waits its turn."""
    rotated = tmp_path / "app.log.2026-11-30"
    rotated.write_text("being compressed\n")
    Path(f"{rotated}.gz.tmp").write_bytes(b"partial")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDS_LOCK, str(rotated)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    try:
        handler = sink(tmp_path / "app.log", when="D", compress="gzip")
        handler.close()
        assert Path(f"{rotated}.gz.tmp").read_bytes() == b"partial"  # not the start's to remove
        assert rotated.read_text() == "being compressed\n"
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


HOLDS_LOCK = r"""
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)  # held until the test kills it
"""
