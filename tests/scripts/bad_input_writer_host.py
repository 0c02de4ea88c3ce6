"""Host a real funnel for the decoder fuzz tests, driven by commands on standard input.

Usage: ``python bad_input_writer_host.py OUT_LOG [HOST]``

Installs a funnel writing ``OUT_LOG`` (``HOST`` ``thread``, the default, or
``process``) and prints one JSON line ``{"address": ..., "pid": ...}`` (the
pid of the process the writer runs in).  Then it answers one JSON line per
command line: ``stats`` (``Funnel.stats()``), ``flush`` (``Funnel.flush()``),
``alive`` (whether the writer thread or process still runs) and ``quit``
(``Funnel.shutdown()``, then exit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import logfunnel

FORMAT = "%(levelname)s %(processName)s %(name)s: %(message)s"


def main() -> int:
    """Install, report the address, serve commands until quit or end of input."""
    out_log = sys.argv[1]
    host = sys.argv[2] if len(sys.argv) > 2 else "thread"
    funnel = logfunnel.install(file=out_log, level="DEBUG", fmt=FORMAT, host=host)  # type: ignore[arg-type]
    process = funnel._process  # the test reads the writer process's memory use
    pid = process.pid if process is not None else os.getpid()
    print(json.dumps({"address": funnel.address, "pid": pid}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        answer: object
        if command == "stats":
            answer = dataclasses.asdict(funnel.stats(timeout=10.0))
        elif command == "flush":
            answer = funnel.flush(timeout=10.0)
        elif command == "alive":
            thread = funnel._thread
            answer = (thread is not None and thread.is_alive()) or (
                process is not None and process.poll() is None
            )
        elif command == "quit":
            print(json.dumps(funnel.shutdown(timeout=10.0)), flush=True)
            return 0
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)
    funnel.shutdown(timeout=10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
