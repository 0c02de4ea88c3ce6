"""Record names create no loggers in the writer, and a barrier's work does not grow with them.

Issue 9, items 9 and 4: the writer used to call ``logging.getLogger(name)``
for every record name a peer sent, keeping one ``Logger`` per name forever
(10^6 names: 14 MB -> 495 MB), and every barrier walked all of them (after
100,000 names, 20,000 FLUSH frames took 135 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from test_writer_support import Host, RawPeer

if TYPE_CHECKING:
    from pathlib import Path

# The installing process of a real funnel (thread host, its own handlers
# adopted).  A child started with subprocess attaches by itself and sends
# records of any name through its root logger's handlers (the funnel's), without
# creating loggers on its side either.
INSTALLER = r"""
import collections, json, logging, subprocess, sys
import logfunnel

class Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.got = collections.Counter()
    def emit(self, record):
        self.got[record.name.split(".n")[0]] += 1

def add(name, *, propagate=True):
    handler = Count()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = propagate
    return handler

class Refuse(logging.Filter):
    def filter(self, record):
        return False

handlers = {"root": add("")}
handlers["cfg"] = add("cfg", propagate=False)
handlers["filt"] = add("filt", propagate=False)
logging.getLogger("filt").addFilter(Refuse())
logging.getLogger("ph.x.y")  # PlaceHolders for "ph" and "ph.x"
funnel = logfunnel.install()
known = set(logging.root.manager.loggerDict)

CHILD = '''
import logging, sys
root = logging.getLogger()
for name, count in zip(sys.argv[1::2], sys.argv[2::2]):
    for i in range(int(count)):
        numbered = f"{name}.n{i}" if name.endswith("*") else name
        root.handle(logging.makeLogRecord(
            {"name": numbered.replace("*", ""), "levelno": 30, "levelname": "WARNING", "msg": "m"}))
'''

print(json.dumps({"loggers": len(known)}), flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "child":
        answer = subprocess.run([sys.executable, "-c", CHILD, *command[1:]], timeout=300).returncode
    elif command[0] == "create":
        handlers[command[1]] = add(command[1], propagate=False)
        known = set(logging.root.manager.loggerDict)
        answer = len(known)
    elif command[0] == "flush":
        answer = funnel.flush(timeout=60)
    elif command[0] == "state":
        loggers = logging.root.manager.loggerDict
        answer = {
            "loggers": len(loggers),
            "new": sorted(set(loggers) - known)[:5],
            "got": {name: dict(h.got) for name, h in handlers.items()},
        }
    elif command[0] == "quit":
        answer = funnel.shutdown()
    print(json.dumps(answer), flush=True)
    if command[0] == "quit":
        break
"""

NAMES = 100_000


def test_record_names_create_no_loggers_and_reach_the_nearest_ancestor(tmp_path: Path) -> None:
    """200,000 distinct names from a child add no logger; each record reaches the handlers of its nearest logger."""
    host = Host(tmp_path, INSTALLER, name="installer")
    try:
        loggers = host.ready["loggers"]
        # Phase 1: 100,000 names under root, 100,000 under "cfg" (propagate=False),
        # and names whose loggers the installer creates only afterwards.
        code = host.command(
            f"child spam* {NAMES} cfg.x* {NAMES} late.a.b 10 ph.x.z 10 filt 5 filt.sub 5", 600
        )
        assert code == 0
        assert host.command("flush", 120)
        first: dict[str, Any] = host.command("state")
        assert first["new"] == [], first["new"]
        assert first["loggers"] == loggers
        got = first["got"]
        assert got["root"] == {"spam": NAMES, "late.a.b": 10, "ph.x.z": 10}
        assert got["cfg"] == {"cfg.x": NAMES}  # and not root: propagate=False
        # "filt" refuses its own records; a name below it has no logger, hence
        # no filter of its own: as stdlib logging, filt's filter does not apply.
        assert got["filt"] == {"filt.sub": 5}
        # Phase 2: loggers created after records of their names were seen win
        # from then on (one new name, and one that was a PlaceHolder).
        assert host.command("create late.a") == loggers + 2  # "late.a" and PlaceHolder "late"
        assert host.command("create ph.x") == loggers + 2  # a PlaceHolder became a logger
        assert host.command("child late.a.b 7 ph.x.z 3 spam* 3", 120) == 0
        assert host.command("flush", 120)
        second: dict[str, Any] = host.command("state")
        assert second["new"] == []
        got = second["got"]
        assert got["late.a"] == {"late.a.b": 7}
        assert got["ph.x"] == {"ph.x.z": 3}
        assert got["root"] == {"spam": NAMES + 3, "late.a.b": 10, "ph.x.z": 10}
        assert host.finish() is True
    finally:
        host.kill()


# A host that builds the Writer itself, so the test can read what its barriers did.
WRITER_HOST = r"""
import json, logging, os, socket, sys
from logfunnel._core import wire as _wire
from logfunnel._core import writer as _writer

class Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = self.flushes = 0
    def emit(self, record):
        self.records += 1
    def flush(self):
        self.flushes += 1

shared, own = Count(), Count()
logging.getLogger().addHandler(shared)
logging.getLogger("app").addHandler(shared)  # on two loggers: flushed once a barrier all the same
logging.getLogger("app").addHandler(own)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(os.path.join(os.getcwd(), "w.sock"))
listener.listen(64)
control, far_end = socket.socketpair()
writer = _writer.Writer(listener, far_end)
thread = _writer.start_thread(writer)
print(json.dumps({"address": "unix:" + listener.getsockname()}), flush=True)
for line in sys.stdin:
    if line.strip() == "state":
        answer = {
            "loggers": len(logging.root.manager.loggerDict),
            "shared": [shared.records, shared.flushes],
            "own": [own.records, own.flushes],
            "barrier_work": getattr(writer, "barrier_work", None),
        }
    else:
        control.sendall(_wire.Encoder().frame([_wire.SHUTDOWN, 1]))
        thread.join(30)
        answer = not thread.is_alive()
    print(json.dumps(answer), flush=True)
    if line.strip() != "state":
        break
"""

BARRIERS = 300


def test_a_barrier_after_100k_names_flushes_each_handler_once(tmp_path: Path) -> None:
    """After a peer sent 100,000 names, each barrier flushes every distinct handler once and looks at nothing more."""
    host = Host(tmp_path, WRITER_HOST, name="writer")
    try:
        start: dict[str, Any] = host.command("state")
        peer = RawPeer(host.ready["address"])
        for i in range(NAMES):
            peer.log(f"app.n{i}", "m")
        assert peer.flush()
        before: dict[str, Any] = host.command("state")
        for _ in range(BARRIERS):
            assert peer.flush()
        after: dict[str, Any] = host.command("state")
        peer.close()
        assert after["own"][0] == NAMES
        assert after["shared"][0] == 2 * NAMES  # on "app" and on root: stdlib logging does so
        # Work counted, not time: one flush per distinct handler per barrier
        # (the one on two loggers too), and a barrier looks at the tree's own
        # loggers and handlers only (root, "app", two handlers).
        assert after["shared"][1] - before["shared"][1] == BARRIERS
        assert after["own"][1] - before["own"][1] == BARRIERS
        assert after["barrier_work"] == start["loggers"] + 1 + 2
        assert after["loggers"] == start["loggers"]  # no logger per name
        assert host.finish() is True
    finally:
        host.kill()
