"""``Writer(sinks=...)``, the LEVELS frame it no longer answers, and the handlers it gives back.

A host process builds a ``Writer`` itself (a Unix listener, a control
channel, ``start_thread``), with or without ``sinks=``; raw peers in the test
process send it frames.  The host answers ``state`` with what each handler
got and whether the writer's ``handleError`` sits on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from logfunnel._core import wire as _wire
from test_writer_support import Host, RawPeer

if TYPE_CHECKING:
    from pathlib import Path

WRITER_HOST = r"""
import json, logging, os, socket, sys
from logfunnel._core import wire as _wire
from logfunnel._core import writer as _writer

class Keep(logging.Handler):
    def __init__(self, level=logging.NOTSET):
        super().__init__(level)
        self.got = []
    def emit(self, record):
        self.got.append(f"{record.name}|{record.levelname}|{record.getMessage()}")

def own_handle_error(record):
    pass

mode = sys.argv[1]
tree = Keep()
tree.handleError = own_handle_error  # an instance attribute the writer must put back
logging.getLogger().addHandler(tree)
named = Keep()
logging.getLogger("app").addHandler(named)
sink, warnings = Keep(), Keep(logging.WARNING)
handlers = {"tree": tree, "named": named, "sink": sink, "warnings": warnings}
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(os.path.join(os.getcwd(), "w.sock"))
listener.listen(64)
control, far_end = socket.socketpair()
given = {"sinks": [sink, warnings]} if mode == "sinks" else {}  # adopt mode: no keyword at all
writer = _writer.Writer(listener, far_end, **given)
thread = _writer.start_thread(writer)
reader, encoder = _wire.FrameReader(), _wire.Encoder()

def ask(kind, reply):
    control.sendall(encoder.frame([kind, 7]))
    while True:
        for fields in reader.feed(control.recv(65536)):
            if fields[:2] == [reply, 7]:
                return fields

def state():
    return {
        name: {
            "got": h.got,
            "watched": vars(h).get("handleError") not in (None, own_handle_error),
            "own": vars(h).get("handleError") is own_handle_error,
            "instance": "handleError" in vars(h),
        }
        for name, h in handlers.items()
    }

print(json.dumps({"address": "unix:" + listener.getsockname()}), flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "flush":
        answer = ask(_wire.FLUSH, _wire.FLUSHED) is not None
    elif command[0] == "stats":
        answer = ask(_wire.STATS, _wire.STATS)[2]
    elif command[0] == "state":
        answer = state()
    elif command[0] == "fork":  # a forked child forgets the writer: handlers restored there
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            writer.forget_in_child()
            os.write(write_end, json.dumps(state()).encode())
            os._exit(0)
        os.close(write_end)
        answer = json.loads(os.read(read_end, 1 << 20))
        os.waitpid(pid, 0)
    elif command[0] == "quit":
        ask(_wire.SHUTDOWN, _wire.FLUSHED)
        thread.join(30)
        print(json.dumps(state()), flush=True)
        break
    print(json.dumps(answer), flush=True)
"""


def _host(tmp_path: Path, mode: str) -> Host:
    return Host(tmp_path, WRITER_HOST, mode, name=f"writer_{mode}")


def _send_records(address: str) -> None:
    peer = RawPeer(address)
    peer.log("app.sub", "info from a child")
    peer.log("other", "warning from a child", 30)
    peer.send(_wire.LEVELS, 1)  # no longer answered: a bad frame like any unknown kind
    assert peer.flush()
    cut = RawPeer(address, name="cut-peer")
    cut.sock.sendall(_wire.HEADER.pack(100) + b"x" * 10)  # a frame it never finishes
    cut.close()
    assert peer.flush()
    peer.close()


def test_sinks_get_every_record_and_the_tree_none(tmp_path: Path) -> None:
    """With sinks=, records and the writer's own reports go to exactly those handlers, each at its level."""
    host = _host(tmp_path, "sinks")
    try:
        _send_records(host.ready["address"])
        assert host.command("flush")
        state: dict[str, Any] = host.command("state")
        stats = host.command("stats")
        assert state["tree"]["got"] == []
        assert state["named"]["got"] == []
        got = state["sink"]["got"]
        assert got[:2] == ["app.sub|INFO|info from a child", "other|WARNING|warning from a child"]
        (cut_report,) = got[2:]
        assert cut_report.startswith("logfunnel|WARNING|discarded 14 bytes of a cut frame")
        assert state["warnings"]["got"] == got[1:]
        assert stats["bad_frames"] == 1  # the LEVELS frame
        assert stats["cut_frames"] == 1
        assert state["sink"]["watched"]
        assert state["warnings"]["watched"]
        host.finish()
    finally:
        host.kill()


def test_adopt_mode_hands_records_to_the_tree(tmp_path: Path) -> None:
    """Without sinks=, records go to the logger tree's handlers, as if logged in the host."""
    host = _host(tmp_path, "adopt")
    try:
        _send_records(host.ready["address"])
        assert host.command("flush")
        state: dict[str, Any] = host.command("state")
        assert state["named"]["got"] == ["app.sub|INFO|info from a child"]
        assert state["tree"]["got"][:2] == [
            "app.sub|INFO|info from a child",
            "other|WARNING|warning from a child",
        ]
        assert state["sink"]["got"] == []
        assert host.command("stats")["bad_frames"] == 1
        host.finish()
    finally:
        host.kill()


@pytest.mark.parametrize("mode", ["sinks", "adopt"])
def test_handlers_get_their_own_handle_error_back(tmp_path: Path, mode: str) -> None:
    """The writer's handleError leaves every handler when its loop ends and in a forked child."""
    host = _host(tmp_path, mode)
    try:
        _send_records(host.ready["address"])
        assert host.command("flush")
        running: dict[str, Any] = host.command("state")
        used = ["sink", "warnings"] if mode == "sinks" else ["tree", "named"]
        for name in used:
            assert running[name]["watched"], (name, running[name])
        child: dict[str, Any] = host.command("fork")
        after: dict[str, Any] = host.finish()
        for where in (child, after):
            assert where["tree"]["own"], where["tree"]  # its own instance attribute, back
            for name in ("named", "sink", "warnings"):
                assert not where[name]["instance"], (name, where[name])  # the class's again
    finally:
        host.kill()
