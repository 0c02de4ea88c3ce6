"""The article's programs, as ``logfunnel repro`` and ``benchmarks/stock_remedies`` run them.

The article ("Python进程池log死锁问题分析及解决", the seed of this project) shows
two programs: a fork that copies one thread of two, and a ``multiprocessing.Pool``
batch job that hangs.  They are kept here as close to the article as running
them under a watchdog allows; every change is marked ``# changed:`` or
``# added:`` in the text with the reason, and summarised in ``CHANGES``.
"""

from __future__ import annotations

from typing import Final

#: The article's thread-count demonstration.
THREADS_PROGRAM: Final = """\
from threading import Thread, enumerate
from os import fork
from time import sleep
import os  # added: to wait for the child

# Start a thread:
# changed: daemon=True, so the parent does not wait 60 s for it at exit.
Thread(target=lambda: sleep(60), daemon=True).start()

if pid := fork():  # changed: keep the pid, to wait for the child below
    print("The parent process has {} threads".format(
        len(enumerate())))
    os.waitpid(pid, 0)  # added: reap the child before the parent exits
else:
    print("The child process has {} threads".format(
        len(enumerate())))
"""

_POOL_PROGRAM_TEMPLATE: Final = """\
import faulthandler  # added: the watchdog asks a stuck process for its stacks
import logging
import multiprocessing  # added: to ask for the fork start method by name
import os  # added: the child prints its pid, so the watchdog knows whom to ask
import signal  # added: see faulthandler
from threading import Event, Thread  # changed: Event, to stop the logging thread
from queue import Queue
from logging.handlers import QueueListener, QueueHandler
from multiprocessing import Pool
{fix_import}
CYCLES = {cycles}  # added: the article loops forever; this run is bounded
stop = Event()  # added: lets the bounded run end the logging thread


def setup_logging():
    # Records go into a queue; a separate thread takes them from it and writes
    # them to the file.
    _log_queue = Queue()
    # changed: keep the listener, to drain it with stop() at the end.
    listener = QueueListener(
        _log_queue, logging.FileHandler("out.log"))
    listener.start()
    logging.getLogger().addHandler(QueueHandler(_log_queue))
    # added: the article leaves the root level at WARNING, so its
    # logging.info() calls are all filtered out: nothing is logged, and
    # nothing hangs.  At INFO the program does what the article describes.
    logging.getLogger().setLevel(logging.INFO)

    # A separate thread in the parent process writes logs.
    def write_logs():
        while not stop.is_set():  # changed: was `while True`
            logging.info("hello, I just did something")
    thread = Thread(target=write_logs)
    thread.start()
    return listener, thread


def runs_in_subprocess(cycle):  # changed: takes the cycle number
    # changed: the markers carry the cycle and the pid, for the watchdog.
    print(f"About to log... (cycle {{cycle}}, pid {{os.getpid()}})")
    # changed: the cycle number, to count each child's record exactly.
    logging.info("hello, I did something (cycle %d)", cycle)
    print(f"...logged (cycle {{cycle}})")


if __name__ == '__main__':
    # added: SIGUSR1 makes any process of this program (forked children
    # inherit the handler and the file) dump every thread's Python stack.
    stacks = open("stacks.txt", "w")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    # added: Pool() forks on Linux up to 3.13; 3.14 made forkserver the
    # default, so ask for the start method by name.
    multiprocessing.set_start_method({method!r})
    listener, thread = setup_logging()
{fix_install}
    # A pool in a loop, to raise the odds of the deadlock.
    for cycle in range(CYCLES):  # changed: was `while True`
        with Pool() as pool:
            pool.apply(runs_in_subprocess, (cycle,))
    # added: a clean end, so out.log can be counted.
    stop.set()
    thread.join()
{fix_flush}
    listener.stop()  # drains the queue into out.log
    print("done")
"""

_FIX_IMPORT: Final = "import logfunnel  # the fix, line 1 of 2\n"
_FIX_INSTALL: Final = "    funnel = logfunnel.install()  # the fix, line 2 of 2\n"
_FIX_FLUSH: Final = (
    "    funnel.flush()  # added: children's records reach the QueueHandler before the drain\n"
)

#: What ``pool_program`` changed in the article's program, and why.
CHANGES: Final = (
    (
        "root level set to INFO (the article's stays at WARNING: its logging.info() calls "
        "are filtered, so nothing is logged and nothing hangs)"
    ),
    "the fork start method is asked for by name (3.14 made forkserver the Linux default)",
    (
        "the loop runs a bounded number of cycles, and the logging thread stops at the end, "
        "so the run can end and out.log can be counted"
    ),
    (
        "each child logs its cycle number and prints its pid, so the watchdog can count "
        "records exactly and knows which process to ask for its stack"
    ),
    (
        "faulthandler is registered for SIGUSR1, so a stuck process can be asked for its "
        "Python stack without any external tool"
    ),
)


def pool_program(cycles: int, *, fixed: bool, method: str = "fork") -> str:
    """Return the article's pool program, bounded to ``cycles``; with the fix if ``fixed``."""
    return _POOL_PROGRAM_TEMPLATE.format(
        method=method,
        cycles=cycles,
        fix_import=_FIX_IMPORT if fixed else "",
        fix_install=_FIX_INSTALL if fixed else "",
        fix_flush=_FIX_FLUSH if fixed else "",
    )
