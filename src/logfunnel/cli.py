"""The ``logfunnel`` command: ``run``, ``serve``, ``demo``, ``repro``, ``stacks`` and ``report``."""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import traceback
from typing import Any

USAGE = """\
usage: logfunnel run [options] [--] script.py [args ...]
       logfunnel run [options] -m package.module [args ...]
       logfunnel demo [--dir DIR] [--cycles N]
       logfunnel repro [--cycles N] [--timeout S]
       logfunnel stacks [--address ADDRESS]
       logfunnel report RUN.jsonl [-o report.html] [--min-gap S]
       logfunnel serve --listen tcp:HOST:PORT --token-file FILE [--file F ...]

  run      run a Python program unchanged with the funnel installed; exits with its code
  demo     the seed's scenario under fork, spawn and forkserver, every record checked
  repro    the article's deadlock: reproduce it, show the stuck stack, then fix it
  stacks   print the Python stacks of every process attached to a running funnel
  report   one self-contained HTML page picturing a run's JSON lines (install(json=True))
  serve    a collector: the sinks for processes on other hosts (install(connect=...))
"""


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logfunnel run",
        description="Run a Python program with logfunnel installed.",
    )
    parser.add_argument(
        "--file", help="write records to this file (default: the program's own handlers)"
    )
    parser.add_argument("--level", help="root logger level, e.g. INFO")
    parser.add_argument("--fmt", help="%%-style line format for --file")
    parser.add_argument("--max-bytes", type=int, default=0, help="rotate --file at this size")
    parser.add_argument("--backups", type=int, default=0, help="rotated files to keep")
    parser.add_argument(
        "--when", help="also rotate by time: S, M, H, D, midnight or W0-W6 (Monday-Sunday)"
    )
    parser.add_argument("--interval", type=int, default=1, help="rotate every N --when units")
    parser.add_argument("--utc", action="store_true", help="--when periods in UTC, not local")
    parser.add_argument(
        "--max-age", type=float, default=None, help="delete rotated files older than S seconds"
    )
    parser.add_argument("--compress", choices=("gzip",), help="compress rotated files")
    parser.add_argument(
        "--watch", action="store_true", help="reopen --file when logrotate moved it"
    )
    parser.add_argument("--json", action="store_true", help="write JSON lines")
    parser.add_argument("--console", action="store_true", help="also write to standard error")
    parser.add_argument("--host", choices=("thread", "process"), help="where the writer runs")
    parser.add_argument(
        "--syslog", help="also export to syslog: tcp://HOST:PORT, udp://HOST:PORT or tls://..."
    )
    parser.add_argument("--syslog-facility", default="user", help="syslog facility (user)")
    parser.add_argument("--syslog-app-name", help="syslog APP-NAME (default: the program's)")
    parser.add_argument("--syslog-ca", help="CA certificates (PEM) for a tls:// collector")
    parser.add_argument("--otlp", help="also export to an OTLP/HTTP collector: http://HOST:4318")
    parser.add_argument(
        "--hang-timeout",
        type=float,
        default=None,
        help="when nothing is logged for this many seconds, log every process's stacks",
    )
    parser.add_argument("-m", dest="module", help="run a module as a script, like python -m")
    return parser


def _split_run_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s own options from the program and its arguments."""
    if "--" in argv:
        at = argv.index("--")
        if argv[at + 1 : at + 2] == ["-m"] and at + 2 < len(argv):  # `run [opts] -- -m pytest ...`
            return [*argv[:at], "-m", argv[at + 2]], argv[at + 3 :]
        return argv[:at], argv[at + 1 :]
    options: list[str] = []
    takes_value = {
        "--file",
        "--level",
        "--fmt",
        "--max-bytes",
        "--backups",
        "--when",
        "--interval",
        "--max-age",
        "--compress",
        "--host",
        "--hang-timeout",
        "--syslog",
        "--syslog-facility",
        "--syslog-app-name",
        "--syslog-ca",
        "--otlp",
    }
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return [*options, "-m", argv[i + 1]] if i + 1 < len(argv) else [*options, "-m"], argv[
                i + 2 :
            ]
        if arg in takes_value:
            options += argv[i : i + 2]
            i += 2
        elif arg.startswith("-") and arg != "-":
            options.append(arg)
            i += 1
        else:
            return options, argv[i:]
    return options, []


def run(argv: list[str]) -> int:
    """Install, run the program in this process, shut down, and return its exit code."""
    import logfunnel  # noqa: PLC0415 - keep `logfunnel --help` fast

    own, program = _split_run_argv(argv)
    parser = _run_parser()
    args = parser.parse_args(own)
    if args.module is None and not program:
        parser.error(
            "give a script to run (logfunnel run [options] script.py args...) or -m module"
        )
    options: dict[str, Any] = {
        "file": args.file,
        "level": args.level,
        "fmt": args.fmt,
        "max_bytes": args.max_bytes,
        "backups": args.backups,
        "when": args.when,
        "interval": args.interval,
        "utc": args.utc,
        "max_age": args.max_age,
        "compress": args.compress,
        "watch": args.watch,
        "json": args.json,
        "console": args.console,
        "host": args.host,
    }
    if args.otlp is not None:
        options["otlp"] = args.otlp
    if args.syslog is not None:
        facility = args.syslog_facility
        options.update(
            syslog=args.syslog,
            syslog_facility=int(facility) if facility.isdigit() else facility,
            # The program's name, not logfunnel's: the script, or the module.
            syslog_app_name=args.syslog_app_name
            or (args.module or os.path.basename(program[0] if program else "") or None),
            syslog_ca=args.syslog_ca,
        )
    from logfunnel import _hosts  # noqa: PLC0415

    # The program may leave this process while its own processes go on (gunicorn
    # --daemon: fork, then os._exit() here): a writer process then serves them until
    # the last one exits (_hosts.Lifeline).  The thread host ends with this process.
    lifeline = None
    try:
        lifeline = _hosts.Lifeline() if args.host != "thread" else None
        with _hosts.offered(lifeline):
            funnel = logfunnel.install(**options)
    except (ValueError, RuntimeError, OSError) as exc:
        if lifeline is not None:
            lifeline.close()
        print(f"logfunnel run: {exc}", file=sys.stderr)
        return 2
    if lifeline is not None and not lifeline.taken:  # no writer process of ours
        lifeline.close()
        lifeline = None
    watchdog = None
    if args.hang_timeout is not None:
        from logfunnel.diagnose.stacks import HangWatchdog  # noqa: PLC0415

        watchdog = HangWatchdog(funnel, args.hang_timeout)
        watchdog.start()
    code: int = 0
    interrupted = False
    try:
        if args.module is not None:
            sys.argv = [args.module, *program]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            script = program[0]
            sys.argv = list(program)
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # the program's own failure: show it as python would
        traceback.print_exc()
        code = 1
    finally:
        if watchdog is not None:
            watchdog.stop()
        owner = funnel.owner  # not in a child that returns here (a daemon's, at its exit)
        funnel.shutdown()
        if lifeline is not None and owner:
            lifeline.close()
    if interrupted:
        # As python does for an uncaught KeyboardInterrupt (bpo-1054041): end by
        # SIGINT itself, so a shell sees 130 and a parent sees -SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``logfunnel`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run(rest)
    if command == "serve":
        from logfunnel._serve import main as serve_main  # noqa: PLC0415

        return serve_main(rest)
    if command == "demo":
        from logfunnel.diagnose.demo import main as demo_main  # noqa: PLC0415

        return demo_main(rest)
    if command == "repro":
        from logfunnel.diagnose.repro import main as repro_main  # noqa: PLC0415

        return repro_main(rest)
    if command == "stacks":
        from logfunnel.diagnose.stacks import main as stacks_main  # noqa: PLC0415

        return stacks_main(rest)
    if command == "report":
        from logfunnel.diagnose.report import main as report_main  # noqa: PLC0415

        return report_main(rest)
    print(f"logfunnel: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
