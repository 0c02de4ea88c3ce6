"""``logfunnel serve``: a standalone collector that owns the sinks for processes on other hosts.

It is ``install(listen=..., token=...)`` in a process that does nothing else:
processes anywhere send to it with ``install(connect="tcp://HOST:PORT",
token=...)`` or ``LOGFUNNEL_CONNECT``, each proving the token before a byte of
theirs is decoded, and it writes their records to its sinks (a file, JSON
lines, the console, syslog) until SIGTERM or SIGINT, then drains and exits 0.
Its first line on standard output is the address to connect to (port 0 in
``--listen`` picks a free one).
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import threading
from typing import Any

USAGE = "logfunnel serve --listen tcp:HOST:PORT --token-file FILE [options]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logfunnel serve",
        usage=USAGE,
        description="Collect the records of processes on other hosts into this host's sinks.",
    )
    parser.add_argument("--listen", required=True, help="tcp:HOST:PORT (port 0: any free one)")
    parser.add_argument(
        "--token-file",
        help="file holding the token peers prove (mode 0600); default: LOGFUNNEL_TOKEN",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: the listener speaks TLS")
    parser.add_argument("--tls-key", help="PEM key, unless it is in --tls-cert")
    parser.add_argument("--file", help="write records to this file")
    parser.add_argument("--fmt", help="%%-style line format")
    parser.add_argument("--level", help="drop records below this level, e.g. INFO")
    parser.add_argument("--max-bytes", type=int, default=0, help="rotate --file at this size")
    parser.add_argument("--backups", type=int, default=0, help="rotated files to keep")
    parser.add_argument("--json", action="store_true", help="write JSON lines")
    parser.add_argument("--console", action="store_true", help="also write to standard error")
    parser.add_argument("--syslog", help="also export to syslog: tcp://, udp:// or tls://HOST:PORT")
    parser.add_argument("--otlp", help="also export to an OTLP/HTTP collector: http://HOST:4318")
    parser.add_argument("--host", choices=("thread", "process"), help="where the writer runs")
    return parser


def read_token(path: str) -> str:
    """Return the token in ``path``; refuse a file other users can read, as ssh does its keys."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        msg = f"--token-file {path}: other users can read it (mode {mode & 0o777:o}); chmod 600 it"
        raise ValueError(msg)
    with open(path, encoding="utf-8") as stream:
        return stream.read().strip()


def _token(path: str | None) -> str:
    token = read_token(path) if path else os.environ.get("LOGFUNNEL_TOKEN")
    if not token:
        msg = "give --token-file FILE (or LOGFUNNEL_TOKEN): peers must prove a shared token"
        raise ValueError(msg)
    return token


def main(argv: list[str]) -> int:
    """Run the collector until SIGTERM or SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    import logfunnel  # noqa: PLC0415

    options: dict[str, Any] = {
        "listen": args.listen,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "file": args.file,
        "fmt": args.fmt,
        "level": args.level,
        "max_bytes": args.max_bytes,
        "backups": args.backups,
        "json": args.json,
        # With no sink named, the console: a collector must write somewhere.
        "console": args.console or not (args.file or args.json or args.syslog or args.otlp),
        "host": args.host,
    }
    if args.syslog:
        options["syslog"] = args.syslog
    if args.otlp:
        options["otlp"] = args.otlp
    stop = threading.Event()
    try:
        options["token"] = _token(args.token_file)
        # Handlers first: a SIGTERM that comes while install() runs still ends the loop.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        funnel = logfunnel.install(**options)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"logfunnel serve: {exc}", file=sys.stderr)
        return 2
    print(f"logfunnel serve: listening on {funnel.remote_address}", flush=True)
    # Wakes at least once a second: Event.wait is interrupted by no signal on its own.
    while not stop.wait(1.0):
        pass
    return 0 if funnel.shutdown() else 1
