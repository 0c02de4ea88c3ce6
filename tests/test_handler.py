"""The sending side keeps nothing of a record once its logging call has returned."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import run_python

KEEPS_NOTHING = """
    import gc, logging, os, sys, weakref
    import logfunnel

    class Row:
        def __str__(self):
            return "row"

    def log_and_forget(log):
        row = Row()
        try:
            raise ValueError(row)  # the traceback's frame holds `row` too
        except ValueError:
            log.exception("loaded %s", row)
        return weakref.ref(row)

    funnel = logfunnel.install(file=sys.argv[1], host=sys.argv[2])
    log = logging.getLogger("db")
    ref = log_and_forget(log)
    gc.collect()
    here = ref() is None
    pid = os.fork()
    if pid == 0:
        ref = log_and_forget(log)
        gc.collect()
        print("child", ref() is None, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print("installer", here, flush=True)
    funnel.shutdown()
"""


@pytest.mark.parametrize("host", ["thread", "process"])
def test_a_sent_record_and_what_it_references_are_not_kept(tmp_path: Path, host: str) -> None:
    """Issue 9 item 11: the last record sent (its args, exc_info, frames) was kept alive."""
    program = tmp_path / "keeps.py"
    program.write_text(textwrap.dedent(KEEPS_NOTHING))
    proc = run_python(str(program), str(tmp_path / "f.log"), host)
    assert sorted(proc.stdout.split("\n")[:2]) == ["child True", "installer True"]
    assert (tmp_path / "f.log").read_text().count("loaded row") == 2
