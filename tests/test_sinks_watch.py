"""``watch=True``: the file sink reopens its file after logrotate moved it, or after it was removed.

The real-process test runs Debian's ``logrotate`` (installed with ``apt-get`` when
missing and possible, else the test skips saying why) twice against a file that
spawn and fork children are logging to through the writer, under both hosts,
and checks every record exactly once across ``app.log``, ``app.log.1`` and
``app.log.2.gz``.  The in-process tests use ``FileSink`` on real files.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Line, check_records, last_json
from logfunnel.sinks.files import FileSink

HOSTS = ["thread", "process"]


def logrotate() -> str:
    """Return logrotate's path, installing Debian's package if it is missing and we can."""
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("logrotate is not installed, and apt-get (as root) is not available")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "logrotate"],
            capture_output=True, timeout=300, check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"logrotate is not installed and apt-get install failed: {exc}")
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if not found:
        pytest.skip("apt-get installed logrotate, but it is not on PATH")
    return found


PROGRAM = r"""
import json, logging, multiprocessing, os, sys
import logfunnel

FMT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"

def work(tag, stop, count, parent):
    log = logging.getLogger(f"w.{tag}")
    i = 0
    while not os.path.exists(stop) and os.getppid() == parent:  # never outlive the test
        for _ in range(20):
            log.info("rec %s %d pc=%d", tag, i, i)
            i += 1
        count.value = i
        multiprocessing.Event().wait(0.002)  # a steady trickle, not a flood

if __name__ == "__main__":
    path, host, stop = sys.argv[1:4]
    funnel = logfunnel.install(file=path, fmt=FMT, level="INFO", host=host, watch=True)
    children, counts = [], []
    for k, method in enumerate(("spawn", "fork")):
        ctx = multiprocessing.get_context(method)
        count = ctx.Value("q", 0)
        child = ctx.Process(target=work, args=(f"p{k}", stop, count, os.getpid()))
        child.start()
        children.append(child)
        counts.append(count)
    print("started", flush=True)
    for child in children:
        child.join(120)
        assert child.exitcode == 0, child.exitcode
    assert funnel.flush(timeout=60)
    funnel.shutdown()
    print(json.dumps({f"p{k}": c.value for k, c in enumerate(counts)}), flush=True)
"""

CONFIG = """{path} {{
    rotate 5
    create
    compress
    delaycompress
    missingok
}}
"""


def lines_of(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8").splitlines()


def wait_for(condition: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.02)  # polling a file; bounded by the deadline


def parse(lines: list[str]) -> list[Line]:
    out = []
    for raw in lines:
        parts = raw.split("|", 4)
        assert len(parts) == 5, f"torn line: {raw!r}"
        assert parts[0].isdigit(), f"torn line: {raw!r}"
        out.append(Line(int(parts[0]), parts[1], parts[2], parts[3], parts[4]))
    return out


@pytest.mark.parametrize("host", HOSTS)
def test_logrotate_moves_the_file_and_every_record_lands_once(tmp_path: Path, host: str) -> None:
    binary = logrotate()
    log, stop = tmp_path / "app.log", tmp_path / "stop"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(CONFIG.format(path=log))
    conf.chmod(0o644)  # logrotate refuses a group- or world-writable configuration
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    script = tmp_path / "watched.py"  # a file: spawn children import its main module
    script.write_text(PROGRAM)
    program = subprocess.Popen(
        [sys.executable, str(script), str(log), host, str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert program.stdout is not None
        assert program.stdout.readline() == "started\n"
        wait_for("records in app.log", lambda: len(lines_of(log)) > 200)
        for run in (1, 2):
            before = len(lines_of(log))
            subprocess.run(
                [binary, "-f", "-s", str(tmp_path / "state"), str(conf)],
                check=True, capture_output=True, timeout=60,
            )
            assert (tmp_path / "app.log.1").exists(), f"logrotate run {run} moved nothing"
            # The sink reopened app.log (logrotate's "create" made it empty) and writes there.
            wait_for(f"records in the new app.log after run {run}",
                     lambda: len(lines_of(log)) > 100)
            assert before > 0
        stop.write_text("")
        out, err = program.communicate(timeout=120)
    finally:
        stop.write_text("")  # the children end at their next burst
        if program.poll() is None:
            program.kill()
            program.communicate(timeout=60)
    assert program.returncode == 0, err
    counts = last_json(out)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app.log"))
    assert names == ["app.log", "app.log.1", "app.log.2.gz"], names
    every = [
        *lines_of(tmp_path / "app.log.2.gz"), *lines_of(tmp_path / "app.log.1"), *lines_of(log)
    ]
    check_records(parse(every), counts)


def test_a_removed_file_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    handler = FileSink(str(path), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.watch = True
    handler.watch_interval = 0.0  # check at every flush: no waiting for the second to pass
    handler.write_line("before")
    handler.flush()
    path.unlink()
    handler.write_line("after")
    handler.flush()
    handler.close()
    assert path.read_text() == "after\n"


def test_watch_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    """Within ``watch_interval`` of the last check, a moved file is not looked at: no stat."""
    path, moved = tmp_path / "app.log", tmp_path / "app.log.1"
    handler = FileSink(str(path), encoding="utf-8")
    handler.watch = True
    handler.watch_interval = 3600.0
    handler.write_line("one")
    handler.flush()  # the first flush checks (and finds the file in place)
    path.rename(moved)
    handler.write_line("two")
    handler.flush()  # within the hour: not checked, lands in the moved file, whole
    handler.watch_interval = 0.0
    handler.write_line("three")
    handler.flush()  # checked: reopened, the kept line goes to the new file
    handler.close()
    assert moved.read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"
