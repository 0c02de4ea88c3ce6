"""Which host install() picks by default, and what that leaves of the program's own process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from conftest import child_env, last_json

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("no_funnel_env")

# A fresh interpreter (pytest's own threads would count): install() as a user first
# writes it, then fork a child that logs, with every warning shown.
FORKS = r"""
import json, logging, os, sys
import logfunnel

def threads():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Threads:")).split()[1])

options = json.loads(sys.argv[2])
funnel = logfunnel.install(**options)
host, count = funnel.host, threads()
pid = os.fork()
if pid == 0:
    logging.getLogger("child").warning("from the fork")
    logfunnel.current().flush(timeout=30)
    os._exit(0)
os.waitpid(pid, 0)
logging.getLogger("parent").warning("from the parent")
assert funnel.flush(timeout=30)
funnel.shutdown()
print(json.dumps({"host": host, "threads": count}), flush=True)
"""


def _fork_under(tmp_path: Path, **options: object) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", FORKS, str(tmp_path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = last_json(proc.stdout)
    return result, proc.stderr


def test_own_sinks_get_a_writer_process_and_leave_the_program_one_thread(tmp_path: Path) -> None:
    """install(file=...) adds no thread here: a fork warns of none (Python 3.12+) and logs."""
    log = tmp_path / "app.log"
    result, stderr = _fork_under(tmp_path, file=str(log), fmt="%(name)s|%(message)s")
    assert result == {"host": "process", "threads": 1}
    assert "multi-threaded" not in stderr
    assert sorted(log.read_text().splitlines()) == ["child|from the fork", "parent|from the parent"]


@pytest.mark.parametrize("kind", ["adopt", "config"])
def test_the_programs_handlers_keep_the_writer_in_this_process(tmp_path: Path, kind: str) -> None:
    """Adopt mode and config= hand records to this process's handlers: a thread host."""
    log = tmp_path / "app.log"
    handler = {"class": "logging.FileHandler", "filename": str(log), "formatter": "f"}
    config = {
        "version": 1,
        "formatters": {"f": {"format": "%(name)s|%(message)s"}},
        "handlers": {"h": handler},
        "root": {"handlers": ["h"]},
    }
    options: dict[str, object] = {"config": config} if kind == "config" else {}
    result, _ = _fork_under(tmp_path, **options)
    assert result["host"] == "thread"
    if kind == "config":
        assert sorted(log.read_text().splitlines()) == [
            "child|from the fork",
            "parent|from the parent",
        ]


def test_an_explicit_host_is_kept(tmp_path: Path) -> None:
    """host="thread" with install()'s own sinks stays a thread host (one more thread)."""
    log = tmp_path / "app.log"
    result, _ = _fork_under(tmp_path, file=str(log), host="thread")
    assert result == {"host": "thread", "threads": 2}
