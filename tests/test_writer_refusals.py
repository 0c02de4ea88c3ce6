"""Refused TCP connections are counted and summarised, not written one line each.

Issue 9, item 10: 2,000 unauthenticated connect/close cycles wrote 276 KB of
"refused a TCP connection" WARNING records into the user's log.  Anyone who
can reach the port can do that.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING

import pytest

from test_writer_support import COMMAND_LOOP, Host

if TYPE_CHECKING:
    from pathlib import Path

INSTALLER = r"""
import json, sys
import logfunnel
funnel = logfunnel.install(file=sys.argv[1], host=sys.argv[2], listen="tcp:127.0.0.1:0")
print(json.dumps({"remote": funnel.remote_address}), flush=True)
""" + COMMAND_LOOP


CYCLES = 2000


@pytest.mark.parametrize("host", ["thread", "process"])
def test_refused_connections_are_summarised(tmp_path: Path, host: str) -> None:
    """2,000 unauthenticated connect/close cycles give at most 3 lines, which end with the true count."""
    log = tmp_path / "out.log"
    installer = Host(tmp_path, INSTALLER, str(log), host, name="installer")
    try:
        where = installer.ready["remote"].removeprefix("tcp:")
        address = (where.rpartition(":")[0], int(where.rpartition(":")[2]))
        for _ in range(CYCLES):
            with socket.create_connection(address, timeout=30):
                pass  # connect, send nothing, close
        assert installer.command("flush") is True
        stats = installer.command("stats")
        assert installer.finish() is True
    finally:
        installer.kill()
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if "refused" in line]
    assert 1 <= len(lines) <= 3, lines
    assert "refused a TCP connection from 127.0.0.1:" in lines[0]
    # The barrier may come before the writer has read every connection's
    # end; shutdown reads them all.  The last line holds the full count.
    totals = [int(m.group(1).replace(",", "")) for m in map(TOTAL.search, lines[1:]) if m]
    assert totals, lines
    assert totals[-1] == CYCLES, lines
    assert stats["refused"] <= CYCLES
    assert len(log.read_bytes()) < 2000  # against 276 KB before


TOTAL = re.compile(r"([\d,]+) refused since the writer started")
