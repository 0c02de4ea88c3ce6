"""Shared helpers: run real Python children, and read sinks back record by record."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logfunnel._core import protocol as _protocol

SCRIPTS = Path(__file__).parent / "scripts"


def last_json(stdout: str) -> Any:
    """Return what a program printed as JSON on the last line of ``stdout`` (its report)."""
    return json.loads(stdout.strip().splitlines()[-1])


def child_env(**extra: str) -> dict[str, str]:
    """Return the environment for a child Python without any funnel of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGFUNNEL_")}
    env.update(extra)
    return env


def run_python(
    *args: str,
    timeout: float = 90,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in a fresh interpreter, bounded by ``timeout``, capturing output."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else child_env(),
        cwd=cwd,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"child exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


# A funnel in a fresh interpreter (install() with file= and host=, or a config= tree
# for "config"): prints its address, waits for a line on stdin, logs one record of
# its own, flushes and prints its stats (tests/test_lines.py, tests/test_pipe.py).
FUNNEL_SERVER = """
import dataclasses
import json, logging, sys
import logfunnel
if sys.argv[2] == "config":  # the writer hands records to handlers it cannot tell senders of
    handler = {"class": "logging.FileHandler", "filename": sys.argv[1], "formatter": "f"}
    funnel = logfunnel.install(config={
        "version": 1,
        "formatters": {"f": {"format": "%(name)s|%(message)s"}},
        "handlers": {"h": handler},
        "root": {"handlers": ["h"], "level": "INFO"},
    })
else:
    funnel = logfunnel.install(file=sys.argv[1], host=sys.argv[2], fmt="%(name)s|%(message)s")
print(funnel.address, flush=True)
sys.stdin.readline()
logging.getLogger("after").warning("still here")
assert funnel.flush(timeout=30)
stats = dataclasses.asdict(funnel.stats())
funnel.shutdown()
print(json.dumps(stats), flush=True)
"""


def start_funnel_server(log: Path, host: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``FUNNEL_SERVER`` writing to ``log``; return it and its address."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FUNNEL_SERVER, str(log), host],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_funnel_server(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Let ``start_funnel_server``'s funnel finish; return its stats."""
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err
    stats: dict[str, Any] = last_json(out)
    return stats


@dataclass
class Line:
    """One record line of the scenario format ``pid|process|logger|level|message``."""

    pid: int
    process: str
    logger: str
    level: str
    message: str


def read_lines(*paths: Path) -> list[Line]:
    """Parse every scenario-format line of ``paths``; fail on a torn line."""
    lines = []
    for path in paths:
        for raw in path.read_text(encoding="utf-8").splitlines():
            parts = raw.split("|", 4)
            assert len(parts) == 5, f"torn line in {path}: {raw!r}"
            assert parts[0].isdigit(), f"torn line in {path}: {raw!r}"
            lines.append(Line(int(parts[0]), parts[1], parts[2], parts[3], parts[4]))
    return lines


def check_records(lines: list[Line], expected: dict[str, int]) -> None:
    """Assert each ``rec TAG I pc=N`` record arrived exactly once and per-process order held."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    last_pc: dict[tuple[int, str], int] = {}
    for line in lines:
        if not line.message.startswith("rec "):
            continue
        _, tag, index, pc = line.message.split(" ")
        seen[(tag, int(index))] += 1
        counter = int(pc.removeprefix("pc="))
        # Each logger of a process counts up (a forked child continues its
        # parent's count): within one (pid, logger), strictly increasing.
        key = (line.pid, line.logger)
        assert counter > last_pc.get(key, -1), f"out of order in {key}: {line}"
        last_pc[key] = counter
    want = {(tag, i) for tag, n in expected.items() for i in range(n)}
    missing = sorted(want - set(seen))
    extra = sorted(set(seen) - want)
    duplicated = sorted(k for k, n in seen.items() if n > 1)
    assert not missing, f"{len(missing)} records lost, e.g. {missing[:5]}"
    assert not duplicated, f"{len(duplicated)} records duplicated, e.g. {duplicated[:5]}"
    assert not extra, f"unexpected records {extra[:5]}"


@pytest.fixture
def no_funnel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure no funnel variable from outside leaks into a test."""
    for key in list(os.environ):
        if key.startswith("LOGFUNNEL_"):
            monkeypatch.delenv(key)


def debian_tool(package: str, *names: str, timeout: float = 600) -> str:
    """Return the path of a program from Debian's ``package``, installing it if missing; else skip.

    ``names`` are the program's names to look for (default: the package's).  Installs
    with apt-get as root, once more after ``apt-get update`` if the package lists are
    stale; skips with the reason where that is impossible.
    """
    import shutil  # noqa: PLC0415

    names = names or (package,)

    def found() -> str | None:
        return next((path for name in names if (path := shutil.which(name))), None)

    path = found()
    if path is not None:
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{package} is not installed, and apt-get (as root) cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=timeout, env=env,
                       check=False)  # fmt: skip
        proc = subprocess.run(install, capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)  # fmt: skip
    path = found()
    if path is None:
        pytest.skip(f"apt-get install {package} failed: {proc.stderr.strip()[-300:]}")
    return path


class Sender:
    """The connection a frame came on, as dispatch sees it (``_gate.Peer``)."""

    def __init__(self) -> None:
        """Start with no site or thread defined."""
        self.tables = _protocol.Tables()

    def describe(self) -> str:
        """Name the process as the writer's reports do."""
        return "process 1234 (test)"
