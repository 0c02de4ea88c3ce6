"""Children join by themselves: levels travel, the hook is inert without a funnel, fallback works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SCRIPTS, child_env, read_lines, run_python

LEVELS_PROGRAM = r"""
import json, logging, multiprocessing, sys
import logfunnel

FORMAT = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"

def child(tag):
    for name in ("", "noisy", "late", "late.sub"):
        log = logging.getLogger(name or None)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            log.log(level, "%s %s %s", tag, name or "root", logging.getLevelName(level))
    return {n: logging.getLogger(n or None).getEffectiveLevel() for n in ("", "noisy", "late")}

if __name__ == "__main__":
    method, path = sys.argv[1:3]
    logging.getLogger("noisy").setLevel(logging.ERROR)
    funnel = logfunnel.install(file=path, level="INFO", fmt=FORMAT)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(1) as pool:
        first = pool.apply(child, ("first",))
    # A level set in the parent after install() reaches children started later.
    logging.getLogger("late").setLevel(logging.WARNING)
    with ctx.Pool(1) as pool:
        second = pool.apply(child, ("second",))
    funnel.shutdown()
    print(json.dumps({"first": first, "second": second}))
"""


def _expected(tag: str, late: int) -> set[str]:
    levels = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
    effective = {"root": 20, "noisy": 40, "late": late, "late.sub": late}
    return {
        f"{tag} {name} {level}"
        for name, threshold in effective.items()
        for level, number in levels.items()
        if number >= threshold
    }


def test_children_honour_the_parents_levels(tmp_path: Path) -> None:
    """Under every start method a child emits a record exactly when the parent would."""
    program = tmp_path / "levels.py"
    program.write_text(LEVELS_PROGRAM)
    for method in ("fork", "spawn", "forkserver"):
        log = tmp_path / f"{method}.log"
        proc = run_python(str(program), method, str(log))
        report = json.loads(proc.stdout)
        assert report["first"] == {"": 20, "noisy": 40, "late": 20}, method
        assert report["second"] == {"": 20, "noisy": 40, "late": 30}, method
        messages = {line.message for line in read_lines(log)}
        assert messages == _expected("first", 20) | _expected("second", 30), method


def test_hook_is_inert_without_the_variable(tmp_path: Path) -> None:
    """A new interpreter with no LOGFUNNEL_ADDRESS does not even import logfunnel."""
    code = "import sys, logging; print('logfunnel' in sys.modules, logging.getLogger().handlers)"
    proc = run_python("-c", code)
    assert proc.stdout.strip() == "False []"


def test_unreachable_writer_sends_records_to_stderr_with_one_warning(tmp_path: Path) -> None:
    """With the writer gone, records go to stderr after one clear warning; nothing raises."""
    env = child_env(LOGFUNNEL_ADDRESS=f"unix:{tmp_path}/nobody-listens.sock")
    code = "import logging\nfor i in range(5): logging.warning('still here %d', i)\nprint('done')"
    proc = run_python("-c", code, env=env)
    assert proc.stdout.strip() == "done"
    assert proc.stderr.count("cannot reach the log writer") == 1
    for i in range(5):
        assert f"still here {i}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_init_is_accepted_and_optional(tmp_path: Path) -> None:
    """Pool(initializer=logfunnel.worker_init) works and changes nothing in what arrives."""
    program = tmp_path / "init.py"
    program.write_text(
        "import logging, multiprocessing, sys\nimport logfunnel\n"
        "def work(i):\n    logging.getLogger('w').info('rec w %d pc=%d', i, i)\n"
        "if __name__ == '__main__':\n"
        "    funnel = logfunnel.install(file=sys.argv[1], level='INFO',"
        " fmt='%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s')\n"
        "    for method in ('fork', 'spawn'):\n"
        "        with multiprocessing.get_context(method).Pool(1, initializer=logfunnel.worker_init) as p:\n"
        "            p.map(work, range(3))\n"
        "    funnel.shutdown()\n"
    )
    log = tmp_path / "out.log"
    run_python(str(program), str(log))
    assert sorted(line.message for line in read_lines(log)) == sorted(
        [f"rec w {i} pc={i}" for i in range(3)] * 2
    )


def test_worker_init_without_a_funnel_says_what_to_do() -> None:
    """worker_init in a process with no funnel raises a RuntimeError naming install()."""
    proc = run_python("-c", "import logfunnel; logfunnel.worker_init()", check=False)
    assert proc.returncode == 1
    assert "call logfunnel.install() before creating the pool" in proc.stderr


def test_spawned_main_module_calling_install_joins_instead(tmp_path: Path) -> None:
    """A main module that calls install() unguarded gets the parent's funnel in spawn children."""
    program = tmp_path / "unguarded.py"
    program.write_text(
        "import logging, multiprocessing, os, sys\nimport logfunnel\n"
        "funnel = logfunnel.install(file=os.environ['OUT'], level='INFO',"
        " fmt='%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s')\n"
        "def work(i):\n    logging.info('rec u %d pc=0', i)\n    return funnel.owner\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('spawn').Pool(1) as p:\n"
        "        print(p.map(work, range(2)))\n"
        "    funnel.shutdown()\n"
    )
    log = tmp_path / "out.log"
    proc = run_python(str(program), env=child_env(OUT=str(log)))
    assert proc.stdout.strip() == "[False, False]"
    assert sorted(line.message for line in read_lines(log)) == ["rec u 0 pc=0", "rec u 1 pc=0"]


def test_interpreter_exit_drains_without_shutdown(tmp_path: Path) -> None:
    """A program that never calls shutdown() still has every record on disk at exit."""
    log = tmp_path / "out.log"
    code = (
        "import logging, multiprocessing, sys\nimport logfunnel\n"
        "logfunnel.install(file=sys.argv[1], level='INFO', fmt='%(message)s')\n"
        "def work(i):\n    for j in range(100): logging.info('r %d %d', i, j)\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('fork').Pool(2) as p:\n        p.map(work, range(4))\n"
    )
    program = tmp_path / "noshutdown.py"
    program.write_text(code)
    run_python(str(program), str(log))
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted(f"r {i} {j}" for i in range(4) for j in range(100))


def test_python_dash_m_logfunnel_runs_the_cli() -> None:
    """`python -m logfunnel --help` prints the usage and exits 0."""
    proc = run_python("-m", "logfunnel", "--help")
    assert "logfunnel run" in proc.stdout


def test_run_wraps_a_program_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """`logfunnel run` installs the funnel, runs the script unchanged and exits with its code."""
    script = tmp_path / "prog.py"
    script.write_text(
        "import logging, multiprocessing, sys\n"
        "def work(i):\n    logging.getLogger('prog').info('rec prog %d pc=0', i)\n"
        "if __name__ == '__main__':\n"
        "    assert sys.argv[1:] == ['a', 'b'], sys.argv\n"
        "    with multiprocessing.get_context('spawn').Pool(2) as p:\n        p.map(work, range(4))\n"
        "    sys.exit(3)\n"
    )
    log = tmp_path / "out.log"
    fmt = "%(process)d|%(processName)s|%(name)s|%(levelname)s|%(message)s"
    cmd = ["-m", "logfunnel", "run", "--file", str(log), "--level", "INFO", "--fmt", fmt]
    proc = run_python(*cmd, "--", str(script), "a", "b", check=False)
    assert proc.returncode == 3, proc.stderr
    assert sorted(line.message for line in read_lines(log)) == [
        f"rec prog {i} pc=0" for i in range(4)
    ]


def test_run_dash_m_runs_a_module(tmp_path: Path) -> None:
    """`logfunnel run -m module` runs a module as `python -m` would."""
    (tmp_path / "mymod.py").write_text("import logging\nlogging.warning('from module')\n")
    log = tmp_path / "out.log"
    proc = run_python(
        "-m",
        "logfunnel",
        "run",
        "--file",
        str(log),
        "--fmt",
        "%(message)s",
        "-m",
        "mymod",
        cwd=tmp_path,
    )
    assert proc.returncode == 0
    assert log.read_text() == "from module\n"


def test_demo_reports_nothing_lost(tmp_path: Path) -> None:
    """`logfunnel demo` runs under every start method and reports lost 0, dup 0, hangs 0."""
    # Bounded by run_python's timeout; how long the demo takes is not this test's business.
    proc = run_python("-m", "logfunnel", "demo", "--cycles", "3", "--records", "20", cwd=tmp_path)
    assert "every record landed exactly once, whole." in proc.stdout, proc.stdout
    for method in ("fork", "spawn", "forkserver"):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(method))
        _, expected, written, lost, dup, hangs, *_ = row.replace(",", "").split()
        assert (expected, lost, dup, hangs) == (written, "0", "0", "0")
    assert (tmp_path / "logfunnel-demo" / "demo.log").exists()


def test_scenario_script_is_importable_for_spawn() -> None:
    """The scenario module imports cleanly in a fresh interpreter (spawn re-imports it)."""
    env = child_env(PYTHONPATH=str(SCRIPTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(
        [sys.executable, "-c", "import scenario"],
        check=True,
        env=env,
        timeout=60,
        capture_output=True,
    )
