"""The console sink in a real terminal (tmux): records above tqdm and rich bars, whole, in colour.

Pool workers log while the main process draws a progress bar
(``scripts/console_bars.py``), under both hosts; the pane is read back with
``tmux capture-pane`` once the program printed its end marker.  Every record
line must be whole (nothing glued to a bar fragment), every record there
once, and the finished bar line intact.  Colour rules (NO_COLOR, FORCE_COLOR,
a pipe) are checked on real child processes too.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import SCRIPTS, child_env, debian_tool, run_python
from logfunnel.sinks import console

TASKS = 16
RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:MainProcess|SpawnPoolWorker-\d+)\[\d+\] "
    r"(?:INFO|WARNING) app: rec (-?\d+) (\d) x{24}$"
)
FINAL_BAR = {
    "tqdm": re.compile(
        rf"^tasks: 100%\|█+\| {TASKS}/{TASKS} \[\d\d:\d\d<\d\d:\d\d, +\d+\.\d+it/s\]$"
    ),
    "rich": re.compile(r"^tasks +━+ 100% \d:\d\d:\d\d$"),
}
EXPECTED = Counter({(-1, 0): 1, **{(i, s): 1 for i in range(TASKS) for s in range(3)}})


def _tmux() -> str:
    """Return the program's path, installing Debian's package if missing and possible; else skip."""
    return debian_tool("tmux", timeout=300)


def _in_tmux(tmp_path: Path, lib: str, host: str, **env: str) -> tuple[str, str]:
    """Run console_bars.py in a fresh tmux server; return the pane (plain, and with escapes)."""
    tmux = _tmux()
    server = f"logfunnel-test-{os.getpid()}-{threading.get_ident()}-{lib}-{host}"
    base = [tmux, "-L", server, "-f", os.devnull]
    command = " ".join(
        [sys.executable, str(SCRIPTS / "console_bars.py"), lib, host, str(TASKS)]
    )
    environ = child_env(**env)
    for key in ("NO_COLOR", "FORCE_COLOR"):
        if key not in env:
            environ.pop(key, None)
    environ.pop("TMUX", None)
    subprocess.run(
        # The pane stays after the program ends (remain-on-exit), to be read.
        [*base, "start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
         "new-session", "-d", "-s", "t", "-x", "160", "-y", "70", command],
        env=environ,
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    try:
        deadline = time.monotonic() + 90
        pane = ""
        while time.monotonic() < deadline:
            pane = subprocess.run(
                [*base, "capture-pane", "-p", "-J", "-S", "-", "-t", "t"],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout
            if "END-MARKER" in pane:
                break
            if "Pane is dead" in pane:  # the program ended without its marker
                pytest.fail(f"the program failed:\n{pane}")
            threading.Event().wait(0.1)  # polling the pane for the marker, bounded by deadline
        else:
            pytest.fail(f"no END-MARKER in the pane within 90 s:\n{pane}")
        escaped = subprocess.run(
            [*base, "capture-pane", "-p", "-e", "-J", "-S", "-", "-t", "t"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, check=False, timeout=30)
    return pane, escaped


def _check_pane(pane: str, lib: str) -> None:
    lines = [line.rstrip() for line in pane.splitlines()]
    lines = [line for line in lines if line]
    seen: Counter[tuple[int, int]] = Counter()
    for line in lines:
        if "rec " in line:
            found = RECORD.match(line)
            assert found, f"a record line is not whole: {line!r}\n--- pane\n{pane}"
            seen[(int(found.group(1)), int(found.group(2)))] += 1
        elif "END-MARKER" in line or line.startswith("Pane is dead"):
            continue
        else:  # anything else is the bar: the finished one, drawn once, whole
            assert FINAL_BAR[lib].match(line), f"a garbled line: {line!r}\n--- pane\n{pane}"
    assert seen == EXPECTED, f"records missing or doubled\n--- pane\n{pane}"
    bars = [line for line in lines if FINAL_BAR[lib].match(line)]
    assert len(bars) == 1, pane
    end = next(i for i, line in enumerate(lines) if "END-MARKER" in line)
    assert FINAL_BAR[lib].match(lines[end - 1]), f"the finished bar is not last\n{pane}"


@pytest.mark.parametrize("host", ["thread", "process"])
@pytest.mark.parametrize("lib", ["tqdm", "rich"])
def test_records_print_above_the_bar_whole_and_in_colour(
    tmp_path: Path, lib: str, host: str
) -> None:
    pane, escaped = _in_tmux(tmp_path, lib, host)
    _check_pane(pane, lib)
    # A TTY: the level names are coloured (tmux re-encodes the SGR codes it got).
    assert re.search(r"\x1b\[[0-9;]*m *WARNING", escaped), escaped


def test_no_color_in_a_terminal_means_no_colour(tmp_path: Path) -> None:
    pane, escaped = _in_tmux(tmp_path, "tqdm", "process", NO_COLOR="1", FORCE_COLOR="1")
    _check_pane(pane, "tqdm")
    records = [line for line in escaped.splitlines() if " app: rec " in line]
    assert records
    assert not any("\x1b[" in line for line in records), escaped


COLOUR_PROGRAM = """
import logging, multiprocessing, sys
import logfunnel

def work(i):
    logging.getLogger("app").warning("from a worker %d", i)

if __name__ == "__main__":
    with logfunnel.install(console=True, host=sys.argv[1]):
        logging.getLogger("app").error("from the main process")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.map(work, [1])
"""


@pytest.mark.parametrize("host", ["thread", "process"])
@pytest.mark.parametrize(
    ("env", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
     ({"FORCE_COLOR": ""}, False), ({"NO_COLOR": "", "FORCE_COLOR": "yes"}, True)],
)
def test_colour_follows_no_color_and_force_color_on_a_pipe(
    tmp_path: Path, host: str, env: dict[str, str], coloured: bool
) -> None:
    script = tmp_path / "colour.py"
    script.write_text(COLOUR_PROGRAM, encoding="utf-8")
    environ = child_env(**env)
    for key in ("NO_COLOR", "FORCE_COLOR"):
        if key not in env:
            environ.pop(key, None)
    proc = run_python(str(script), host, env=environ, cwd=tmp_path, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if "from " in line]
    assert len(lines) == 2, proc.stderr
    assert all(("\x1b[" in line) is coloured for line in lines), proc.stderr
    if coloured:
        assert any("\x1b[1;31mERROR\x1b[0m" in line for line in lines), proc.stderr
        assert any("\x1b[33mWARNING\x1b[0m" in line for line in lines), proc.stderr
        # The process name has a colour of its own, so interleaved processes read apart.
        assert any(re.search(r"\x1b\[\d+mSpawnPoolWorker-1\x1b\[0m\[\d+\]", x) for x in lines)


def test_paint_finds_the_fields_of_lines_rendered_elsewhere() -> None:
    from logfunnel._core.formatters import DEFAULT_FORMAT, JsonFormatter, LineFormatter  # noqa: PLC0415

    sink = console.ConsoleSink(colour=True, output=object())
    record = logging.makeLogRecord(
        {"msg": "INFO in the message", "levelno": 40, "levelname": "ERROR",
         "processName": "SpawnPoolWorker-2", "process": 7, "name": "app"}
    )
    sink.setFormatter(LineFormatter(DEFAULT_FORMAT))  # time, process[pid], level
    line = sink.format(record)
    painted = sink.paint(line, None)  # a line from another process: no level given
    assert "\x1b[1;31mERROR\x1b[0m app: INFO in the message" in painted
    assert re.search(r"\x1b\[\d+mSpawnPoolWorker-2\x1b\[0m\[7\] ", painted)
    assert re.sub(r"\x1b\[[0-9;]*m", "", painted) == line  # colour only, not a character more
    sink.setFormatter(LineFormatter("%(levelname)-8s [%(processName)s] %(message)s"))
    painted = sink.paint(sink.format(record), None)
    assert painted.startswith("\x1b[1;31mERROR\x1b[0m    [\x1b[")
    sink.setFormatter(LineFormatter("%(message)s"))  # no level in the line
    assert sink.paint("just text", None) == "just text"
    assert sink.paint("just text", 30) == "\x1b[33mjust text\x1b[0m"  # a record: its level
    sink.setFormatter(JsonFormatter())
    assert "\x1b[1;31mERROR\x1b[0m" in sink.paint(sink.format(record), None)
