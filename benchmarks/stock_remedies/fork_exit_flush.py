"""Experiment 4: a file handler's buffer lock, copied held, hangs a forked child at exit.

``logging`` re-creates every ``Handler.lock`` in a forked child, but not the lock
inside the handler's stream (a ``BufferedWriter``), nor the bytes in its buffer.
A parent thread writes records to a ``FileHandler`` in a loop -- on the root logger
(``--where root``, as after ``basicConfig(filename=...)``) or held by no logger
(``--where listener``, as a ``QueueListener``'s handler) -- while the main thread
forks children that exit normally (``sys.exit(0)``), so ``logging.shutdown()``
flushes the inherited handler at their exit.  A child not gone within ``--bound``
seconds is stuck: the first one is asked for its stack (faulthandler), each is
killed.  Also counts parent lines that reach the file twice.  Each case runs
once as is and once with ``logfunnel.install()``.

    python benchmarks/stock_remedies/fork_exit_flush.py [--forks 30] [--bound 2]
"""

from __future__ import annotations

import argparse
import re
import sys

from _harness import header, run_program

PROGRAM = """\
import collections, faulthandler, logging, os, re, signal, sys, threading, time
WHERE, FIX, FORKS, BOUND = sys.argv[1], sys.argv[2] == "fix", int(sys.argv[3]), float(sys.argv[4])
if FIX:
    import logfunnel
faulthandler.register(signal.SIGUSR1, file=open("stacks.txt", "w"), all_threads=True)
handler = logging.FileHandler("out.log")
if WHERE == "root":
    logging.getLogger().addHandler(handler)
if FIX:
    funnel = logfunnel.install()
stop = threading.Event()

def write_logs():  # as a QueueListener's thread does: hand records to the handler
    i = 0
    while not stop.is_set():
        handler.handle(logging.makeLogRecord({"msg": "parent line %d", "args": (i,)}))
        i += 1

thread = threading.Thread(target=write_logs)
thread.start()
stuck = 0
for _ in range(FORKS):
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a normal exit: atexit runs logging.shutdown(), which flushes handlers
    deadline = time.monotonic() + BOUND
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            stuck += 1
            if stuck == 1:
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.002)
stop.set()
thread.join()
lines = collections.Counter()
malformed = 0
for line in open("out.log", errors="replace"):
    m = re.fullmatch(r"parent line (\\d+)\\n", line)
    if m:
        lines[int(m[1])] += 1
    else:
        malformed += 1
print(f"RESULT stuck={stuck} duplicated={sum(n > 1 for n in lines.values())} malformed={malformed}")
os._exit(0)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=30)
    parser.add_argument("--bound", type=float, default=2.0)
    args = parser.parse_args()
    header("Experiment 4: a forked child's exit flushes an inherited FileHandler")
    for where in ("root", "listener"):
        for fix in ("plain", "fix"):
            timeout = args.forks * (args.bound + 1) + 30
            run = run_program(PROGRAM, timeout, args=[where, fix, str(args.forks), str(args.bound)])
            result = re.search(r"RESULT stuck=(\d+) duplicated=(\d+) malformed=(\d+)", run.stdout)
            name = f"handler on {'the root logger' if where == 'root' else 'no logger'}, "
            name += "with logfunnel.install()" if fix == "fix" else "as is"
            if result is None:
                print(f"{name}: no result (watchdog kill: {run.timed_out}); {run.stderr[-300:]}")
            else:
                print(
                    f"{name}: {result[1]} of {args.forks} children stuck at exit; parent lines "
                    f"in out.log twice: {result[2]}, malformed: {result[3]}; {run.elapsed:.1f} s"
                )
            stacks = (run.workdir / "stacks.txt").read_text()
            frames = [line.strip() for line in stacks.splitlines() if "File" in line]
            if frames:
                print(
                    "    first stuck child, innermost frames: "
                    + " <- ".join(
                        re.sub(r'File ".*/', "", f).replace('", line ', ":") for f in frames[:2]
                    )
                )
            run.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
