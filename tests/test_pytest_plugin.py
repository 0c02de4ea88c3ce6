"""The pytest plugin: real pytest sessions, in subprocesses, whose own tests check caplog.

Each test here writes a test file, runs ``python -m pytest`` on it in a fresh
interpreter (bounded twice: pytest-timeout inside, ``subprocess`` timeout
outside) and reads the inner session's summary: the inner tests' own
assertions on ``caplog.records`` are what is checked.  Nothing is mocked: the
inner sessions start real spawn, forkserver, fork and ``subprocess`` children,
real xdist workers, and ``logfunnel run`` writes a real file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import read_lines

INNER_TIMEOUT = 60  # each inner test (pytest-timeout in the inner session)
OUTER_TIMEOUT = 110  # each inner session, below this file's own 120 s

# Children of every kind, each logging records the inner test then finds in caplog.
CHILDREN = r"""
import logging
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

log = logging.getLogger("kid")
SUBPROCESS = (
    "import logging, sys; log = logging.getLogger('kid'); "
    "[log.info('%s %d', sys.argv[1], i) for i in range(int(sys.argv[2]))]; "
    "log.debug('%s debug', sys.argv[1]); log.warning('%s warning', sys.argv[1])"
)


def child(tag, n):
    for i in range(n):
        log.info("%s %d", tag, i)
    log.debug("%s debug", tag)
    log.warning("%s warning", tag)


def start(method, tag, n):
    if method == "subprocess":
        return subprocess.Popen([sys.executable, "-c", SUBPROCESS, tag, str(n)])
    process = mp.get_context(method).Process(target=child, args=(tag, n))
    process.start()
    return process


def wait(kid):
    if isinstance(kid, subprocess.Popen):
        assert kid.wait(timeout=30) == 0
    else:
        kid.join(30)
        assert kid.exitcode == 0
    return kid.pid


def kid_messages(records):
    by_pid = {}
    for record in records:
        if record.name == "kid":
            by_pid.setdefault(record.process, []).append(record.getMessage())
    return by_pid


def test_this_process_has_its_own_funnel(funnel):
    assert funnel.owner
    assert os.environ["LOGFUNNEL_ADDRESS"] == funnel.address
    if os.environ.get("EXPECT_XDIST"):
        assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork", "subprocess"])
def test_children_reach_caplog(method, caplog, funnel):
    caplog.set_level(logging.INFO)  # children started after this log at INFO too
    kids = [start(method, f"{method}-{k}", 40) for k in range(2)]
    pids = [wait(kid) for kid in kids]
    assert funnel.flush()
    by_pid = kid_messages(caplog.records)
    assert sorted(by_pid) == sorted(pids)
    for k, pid in enumerate(pids):
        # every record once, in the order that child logged them; DEBUG stayed below the level
        tag = f"{method}-{k}"
        assert by_pid[pid] == [f"{tag} {i}" for i in range(40)] + [f"{tag} warning"]


@pytest.mark.parametrize("method", ["spawn", "fork", "subprocess"])
def test_levels_are_the_tests_own(method, caplog, funnel):
    # No set_level here: whatever an earlier test set was put back (WARNING).
    pid = wait(start(method, "quiet", 3))
    assert funnel.flush()
    assert kid_messages(caplog.records) == {pid: ["quiet warning"]}
    caplog.set_level(logging.DEBUG, logger="kid")
    pid = wait(start(method, "loud", 1))
    assert funnel.flush()
    assert kid_messages(caplog.records)[pid] == ["loud 0", "loud debug", "loud warning"]


@pytest.fixture
def records_of_the_call(caplog):
    yield
    # The plugin flushed at the end of the call phase: the child's records are the call's,
    # though the test returned while the writer still had a socket buffer of them to read.
    want = [f"late {i}" for i in range(5000)] + ["late warning"]
    assert list(kid_messages(caplog.get_records("call")).values()) == [want]


@pytest.fixture(scope="module")
def pool():
    with mp.get_context("spawn").Pool(1) as pool:
        yield pool


def test_without_flush_the_records_are_the_calls(caplog, pool, records_of_the_call):
    caplog.set_level(logging.INFO)
    pool.apply(child, ("late", 5000))  # a live worker: nothing waits for its records at exit
"""


def _env(**extra: str) -> dict[str, str]:
    """Return an inner session's environment: nothing of this run's funnel, xdist or pytest."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOGFUNNEL_", "PYTEST_", "PYTHONPATH"))
    }
    env.update(extra)
    return env


def _session(
    tmp_path: Path,
    files: dict[str, str],
    *args: str,
    ini: str = "",
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = ("-m", "pytest"),
) -> subprocess.CompletedProcess[str]:
    """Run one inner pytest session in ``tmp_path`` on ``files``; return it finished."""
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\ntimeout = {INNER_TIMEOUT}\nfilterwarnings = error\n{ini}", encoding="utf-8"
    )
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    # The inner session's TMPDIR is short, not under tmp_path: the forkserver binds
    # a socket at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and under an xdist worker
    # whose base directory number reached 100 that path was 108 bytes, over the
    # 107 a Unix socket's path may have ("AF_UNIX path too long").
    tmpdir = Path(tempfile.mkdtemp(prefix="lfpp-"))
    try:
        proc = subprocess.run(
            [sys.executable, *prefix, "-p", "no:cacheprovider", "-q", *args],
            capture_output=True,
            text=True,
            timeout=OUTER_TIMEOUT,
            env=_env(TMPDIR=str(tmpdir), **(env or {})),
            cwd=tmp_path,
            check=False,
        )
        # Shut down at pytest_unconfigure: the funnel's private directory is gone.
        assert not list(tmpdir.glob("logfunnel-*")), _output(proc)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return proc


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _passed(proc: subprocess.CompletedProcess[str], count: int) -> None:
    """Assert the inner session passed ``count`` tests, and nothing else happened."""
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, _output(proc)
    assert re.fullmatch(rf"{count} passed in [0-9.]+s( \([0-9:]+\))?", summary), _output(proc)
    # No "cannot reach the log writer" or other complaint of ours.
    assert "logfunnel" not in proc.stderr, _output(proc)


CHILDREN_TESTS = 1 + 4 + 3 + 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--logfunnel",), id="plain"),
        pytest.param(("--logfunnel", "-s"), id="no-capture"),
        pytest.param(("--logfunnel", "--capture=sys"), id="capture-sys"),
    ],
)
def test_caplog_sees_every_kind_of_child(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = _session(tmp_path, {"test_kids.py": CHILDREN}, *args)
    _passed(proc, CHILDREN_TESTS)


def test_caplog_sees_children_in_each_xdist_worker(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    proc = _session(
        tmp_path, {"test_kids.py": CHILDREN}, "--logfunnel", "-n", "2", env={"EXPECT_XDIST": "1"}
    )
    _passed(proc, CHILDREN_TESTS)


def test_ini_turns_it_on_and_o_turns_it_off(tmp_path: Path) -> None:
    inner = (
        "import os\n"
        "def test_state():\n"
        "    assert ('LOGFUNNEL_ADDRESS' in os.environ) == (os.environ['WANT'] == 'on')\n"
    )
    files = {"test_state.py": inner}
    _passed(_session(tmp_path, files, ini="logfunnel = true\n", env={"WANT": "on"}), 1)
    off = _session(tmp_path, files, "-o", "logfunnel=false", ini="logfunnel = true\n",
                   env={"WANT": "off"})
    _passed(off, 1)


# Without the option: nothing of logfunnel runs, and a child's record is lost to
# caplog as it is without logfunnel installed at all.
OFF = r"""
import logging
import multiprocessing as mp
import os
import sys


def child():
    logging.getLogger("kid").warning("lost")


def test_nothing_is_installed(caplog):
    assert not [k for k in os.environ if k.startswith("LOGFUNNEL_")]
    assert "logfunnel._funnel" not in sys.modules
    assert "logfunnel._core.route" not in sys.modules
    assert logging.Logger.callHandlers.__module__ == "logging"
    process = mp.get_context("spawn").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert not [r for r in caplog.records if r.name == "kid"]


def test_fails_for_the_report(caplog):
    logging.getLogger("own").warning("shown in the report")
    assert False
"""


def _normalised(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x...", re.sub(r"in [0-9.]+s", "in Ns", text))


def test_without_the_option_a_run_is_unchanged(tmp_path: Path) -> None:
    files = {"test_off.py": OFF}
    without = _session(tmp_path, files, "-p", "no:logfunnel")
    default = _session(tmp_path, files)
    assert "1 failed, 1 passed" in default.stdout, _output(default)
    assert _normalised(default.stdout) == _normalised(without.stdout)
    assert default.stderr == without.stderr
    assert default.returncode == without.returncode == 1


OWN_INSTALL = r"""
import pytest

import logfunnel


def test_calls_install():
    logfunnel.install(file="own.log")


def test_expects_it_to_raise():
    with pytest.raises(RuntimeError, match="already installed"):
        logfunnel.install()
"""


def test_a_tests_own_install_fails_saying_why(tmp_path: Path) -> None:
    proc = _session(tmp_path, {"test_own.py": OWN_INSTALL}, "--logfunnel")
    assert proc.returncode == 1, _output(proc)
    assert "1 failed, 1 passed" in proc.stdout, _output(proc)
    assert "installed this process's funnel for the whole run" in proc.stdout, _output(proc)
    assert "use the `funnel` fixture" in proc.stdout, _output(proc)


# `logfunnel run --file F -m pytest`: every record of every test, and of its
# children, reaches F -- under xdist too (workers are execnet popen children,
# which inherit the environment and join by themselves).
RUN_FILE = r"""
import logging
import multiprocessing as mp
import os

import pytest

import logfunnel


def child(i):
    logging.getLogger("kid").warning("rec child %d", i)


@pytest.mark.parametrize("i", range(110))
def test_logs(i, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("t").info("rec own-info %d", i)
    logging.getLogger("t").warning("rec own-warning %d", i)
    if i % 10 == 0:
        process = mp.get_context("spawn").Process(target=child, args=(i,))
        process.start()
        process.join(30)
        assert process.exitcode == 0
        if os.environ.get("EXPECT_CAPLOG"):
            assert logfunnel.current().flush()
            assert [r.getMessage() for r in caplog.records if r.name == "kid"] == [f"rec child {i}"]
"""


@pytest.mark.parametrize(
    ("args", "expect_caplog"),
    [
        pytest.param((), False, id="plain"),
        pytest.param(("--logfunnel",), False, id="plugin"),
        pytest.param(("-n", "2"), False, id="xdist"),
        pytest.param(("--logfunnel", "-n", "2"), True, id="xdist-plugin"),
    ],
)
def test_logfunnel_run_file_gets_every_test_record(
    tmp_path: Path, args: tuple[str, ...], expect_caplog: bool
) -> None:
    if "-n" in args:
        pytest.importorskip("xdist")
    log = tmp_path / "all.log"
    prefix = (
        "-m", "logfunnel", "run", "--file", str(log),
        "--fmt", "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s",
        "--", "-m", "pytest",  # the `--` form: it ran a script named "-m" before
    )
    env = {"EXPECT_CAPLOG": "1"} if expect_caplog else {}
    proc = _session(tmp_path, {"test_run.py": RUN_FILE}, *args, prefix=prefix, env=env)
    _passed(proc, 110)
    messages = [line.message for line in read_lines(log) if line.message.startswith("rec ")]
    want = [f"rec own-{kind} {i}" for i in range(110) for kind in ("info", "warning")]
    want += [f"rec child {i}" for i in range(0, 110, 10)]
    assert sorted(messages) == sorted(want)
