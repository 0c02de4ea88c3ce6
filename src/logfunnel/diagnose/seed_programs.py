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
            logging.info("hello, I just did something"){throttle}
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


_THROTTLE: Final = (
    "\n"
    "            # changed: throttled.  Unthrottled, the thread outpaces the listener:\n"
    "            # the article's unbounded queue grows for as long as the program runs\n"
    "            # (16 GB after 20 minutes here), and each fork copies more of it.\n"
    "            stop.wait({seconds})"
)


def pool_program(
    cycles: int, *, fixed: bool, method: str = "fork", throttle: float = 0.0
) -> str:
    """Return the article's pool program, bounded to ``cycles``; with the fix if ``fixed``.

    ``throttle`` makes the parent's logging thread wait that many seconds after
    each record, for runs long enough that its backlog would otherwise matter.
    """
    return _POOL_PROGRAM_TEMPLATE.format(
        throttle=_THROTTLE.format(seconds=throttle) if throttle else "",
        method=method,
        cycles=cycles,
        fix_import=_FIX_IMPORT if fixed else "",
        fix_install=_FIX_INSTALL if fixed else "",
        fix_flush=_FIX_FLUSH if fixed else "",
    )


# -- the article's second program: its remedy, a multiprocessing.Queue and a listener --

# The article's recipe, as printed (its indentation restored), with the one
# import it forgot.  Variants below are made from it by replacing whole lines.
QUEUE_RECIPE: Final = """\
import logging
import multiprocessing
from logging.handlers import QueueListener
from threading import Thread  # added: the article uses Thread without importing it
from time import sleep


def listener_configurer():
    root = logging.getLogger()
    h = logging.handlers.RotatingFileHandler('out.log', 'a', 300, 10)
    f = logging.Formatter('%(asctime)s %(processName)-10s %(name)s %(levelname)-8s %(message)s')
    h.setFormatter(f)
    root.addHandler(h)


# Take records from the queue and write them
def listener_process(queue, configurer):
    configurer()
    while False:
        try:
            record = queue.get()
            if record is None:
                break
            logger = logging.getLogger(record.name)
            logger.handle(record)
        except Exception:
            import sys, traceback
            print('Whoops! Problem:', file=sys.stderr)
            traceback.print_exc(file=sys.stderr)


# Worker processes' logging configuration: a QueueHandler puts records into the queue
def worker_configurer(queue):
    h = logging.handlers.QueueHandler(queue)
    root = logging.getLogger()
    root.addHandler(h)
    root.setLevel(logging.DEBUG)


def runs_in_subprocess(queue, configurer):
    configurer(queue)
    print("About to log...")
    logging.debug("hello, I did something: %s", multiprocessing.current_process().name)
    print("...logged, %s",queue.qsize())


if __name__ == '__main__':
    queue = multiprocessing.Queue(-1)
    listener = multiprocessing.Process(target=listener_process, args=(queue, listener_configurer))
    listener.start()
    # The parent process logs all the time too
    worker_configurer(queue)
    def write_logs():
        while True:
            logging.debug("in main process, I just did something")
    Thread(target=write_logs).start()
    while True:
        multiprocessing.Process(target=runs_in_subprocess, args=(queue, worker_configurer)).start()
        sleep(2)
"""

RECIPE_MAIN_LOOP: Final = """\
    while True:
        multiprocessing.Process(target=runs_in_subprocess, args=(queue, worker_configurer)).start()
        sleep(2)
"""
RECIPE_FIXED_LOOP: Final = (
    "    while False:\n",
    "    while True:  # changed: was `while False:`\n",
)
RECIPE_PLAIN_FILE: Final = (
    "    h = logging.handlers.RotatingFileHandler('out.log', 'a', 300, 10)\n",
    "    h = logging.FileHandler('out.log')  # changed: 300 bytes x 10 files keep ~30 records\n",
)
# The parent's logging thread must be stoppable for a clean count at the end.
RECIPE_STOPPABLE_THREAD: Final = (
    """    def write_logs():
        while True:
""",
    """    import threading, os, json, random, signal, time  # added: the measurement
    stop = threading.Event()
    def write_logs():
        while not stop.is_set():  # changed: was `while True`
""",
)


def replace_line(text: str, old: str, new: str) -> str:
    """Replace ``old`` (which must be there) by ``new`` in a program's text."""
    if old not in text:
        msg = f"the program has no {old!r}"
        raise ValueError(msg)
    return text.replace(old, new)


_MAIN: Final = "if __name__ == '__main__':\n"
# (line of the recipe, what queue_recipe_program puts instead)
_RECIPE_FIXES: Final = (
    (
        "    h = logging.handlers.RotatingFileHandler('out.log', 'a', 300, 10)\n",
        (
            "    h = logging.handlers.RotatingFileHandler('out.log', 'a', 10_000_000, 10)"
            "  # changed: 300 bytes x 10 files keep ~30 records\n"
        ),
    ),
    ("import logging\n", "import logging\nimport logfunnel  # the fix, line 1 of 2\n"),
    (
        "def runs_in_subprocess(queue, configurer):\n",
        "def runs_in_subprocess(queue, configurer, cycle):  # changed: takes the cycle\n",
    ),
    (
        (
            '    logging.debug("hello, I did something: %s",'
            " multiprocessing.current_process().name)\n"
        ),
        (
            '    logging.debug("hello, I did something: %s (cycle %d)",'
            " multiprocessing.current_process().name, cycle)  # changed: the cycle\n"
        ),
    ),
    ('    print("...logged, %s",queue.qsize())\n', '    print("...logged")\n'),
    (
        "    worker_configurer(queue)\n",
        "    worker_configurer(queue)\n    funnel = logfunnel.install()  # the fix, line 2 of 2\n",
    ),
    (
        "    Thread(target=write_logs).start()\n",
        "    thread = Thread(target=write_logs)  # changed: kept, to join it\n    thread.start()\n",
    ),
)


def queue_recipe_program(cycles: int, *, method: str) -> str:
    """Return the article's remedy with the listener loop fixed and ``logfunnel.install()`` added.

    Bounded to ``cycles`` children, each with its cycle number in its record,
    under the start method ``method``; every change is marked in the text.
    """
    text = replace_line(QUEUE_RECIPE, *RECIPE_FIXED_LOOP)
    text = replace_line(text, *RECIPE_STOPPABLE_THREAD)
    start = f"    multiprocessing.set_start_method({method!r})  # added\n"
    for old, new in (*_RECIPE_FIXES, ("if __name__ == '__main__':\n", f"{_MAIN}{start}")):
        text = replace_line(text, old, new)
    return replace_line(
        text,
        RECIPE_MAIN_LOOP,
        f"""    for cycle in range({cycles}):  # changed: was `while True` with sleep(2)
        p = multiprocessing.Process(
            target=runs_in_subprocess, args=(queue, worker_configurer, cycle))
        p.start()
        p.join()  # added: a bounded run waits for each child
    stop.set()  # added: a clean end, so out.log can be counted
    thread.join()
    funnel.flush()  # added: every child record reaches the queue before the listener stops
    queue.put(None)
    listener.join()
    funnel.shutdown()
    print("done")
""",
    )
