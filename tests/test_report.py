"""`logfunnel report`: a real mixed run (spawn pool, one worker stalls) pictured, then rendered in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SCRIPTS, child_env, debian_tool, last_json, run_python
from logfunnel.diagnose import report

STALL = 2.0


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Run the mixed program once (a real funnel, real spawn workers); add two bad lines."""
    out = tmp_path_factory.mktemp("report") / "run.jsonl"
    proc = run_python(str(SCRIPTS / "report_run.py"), str(out), str(STALL), timeout=90)
    logged = last_json(proc.stdout)
    with out.open("a", encoding="utf-8") as f:
        f.write("this is not JSON\n")
        f.write('{"message": "an object without a time"}\n')
    return out, logged


def test_report_counts_levels_loggers_and_finds_the_stall(
    run_file: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    source, logged = run_file
    page = tmp_path / "report.html"
    proc = run_python("-m", "logfunnel", "report", str(source), "-o", str(page), timeout=60)
    assert "2 invalid lines skipped" in proc.stdout
    with source.open(encoding="utf-8") as lines:
        data = report.page_data(report.read_run(lines, str(source)))
    assert data["records"] == sum(logged.values())
    assert data["by_level"] == {k: v for k, v in logged.items() if v}
    assert data["invalid"] == 2
    assert len(data["invalid_lines"]) == 2
    names = {p["label"].split(" ")[0] for p in data["processes"]}
    assert "MainProcess" in names
    assert sum(n.startswith("SpawnPoolWorker-") for n in names) == 3
    loggers = dict(data["loggers"])
    assert loggers["app.stall"] == {"INFO": 1, "WARNING": 1}
    # The stalled worker's silence: between its two records, at least the stall long.
    stalled = [s for s in data["silences"] if s[4].startswith("stall task 0: about to wait")]
    assert len(stalled) == 1, data["silences"]
    assert STALL <= stalled[0][0] < STALL + 5
    assert stalled[0][5].startswith("stall task 0: resumed")
    stalled_row = next(p for p in data["processes"] if p["label"] == stalled[0][3])
    assert any(b - a >= STALL for a, b in stalled_row["silences"])
    assert sum(p["warnings"] for p in data["processes"]) == logged["WARNING"]
    assert sum(p["errors"] for p in data["processes"]) == logged["ERROR"]
    assert sum(sum(p["bins"]) for p in data["processes"]) == data["records"]
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|url\(['\"]?(?!#)", text)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert "stall task 0: about to wait for the database" in text


def test_report_reads_fields_defensively(tmp_path: Path) -> None:
    lines = [
        # LogRecord attribute names, the time as a number, no level name
        '{"created": 1000.0, "processName": "A", "process": 1, "levelno": 40, "name": "x", "msg": "m"}',
        '{"created": 1003.5, "processName": "A", "process": 1, "levelname": "INFO", "name": "x"}',
        # the schema's names with a "Z" time and extras of another schema version
        '{"v": 9, "time": "1970-01-01T00:16:41Z", "level": "WARNING", "logger": "y", "process_name": "B", "extra": {"k": 1}}',
        # the same pid and name on another host: another process
        '{"created": 1003.0, "host": "h2", "process_name": "A", "process": 1, "level": "INFO"}',
        "[1, 2]",
        '{"time": "yesterday"}',
        '{"created": NaN}',
        "",
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = report.write_report(str(path), str(tmp_path / "odd.html"))
    assert (run.records, run.invalid, run.invalid_lines) == (4, 3, [5, 6, 7])
    data = report.page_data(run)
    assert [p["label"] for p in data["processes"]] == ["A [1]", "B", "A [1] @ h2"]
    assert data["by_level"] == {"ERROR": 1, "INFO": 2, "WARNING": 1}
    assert data["levels"] == ["INFO", "WARNING", "ERROR"]
    # A's gap between its records; B silent from its one record to the end of the run.
    assert [(s[0], s[3], s[5]) for s in data["silences"]] == [
        (3.5, "A [1]", ""),
        (2.5, "B", "(run ended)"),
    ]
    assert report.page_data(run)["silences"] == data["silences"]  # drawing twice adds nothing


def _chromium() -> str:
    """Return the program's path, installing Debian's package if missing and possible; else skip."""
    return debian_tool("chromium", "chromium", "chromium-browser")


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers, where the sandbox cannot start
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_report_renders_in_headless_chromium(
    run_file: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    chromium = _chromium()
    source, _ = run_file
    page = tmp_path / "report.html"
    run = report.write_report(str(source), str(page))
    url = page.as_uri()
    dom = _headless(chromium, tmp_path / "profile", "--window-size=1300,900", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The script ran to its end without an error (window.onerror would have said so).
    assert 'data-report="rendered"' in dom.stdout, dom.stdout[-3000:]
    assert re.search(r'<pre id="errors"></pre>', dom.stdout), dom.stdout
    assert "Uncaught" not in dom.stderr
    assert dom.stdout.count('<g class="process"') == len(run.processes) == 4
    assert dom.stdout.count('class="bin"') > 20
    assert dom.stdout.count('class="mark error"') == sum(p.errors for p in run.processes.values())
    assert 'class="silence"' in dom.stdout
    assert "2 invalid lines skipped" in dom.stdout
    assert dom.stdout.count("<tr>") >= 1 + 2 + 2 + 4  # silences, levels, loggers (with headers)
    shot = tmp_path / "report.png"
    taken = _headless(
        chromium, tmp_path / "profile", "--window-size=1300,900", f"--screenshot={shot}", url
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a drawn page, not a blank one (a blank 1300x900 PNG is ~5 kB)
    if os.environ.get("LOGFUNNEL_UPDATE_DOCS"):  # how docs/report.png was made
        shutil.copyfile(shot, Path(__file__).parent.parent / "docs" / "report.png")


def test_report_command_fails_clearly_on_a_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "logfunnel", "report", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert proc.returncode == 1
    assert "nope.jsonl" in proc.stderr
