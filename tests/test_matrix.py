"""The coverage matrix: every way Python starts processes, under every start method, both hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SCRIPTS, check_records, last_json, read_lines, run_python

METHODS = ["fork", "spawn", "forkserver"]


def run_scenario(tmp_path: Path, name: str, method: str, host: str = "thread") -> None:
    """Run a scenario in a fresh interpreter and check its sink record by record."""
    log = tmp_path / "out.log"
    proc = run_python(str(SCRIPTS / "scenario.py"), name, method, host, str(log))
    report = last_json(proc.stdout)
    assert report["flushed"] is True
    assert report["stats"]["cut_frames"] == 0
    assert report["stats"]["bad_frames"] == 0
    assert "Traceback" not in proc.stderr, proc.stderr
    check_records(read_lines(log), report["expected"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("host", ["thread", "process"])
def test_pool_left_with_terminate(tmp_path: Path, method: str, host: str) -> None:
    """A Pool left through `with` (terminate) delivers every worker record exactly once."""
    run_scenario(tmp_path, "pool", method, host)


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor(tmp_path: Path, method: str) -> None:
    """ProcessPoolExecutor workers' records all arrive, once each, in order."""
    run_scenario(tmp_path, "executor", method)


@pytest.mark.parametrize("method", METHODS)
def test_plain_process(tmp_path: Path, method: str) -> None:
    """Plain Process children's records all arrive, once each, in order."""
    run_scenario(tmp_path, "process", method)


@pytest.mark.parametrize("method", METHODS)
def test_nested_pools(tmp_path: Path, method: str) -> None:
    """A pool created inside a child process delivers its records like a top-level one."""
    run_scenario(tmp_path, "nested", method)


@pytest.mark.parametrize("host", ["thread", "process"])
def test_subprocess_python_child(tmp_path: Path, host: str) -> None:
    """A `subprocess` Python child joins through the start-up hook with no code of its own."""
    run_scenario(tmp_path, "subprocess", "spawn", host)


def test_joblib_loky_workers(tmp_path: Path) -> None:
    """Joblib's loky workers join through the start-up hook."""
    run_scenario(tmp_path, "joblib", "spawn")


@pytest.mark.parametrize("method", METHODS)
def test_threads_and_workers_at_once(tmp_path: Path, method: str) -> None:
    """The main process, extra threads and pool workers logging at once lose nothing."""
    run_scenario(tmp_path, "threads", method)


@pytest.mark.parametrize("method", METHODS)
def test_sigkilled_worker_loses_nothing_it_logged(tmp_path: Path, method: str) -> None:
    """Records whose logging calls returned survive a SIGKILL of their process."""
    run_scenario(tmp_path, "sigkill", method)
