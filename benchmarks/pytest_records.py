"""How many child-process records caplog sees and a file gets, with and without logfunnel.

Usage::

    python benchmarks/pytest_records.py            # ~1 min on 2 cores; prints a Markdown table

The suite it writes (in a temporary directory): ``--tests`` tests, each
starting one child of each kind -- ``multiprocessing`` spawn, forkserver and
fork, and a ``subprocess`` running Python -- that logs ``--records`` WARNING
records and exits, and logging two records itself (INFO under
``caplog.set_level``, WARNING).  The tests do not call ``funnel.flush()``: an
autouse fixture counts, at teardown, the children's records in
``caplog.get_records("call")``, which is what the test's assertions on
``caplog`` and pytest's "Captured log call" section would see.  For the
``--file`` rows, the file is read back: the tests' own records and the
children's.

Each configuration runs the same suite, with and without ``-n 2`` (pytest-xdist).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = r"""
import logging
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

RECORDS = int(os.environ["RECORDS"])
CODE = (
    "import logging, sys; "
    "[logging.getLogger('kid').warning('kid %d', i) for i in range(int(sys.argv[1]))]"
)


def child(n):
    for i in range(n):
        logging.getLogger("kid").warning("kid %d", i)


@pytest.fixture(autouse=True)
def count(caplog):
    yield
    seen = sum(r.name == "kid" for r in caplog.get_records("call"))
    with open(os.environ["COUNTS"], "a") as out:
        out.write(f"{seen}\n")


@pytest.mark.parametrize("i", range(int(os.environ["TESTS"])))
def test_children(i, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("own").info("own %d", i)
    logging.getLogger("own").warning("own %d", i)
    for method in ("spawn", "forkserver", "fork"):
        process = mp.get_context(method).Process(target=child, args=(RECORDS,))
        process.start()
        process.join(60)
    subprocess.run([sys.executable, "-c", CODE, str(RECORDS)], check=True, timeout=60)
"""

CONFIGS = [
    ("pytest (no logfunnel)", (), ()),
    ("logfunnel run -m pytest", ("-m", "logfunnel", "run"), ()),
    ("pytest --logfunnel", (), ("--logfunnel",)),
    ("logfunnel run --file F -m pytest", ("-m", "logfunnel", "run", "--file", "{log}"), ()),
    (
        "logfunnel run --file F -m pytest --logfunnel",
        ("-m", "logfunnel", "run", "--file", "{log}"),
        ("--logfunnel",),
    ),
]


def _run(
    where: Path, runner: tuple[str, ...], extra: tuple[str, ...], tests: int, records: int
) -> tuple[int, int | None, int | None]:
    counts, log = where / "counts", where / "all.log"
    for path in (counts, log):
        path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGFUNNEL_", "PYTEST_"))}
    env.update(COUNTS=str(counts), TESTS=str(tests), RECORDS=str(records))
    argv = [sys.executable, *(a.format(log=log) for a in runner)]
    argv += ["-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    subprocess.run(
        argv, cwd=where, env=env, capture_output=True, text=True, timeout=600, check=True
    )
    seen = sum(int(n) for n in counts.read_text().split())
    if not log.exists():
        return seen, None, None
    lines = log.read_text().splitlines()
    return seen, sum(": kid " in x for x in lines), sum(": own " in x for x in lines)


def main() -> None:
    """Run every configuration with and without -n 2; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--records", type=int, default=10)
    args = parser.parse_args()
    sent = args.tests * 4 * args.records
    own = args.tests * 2
    print(f"{args.tests} tests x 4 children x {args.records} records = {sent} child records, "
          f"{own} records of the tests themselves\n")
    print("| run | xdist | child records in caplog | child records in F | test records in F |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        (where / "pytest.ini").write_text("[pytest]\ntimeout = 120\n")
        (where / "test_suite.py").write_text(SUITE)
        for name, runner, extra in CONFIGS:
            for xdist in ((), ("-n", "2")):
                seen, kids, mine = _run(where, runner, extra + xdist, args.tests, args.records)
                in_file = "" if kids is None else f"{kids} of {sent}"
                own_file = "" if mine is None else f"{mine} of {own}"
                print(f"| `{name}` | {'-n 2' if xdist else '-'} | {seen} of {sent} | "
                      f"{in_file} | {own_file} |")


if __name__ == "__main__":
    main()
