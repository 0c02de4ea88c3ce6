"""accept() failing for want of descriptors: the writer backs off, reports once, serves the rest.

Issue 9, item 3: with more connections than the writer's descriptor limit
allowed, ``accept()`` failed with EMFILE, the listener stayed readable, and
the writer wrote 33 MB of "cannot accept a connection" records in ~3 s at
100% CPU.  Here a real funnel runs in a process whose ``RLIMIT_NOFILE`` leaves
it exactly ``FREE`` descriptors; the test connects more peers than that.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import pytest

from test_writer_support import COMMAND_LOOP, Host, RawPeer, cpu_seconds, wait_for

if TYPE_CHECKING:
    from pathlib import Path

INSTALLER = r"""
import json, os, resource, sys
import logfunnel
log, kind, free = sys.argv[1], sys.argv[2], int(sys.argv[3])
funnel = logfunnel.install(
    file=log,
    fmt="%(name)s|%(message)s",
    listen="tcp:127.0.0.1:0" if kind == "tcp" else None,
    host="thread",
)
# Leave exactly `free` descriptor numbers below the limit (the writer runs in
# this process: it is a thread host).
names = os.listdir("/proc/self/fd")
open_fds = set()
for name in names:
    try:
        os.fstat(int(name))
    except OSError:
        continue  # listdir's own descriptor, closed by now
    open_fds.add(int(name))
limit = available = 0
while available < free:
    available += limit not in open_fds
    limit += 1
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
print(json.dumps({
    "address": funnel.remote_address if kind == "tcp" else funnel.address,
    "token": funnel.token,
    "pid": os.getpid(),
}), flush=True)
""" + COMMAND_LOOP


FREE = 20  # descriptors the writer may open: one per accepted connection
GOOD = 16  # peers connected first, within the limit
EXTRA = 12  # peers connected next: 4 fit, 8 wait in the backlog
RETRIES = 9  # failed accepts to wait for: ~2.3 s of pauses growing from 10 ms to 1 s


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8", errors="replace").splitlines()


def _accept_reports(log: Path, kind: str | None = None) -> list[str]:
    """Return the writer's lines about accept(), all or those of one listener."""
    where = {"unix": "the Unix socket", "tcp": "the TCP listener"}.get(kind or "", "")
    return [
        line
        for line in _lines(log)
        if line.startswith("logfunnel|") and "accept" in line and where in line
    ]


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_accept_out_of_descriptors_backs_off_reports_once_and_serves_the_rest(
    tmp_path: Path, kind: str
) -> None:
    """EMFILE on accept: two report lines in all, little CPU, every connected peer's records written."""
    log = tmp_path / "out.log"
    host = Host(tmp_path, INSTALLER, str(log), kind, str(FREE), name="installer")
    extras: list[RawPeer | socket.socket] = []
    good: list[RawPeer] = []
    try:
        address, token, pid = host.ready["address"], host.ready["token"], host.ready["pid"]
        good = [RawPeer(address, token=token, name=f"good{i}") for i in range(GOOD)]
        for i, peer in enumerate(good):
            peer.log("good", f"good {i} 0")
        assert host.command("flush") is True
        for i in range(EXTRA):
            if kind == "unix":  # sends its record at once: it waits in the backlog with it
                extra = RawPeer(address, name=f"extra{i}")
                extra.log("extra", f"extra {i}")
                extras.append(extra)
            else:  # an idle TCP connection: it never answers the challenge
                where = address.removeprefix("tcp:")
                host_part, _, port = where.rpartition(":")
                extras.append(socket.create_connection((host_part, int(port)), 30))
        wait_for(lambda: bool(_accept_reports(log)), "a report that accept() fails")
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()

        def retried_or_flooding() -> bool:
            if len(_accept_reports(log)) > 4:
                return True  # flooding: the assertions below say so
            return int(host.command("stats").get("accept_failures", 0)) >= RETRIES

        wait_for(retried_or_flooding, f"{RETRIES} accept retries")
        cpu_used = cpu_seconds(pid) - cpu_before
        wall = time.monotonic() - wall_before
        assert len(_accept_reports(log, kind)) == 1, (
            len(_accept_reports(log)),
            _accept_reports(log)[:3],
        )
        # Pauses, not a spin: a writer selecting the listener again at once
        # burns a whole CPU.  Generous: a loaded machine must not break it.
        assert cpu_used < 0.3 * wall, (cpu_used, wall)
        # Connections it has are served meanwhile, barriers included.
        for i, peer in enumerate(good):
            peer.log("good", f"good {i} 1")
        assert host.command("flush") is True
        # Descriptors come back: the waiting connections are accepted, once reported.
        for peer in good:
            peer.close()
        wait_for(lambda: len(_accept_reports(log, kind)) >= 2, "a report that accept() works again")
        assert host.command("flush") is True
        stats = host.command("stats")
        for waiting in extras:
            waiting.close()
        assert host.finish() is True
    finally:
        for peer in good:
            peer.close()
        for waiting in extras:
            waiting.close()
        host.kill()
    # Per listener, one line when it fails and one when it works again.  (A
    # TCP funnel's own Unix listener may have an episode of its own, if a
    # connection to it came while no descriptor was free: two lines more.)
    assert len(_accept_reports(log)) <= 4, _accept_reports(log)
    reports = _accept_reports(log, kind)
    assert len(reports) == 2, reports
    assert "cannot accept connections on" in reports[0]
    assert "Too many open files" in reports[0]
    assert " again, after " in reports[1]
    failed = int(reports[1].split(" again, after ")[1].split()[0])
    assert stats["accept_failures"] >= failed >= RETRIES  # stats: both listeners
    lines = _lines(log)
    assert sorted(line for line in lines if line.startswith("good|")) == sorted(
        f"good|good {i} {n}" for i in range(GOOD) for n in (0, 1)
    )
    if kind == "unix":
        assert sorted(line for line in lines if line.startswith("extra|")) == sorted(
            f"extra|extra {i}" for i in range(EXTRA)
        )
