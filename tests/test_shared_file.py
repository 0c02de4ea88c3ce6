"""One writer per file: unrelated processes calling install(file=F) share F's writer.

Each test starts real, unrelated Python processes (none is another's child)
that each call ``install(file=F)``, drives them through stdin (every step is a
line it waits for: no sleeps) and reads F back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import child_env, run_python

# A job: install(file=F), say its role, then do what each line on stdin says.
JOB = r"""
import json, logging, os, sys
import logfunnel

tag, options = sys.argv[1], json.loads(sys.argv[2])
try:
    funnel = logfunnel.install(**options)
except ValueError as exc:
    print("refused", exc, flush=True)
    sys.exit(3)
print("owner" if funnel.owner else "joined", flush=True)
log = logging.getLogger("job")
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "log":
        for i in range(int(arg)):
            log.info("rec %s %d pc=%d", tag, i, i)
        print("logged", funnel.flush(10.0), flush=True)
    elif command == "flush":
        print("flushed", funnel.flush(5.0), flush=True)
    elif command == "role":
        print("owner" if funnel.owner or getattr(funnel, "_successor", None) else "joined",
              flush=True)
    elif command == "exit":
        print("shutdown", funnel.shutdown(), flush=True)
        break
"""

FMT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"


class Job:
    """One unrelated process that called install(file=F)."""

    def __init__(self, tag: str, env: dict[str, str], **options: object) -> None:
        """Start it: ``python -c JOB tag options``."""
        self.tag = tag
        self.proc = subprocess.Popen(
            [sys.executable, "-c", JOB, tag, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def line(self) -> str:
        """Return the next line it printed."""
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        assert got, f"{self.tag} ended: {self.proc.wait(30)} {self.stderr()}"
        return got

    def send(self, text: str) -> None:
        """Tell it what to do next."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        """Return what it wrote on standard error, once it has ended."""
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def finish(self) -> str:
        """Make it shut down and exit; return what shutdown() said."""
        self.send("exit")
        said = self.line()
        assert self.proc.wait(30) == 0, self.stderr()
        return said


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Return an environment with a TMPDIR of the test's own (its registry, its funnels)."""
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    return child_env(TMPDIR=str(tmpdir))


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
        job.proc.wait(30)
        for stream in (job.proc.stdin, job.proc.stdout, job.proc.stderr):
            if stream is not None:
                stream.close()


def _records(*paths: Path) -> list[tuple[str, int]]:
    out = []
    for path in paths:
        for raw in path.read_text(encoding="utf-8").splitlines():
            message = raw.split("|", 4)[4]
            _, tag, index, _ = message.split(" ")
            out.append((tag, int(index)))
    return out


def test_unrelated_processes_share_one_writer_and_rotation_loses_nothing(
    tmp_path: Path, env: dict[str, str], jobs: list[Job]
) -> None:
    log = tmp_path / "shared.log"
    options = {"file": str(log), "level": "INFO", "fmt": FMT, "max_bytes": 20_000,
               "backups": 200}
    # Started together: they race for F, and exactly one wins.
    jobs += [Job(tag, env, **options) for tag in ("a", "b", "c")]
    roles = {job.tag: job.line() for job in jobs}
    assert sorted(roles.values()) == ["joined", "joined", "owner"], roles
    for job in jobs:
        job.send("log 3000")
    for job in jobs:
        assert job.line() == "logged True"
    # The joined ones leave first; the owner's writer writes until it leaves.
    for job in sorted(jobs, key=lambda j: roles[j.tag] == "owner"):
        assert job.finish() == "shutdown True"
    files = [log, *sorted(tmp_path.glob("shared.log.*"), key=lambda p: int(p.suffix[1:]))]
    assert len(files) > 5  # it rotated, many times, under all three
    # One writer rotates: no file outgrows max_bytes (with a writer per process each
    # rotates on its own count while the others append to the renamed file: 3x here).
    assert max(path.stat().st_size for path in files) <= 20_000
    got = _records(*files)
    # Each record once: with a writer per process their rotations race and lose lines.
    assert sorted(got) == sorted((t, i) for t in "abc" for i in range(3000))
    for tag in "abc":  # in order, across the rotated files (oldest first)
        mine = [i for path in reversed(files) for t, i in _records(path) if t == tag]
        assert mine == list(range(3000))
    # Nothing is left behind: no joined process's directory, no registry.
    assert list(Path(env["TMPDIR"]).iterdir()) == []


def test_when_the_writers_process_dies_the_next_install_takes_over(
    tmp_path: Path, env: dict[str, str], jobs: list[Job]
) -> None:
    log = tmp_path / "taken.log"
    options = {"file": str(log), "level": "INFO", "fmt": FMT}
    first = Job("first", env, **options)
    jobs.append(first)
    assert first.line() == "owner"
    first.send("log 100")
    assert first.line() == "logged True"
    first.proc.send_signal(signal.SIGKILL)  # no shutdown: the kernel drops its lock
    assert first.proc.wait(30) == -signal.SIGKILL
    second = Job("second", env, **options)
    jobs.append(second)
    assert second.line() == "owner"
    joined = Job("joined", env, **options)
    jobs.append(joined)
    assert joined.line() == "joined"
    for job in (second, joined):
        job.send("log 100")
        assert job.line() == "logged True"
    assert joined.finish() == "shutdown True"
    assert second.finish() == "shutdown True"
    # What the dead writer had written is still there; the new one appended.
    got = _records(log)
    assert got[:100] == [("first", i) for i in range(100)]
    assert sorted(got[100:]) == sorted((t, i) for t in ("second", "joined") for i in range(100))


def test_other_sink_options_for_the_same_file_are_refused(
    tmp_path: Path, env: dict[str, str], jobs: list[Job]
) -> None:
    log = tmp_path / "one.log"
    owner = Job("owner", env, file=str(log), fmt=FMT)
    jobs.append(owner)
    assert owner.line() == "owner"
    # Another level is this process's own business; another format or host is not.
    same = Job("same", env, file=str(log), fmt=FMT, level="DEBUG", on_full="drop")
    others = [Job("other", env, file=str(log), fmt="%(message)s"),
              Job("host", env, file=str(log), fmt=FMT, host="process")]
    jobs += [same, *others]
    assert same.line() == "joined"
    for other in others:
        refused = other.line()
        assert refused.startswith("refused"), refused
        assert f"is written by the funnel of process {owner.proc.pid}" in refused
        assert other.proc.wait(30) == 3
    assert same.finish() == "shutdown True"
    assert owner.finish() == "shutdown True"


def test_a_registry_that_is_not_ours_alone_is_never_used(
    tmp_path: Path, env: dict[str, str], jobs: list[Job]
) -> None:
    # Someone made the registry's name first, open to all (as another user could in /tmp).
    registry = Path(env["TMPDIR"]) / f"logfunnel-files-{os.geteuid()}"
    registry.mkdir()
    registry.chmod(0o777)
    if os.geteuid() == 0:
        os.chown(registry, 65534, 65534)  # and owned by nobody
    log = tmp_path / "private.log"
    first, second = Job("first", env, file=str(log)), Job("second", env, file=str(log))
    jobs += [first, second]
    # Nothing read from it, nothing joined through it: each writes F itself, as before.
    assert first.line() == second.line() == "owner"
    for job in (first, second):
        job.finish()
        assert "is not a private directory of this user's" in job.stderr()
    assert list(registry.iterdir()) == []


# A process that said why it does not share F, then a forked child installing F itself.
SAYS_IN_CHILD = r"""
import os, sys
import logfunnel

log = sys.argv[1]
logfunnel.install(file=log).shutdown()
pid = os.fork()
if pid == 0:
    logfunnel.install(file=log).shutdown()
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_says_for_itself_that_it_does_not_share(
    tmp_path: Path, env: dict[str, str]
) -> None:
    registry = Path(env["TMPDIR"]) / f"logfunnel-files-{os.geteuid()}"
    registry.mkdir()
    registry.chmod(0o777)
    proc = run_python("-c", SAYS_IN_CHILD, str(tmp_path / "own.log"), env=env)
    # The parent's line was the parent's (state.reset_after_fork): the child says it too.
    assert proc.stderr.count("is not a private directory of this user's") == 2, proc.stderr


@pytest.mark.parametrize("host", ["thread", "process"])
def test_when_the_writers_process_dies_a_joined_process_takes_over(
    tmp_path: Path, env: dict[str, str], jobs: list[Job], host: str
) -> None:
    log = tmp_path / "kept.log"
    options = {"file": str(log), "level": "INFO", "fmt": FMT, "max_bytes": 20_000,
               "backups": 100, "host": host}
    first = Job("first", env, **options)
    jobs.append(first)
    assert first.line() == "owner"
    waiting = [Job(tag, env, **options) for tag in ("b", "c")]
    jobs += waiting
    for job in (first, *waiting):
        if job is not first:
            assert job.line() == "joined"
        job.send("log 100")
        assert job.line() == "logged True"
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(30) == -signal.SIGKILL
    # Each joined process's watcher wakes as the kernel drops the dead process's lock:
    # one takes F over, the other follows. Wait for both to reach a writer again.
    for job in waiting:
        for _ in range(3):  # each flush waits up to 5 s for the takeover: bounded
            job.send("flush")
            if job.line() == "flushed True":
                break
        else:
            pytest.fail(f"{job.tag} never reached a writer again")
    roles = {}
    for job in waiting:
        job.send("role")
        roles[job.tag] = job.line()
    assert sorted(roles.values()) == ["joined", "owner"], roles
    late = Job("late", env, **options)  # a new install(file=F) joins the one that took over
    jobs.append(late)
    assert late.line() == "joined"
    for job in (*waiting, late):
        job.send("log 100")
        assert job.line() == "logged True"
    for job in sorted([*waiting, late], key=lambda j: roles.get(j.tag) == "owner"):
        assert job.finish() == "shutdown True"
    files = [log, *sorted(tmp_path.glob("kept.log.*"), key=lambda p: int(p.suffix[1:]))]
    got = _records(*files)
    want = [(t, i) for t in ("first", "b", "c") for i in range(100)]
    want += [(t, i) for t in ("b", "c", "late") for i in range(100)]
    # Nothing already written was lost, and nothing logged after the takeover was.
    assert sorted(got) == sorted(want)
    assert max(path.stat().st_size for path in files) <= 20_000
    # Left: the SIGKILLed writer's own directory only (README, Limits); no registry.
    assert len(list(Path(env["TMPDIR"]).iterdir())) == 1
    assert not list(Path(env["TMPDIR"]).glob("logfunnel-files-*"))
