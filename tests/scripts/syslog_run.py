"""Log through install(syslog=...) from this process, a forked child and a spawned child.

Usage: syslog_run.py URL LOG HOST COUNT [CA_FILE]

Each process logs COUNT records ``rec TAG I`` with a second line of non-ASCII
text and extras (``tag``, ``i``, and a value with every character RFC 5424
§6.3.3 escapes), then one ``plain TAG`` without extras.  The installer prints, as JSON, each tag's pid, then shuts
down (which sends what the syslog sink still queues).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys

import logfunnel

#: A second line, and text that is not ASCII: a message must arrive as it was.
TAIL = "\n  second line: ü 日本 ✓"
#: Every character a PARAM-VALUE escapes, and a space.
ESCAPED = 'a"b]c\\d e'


def work(tag: str, count: int) -> None:
    """Log ``count`` records tagged ``tag`` (in a child, or here)."""
    log = logging.getLogger(f"syslog.test.{tag}")
    for i in range(count):
        log.warning("rec %s %d%s", tag, i, TAIL, extra={"tag": tag, "i": i, "esc": ESCAPED})
    # No extras: with host="process" such a record may travel as a rendered
    # line, which a syslog sink cannot use (the installer must not render then).
    log.warning("plain %s", tag)


def main() -> None:
    """Install, log from three processes, print their pids."""
    url, log_path, host, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ca = sys.argv[5] if len(sys.argv) > 5 else None
    funnel = logfunnel.install(
        file=log_path,
        syslog=url,
        syslog_ca=ca,
        syslog_app_name="lf-test",
        host=host,  # type: ignore[arg-type]
    )
    pids = {"main": os.getpid()}
    fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
    processes = [
        ("fork", fork.Process(target=work, args=("fork", count))),
        ("spawn", spawn.Process(target=work, args=("spawn", count))),
    ]
    for method, process in processes:
        process.start()
        assert process.pid is not None
        pids[method] = process.pid
        process.join(60)
        assert process.exitcode == 0, (method, process.exitcode)
    work("main", count)
    assert funnel.flush()
    print(json.dumps(pids), flush=True)
    assert funnel.shutdown()


if __name__ == "__main__":
    main()
