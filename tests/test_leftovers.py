"""Leftover funnel directories: install() removes those of dead installers, and nothing else.

Every funnel here is a real one, in a real process, with ``TMPDIR`` pointing at a
directory of the test's own; a directory's age is set with ``os.utime`` rather than
waited for.  ``install()`` also looks at ``/tmp`` (its fallback): only this user's
certainly dead funnel directories can go there too, which is the point.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import child_env, run_python
from logfunnel._core import rundir as _rundir

# An installer that says where its funnel is, then waits until its stdin closes.
# With --no-stacks it handles SIGUSR2 itself, so it has no stack file (see _stacks):
# only its socket tells that its funnel is alive.
INSTALLER = """
import signal, sys
import logfunnel
if "--no-stacks" in sys.argv:
    signal.signal(signal.SIGUSR2, lambda *_: None)
if "--process" in sys.argv:  # a writer process, with install()'s own file sink
    funnel = logfunnel.install(file=sys.argv[sys.argv.index("--process") + 1], host="process")
else:
    funnel = logfunnel.install()
print(funnel.address, flush=True)
sys.stdin.read()
print("shut down" if funnel.shutdown() else "shutdown failed", flush=True)
"""

CLEANER = "import logfunnel; logfunnel.install().shutdown()"

AN_HOUR_AGO = 3600.0


@pytest.fixture
def base() -> Iterator[Path]:
    """Return a directory of this test's own to serve as the children's TMPDIR.

    Not under ``tmp_path``: a socket path holds at most 107 bytes, and pytest's
    (``/tmp/pytest-of-USER/pytest-N/popen-gwN/<test name>/``) with this
    test's ``elsewhere/logfunnel-target00/writer.sock`` went over it once N
    reached 5 (``OSError: AF_UNIX path too long``).
    """
    directory = Path(tempfile.mkdtemp(prefix="lf-", dir="/tmp")) / "t"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory.parent, ignore_errors=True)


def _install_in(base: Path) -> None:
    """Run install() (and shutdown()) once in a fresh process whose TMPDIR is ``base``."""
    run_python("-c", CLEANER, env=child_env(TMPDIR=str(base)), timeout=60)


@contextmanager
def _installer(base: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Start INSTALLER with TMPDIR ``base``; yield it and its funnel directory once it runs."""
    with subprocess.Popen(
        [sys.executable, "-c", INSTALLER, *args],
        env=child_env(TMPDIR=str(base)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith("unix:"):
                proc.kill()
                _, err = proc.communicate(timeout=60)
                pytest.fail(f"the installer did not start: {line!r}\n{err}")
            directory = Path(line.strip().removeprefix("unix:")).parent
            assert directory.parent == base, f"{directory} is not in {base}"
            yield proc, directory
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)


def _killed_installer_dir(base: Path) -> Path:
    """Return the directory of a funnel whose installer was killed with SIGKILL."""
    with _installer(base) as (proc, directory):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert (directory / "writer.sock").is_socket()
    assert list((directory / "stacks").iterdir()), "the installer registered no stack file"
    return directory


def _age(path: Path, seconds: float = AN_HOUR_AGO) -> None:
    """Make ``path`` (never what a symlink points at) look untouched for ``seconds``."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _dead_socket(path: Path) -> None:
    """Leave a socket file nobody listens on at ``path``, as a killed writer does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def _fake_leftover(path: Path, mode: int = 0o700) -> Path:
    """Make a directory shaped like a dead funnel's: a dead socket, an empty stacks dir."""
    path.mkdir(mode)
    path.chmod(mode)  # mkdir's mode is cut by the umask
    (path / "stacks").mkdir(0o700)
    _dead_socket(path / "writer.sock")
    _age(path)
    return path


def _funnel_dirs(base: Path) -> set[str]:
    """Return the names of the logfunnel-* entries in ``base``."""
    return {entry.name for entry in base.iterdir() if entry.name.startswith("logfunnel-")}


def test_a_dead_old_directory_is_removed(base: Path) -> None:
    """The directory of an installer killed over a minute ago, with nothing listening, goes."""
    directory = _killed_installer_dir(base)
    _age(directory)
    _install_in(base)
    assert not directory.exists()
    assert _funnel_dirs(base) == set()  # the cleaner's own went at its shutdown


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_process_host_installers_directory_is_removed(
    base: Path, tmp_path: Path, how: signal.Signals
) -> None:
    """A writer process's directory holds a levels file too: still recognised as ours."""
    with _installer(base, "--process", str(tmp_path / "f.log")) as (proc, directory):
        proc.send_signal(how)
        proc.wait(timeout=60)
    assert list(directory.glob("levels*")), "no levels file: nothing to test"
    # The writer process drains and ends once its installer is gone.
    deadline = time.monotonic() + 60
    while _rundir.listening(str(directory / "writer.sock"), timeout=0.0) is not False:
        assert time.monotonic() < deadline, "the writer process outlived its installer"
        time.sleep(0.05)  # polling the socket: the writer's exit is the condition
    _age(directory)
    _install_in(base)
    assert not directory.exists()


def test_a_dead_but_fresh_directory_is_kept(base: Path) -> None:
    """A dead funnel's directory younger than the grace period may be one being set up: kept."""
    directory = _killed_installer_dir(base)
    contents = sorted(p.name for p in directory.rglob("*"))
    _install_in(base)
    assert directory.is_dir()
    assert sorted(p.name for p in directory.rglob("*")) == contents


@pytest.mark.parametrize("args", [(), ("--no-stacks",)], ids=["stack-file", "socket-only"])
def test_a_live_funnels_old_directory_is_kept(base: Path, args: tuple[str, ...]) -> None:
    """A live funnel's directory is kept however old, even when only its socket shows it lives."""
    with _installer(base, *args) as (proc, directory):
        has_stack_file = bool(list((directory / "stacks").iterdir()))
        assert has_stack_file == (not args)
        _age(directory)
        _install_in(base)
        assert (directory / "writer.sock").is_socket()
        out, err = proc.communicate(timeout=60)  # closes its stdin: it shuts down
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "shut down"
    assert not directory.exists()  # removed by its own shutdown()


def test_what_is_not_an_own_0700_funnel_directory_is_untouched(base: Path) -> None:
    """Dead-looking logfunnel-* entries that are not this user's 0700 funnel dirs stay as they are."""
    elsewhere = base.parent / "elsewhere"
    elsewhere.mkdir()
    target = _fake_leftover(elsewhere / "logfunnel-target00")
    kept = {
        "open": _fake_leftover(base / "logfunnel-open0755", mode=0o755),
        "other content": _fake_leftover(base / "logfunnel-notes___"),
        "longer name": _fake_leftover(base / "logfunnel-repro-abcdefgh"),
        "file": base / "logfunnel-regular_",
        "symlink": base / "logfunnel-symlink_",
    }
    (kept["other content"] / "notes.txt").write_text("someone's own\n")
    _age(kept["other content"])
    kept["file"].write_text("not a directory\n")
    _age(kept["file"])
    kept["symlink"].symlink_to(target, target_is_directory=True)
    _age(kept["symlink"])
    control = _fake_leftover(base / "logfunnel-control_")  # shows the cleanup did run
    before = {name: os.lstat(path) for name, path in kept.items()}

    _install_in(base)

    assert not control.exists()
    for name, path in kept.items():
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino, after.st_mtime) == (
            before[name].st_mode,
            before[name].st_ino,
            before[name].st_mtime,
        ), name
    assert (kept["open"] / "writer.sock").is_socket()
    assert (kept["other content"] / "writer.sock").is_socket()
    assert kept["symlink"].is_symlink()
    assert (target / "writer.sock").is_socket()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_another_users_directory_is_untouched(base: Path) -> None:
    """A dead-looking 0700 funnel directory of another user is never removed."""
    foreign = _fake_leftover(base / "logfunnel-foreign_")
    for path in (foreign / "writer.sock", foreign / "stacks", foreign):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    _age(foreign)
    control = _fake_leftover(base / "logfunnel-control_")
    _install_in(base)
    assert not control.exists()
    assert (foreign / "writer.sock").is_socket()
    assert foreign.stat().st_uid == 65534


def test_one_install_examines_a_bounded_number_of_directories(base: Path) -> None:
    """One install() removes at most _LEFTOVER_LIMIT leftovers; the next one takes the rest."""
    extra = 20
    for i in range(_rundir._LEFTOVER_LIMIT + extra):
        _fake_leftover(base / f"logfunnel-bound{i:03d}")
    _install_in(base)
    assert len(_funnel_dirs(base)) == extra
    _install_in(base)
    assert _funnel_dirs(base) == set()
