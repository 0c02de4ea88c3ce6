"""Lines rendered where they are logged (a writer process with install()'s own sinks)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import msgpack
import pytest

from conftest import SCRIPTS, last_json, run_python, start_funnel_server, stop_funnel_server
from logfunnel._core import wire as _wire

pytestmark = pytest.mark.usefixtures("no_funnel_env")


def _run_mix(tmp_path: Path, host: str, kind: str, *extra: str) -> tuple[list[str], dict[str, int]]:
    """Run scripts/lines_mix.py; return the records of its sink (one item each) and its stats."""
    out = tmp_path / f"{host}-{kind}.log"
    proc = run_python(str(SCRIPTS / "lines_mix.py"), host, str(out), kind, *extra)
    stats: dict[str, int] = last_json(proc.stdout)
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob(f"{host}-{kind}.log*")))
    records: list[str] = []
    for line in text.splitlines():
        if kind == "line" and line.startswith("  | "):
            records[-1] += "\n" + line  # a continuation line belongs to the record above
        elif kind == "json":
            entry = json.loads(line)
            del entry["time"], entry["process"], entry["process_name"]  # differ between runs
            records.append(json.dumps(entry, sort_keys=True))
        else:
            records.append(line)
    return sorted(records), stats


@pytest.mark.parametrize("kind", ["line", "json"])
def test_rendered_lines_equal_what_the_writer_renders(tmp_path: Path, kind: str) -> None:
    """Records rendered in the workers (either host) give the same sink as the writer renders."""
    writer_records, writer_stats = _run_mix(tmp_path, "writer", kind)
    assert writer_stats["lines"] == 0
    for host in ("thread", "process"):
        records, stats = _run_mix(tmp_path, host, kind)
        # Plain records and bursts travel rendered; extras, tracebacks and over-long ones do not.
        assert stats["lines"] >= 6 * 200, host
        assert stats["records"] - stats["lines"] >= 6 * 3, host
        assert len(records) == writer_stats["records"] == stats["records"], host
        assert records == writer_records, host


def test_rendered_lines_rotate_whole(tmp_path: Path) -> None:
    """A rotating sink fed rendered lines keeps every record once, each line whole."""
    records, stats = _run_mix(tmp_path, "process", "line", "100000")
    assert len(list(tmp_path.glob("process-line.log*"))) > 3
    assert stats["lines"] >= 6 * 200
    assert len(records) == len(set(records)) == stats["records"]
    for n in range(6):
        burst = [r for r in records if r.startswith(f"w.{n}|") and f"|burst {n} " in r]
        assert len(burst) == 200


def _send_raw(address: str, frames: list[list[object] | bytes]) -> None:
    """Send frames (bytes: as they are) on a raw connection to a funnel's Unix address."""
    payload = b""
    for fields in frames:
        if isinstance(fields, bytes):
            payload += fields
            continue
        packed = msgpack.packb(fields)
        payload += len(packed).to_bytes(4, "big") + packed
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(address.removeprefix("unix:"))
        sock.sendall(payload)




@pytest.mark.parametrize("host", ["thread", "process", "config"])
def test_a_peer_cannot_forge_lines(tmp_path: Path, host: str) -> None:
    """A LINE with line breaks stays one record; a writer whose sinks are not its own refuses LINEs."""
    log = tmp_path / "out.log"
    proc, address = start_funnel_server(log, host)
    hello = [_wire.HELLO, _wire.PROTOCOL_VERSION, 4242, "raw-peer"]
    # A LINE frame with line breaks, and a bare line with the one break it could hold.
    forged = [_wire.LINE, "raw|one\nfake|forged\rfake|again"]
    _send_raw(address, [hello, forged, b"raw|bare\rfake|bare\n"])
    stats = stop_funnel_server(proc)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert not any(line.startswith("fake|") for line in lines)
    # Other connections (and, in a thread host, the program's own records) are not ordered
    # against the raw peer's: look for its lines wherever they are.
    if host != "config":
        first = lines.index("raw|one")
        assert lines[first + 1 : first + 5] == [
            "  | fake|forged",
            "  | fake|again",
            "raw|bare",
            "  | fake|bare",
        ]
        # These two, and with a writer process the program's own record (rendered too;
        # a thread host writes its own records itself).
        assert stats["lines"] == (3 if host == "process" else 2)
    else:
        refusal, bare = [line for line in lines if line.startswith("logfunnel|")]
        assert refusal.startswith("logfunnel|discarded a line from process 4242 (raw-peer): ")
        assert "not expected by this writer" in refusal
        assert bare == refusal  # its bare line, read as the LINE it means
        assert stats["bad_frames"] == 2
    assert "after|still here" in lines
