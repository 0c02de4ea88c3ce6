"""The article's second program (its first remedy), with ``logfunnel.install()`` added.

Usage: python seed_queue_listener.py METHOD CYCLES

Kept as close to the article as a bounded run allows; every change is marked:
a ``multiprocessing.Queue`` read by a listener process that writes through a
``RotatingFileHandler``, the parent's thread logging in a loop, and a new
``Process`` per cycle whose worker configures its own ``QueueHandler``.
"""

# The article's program, kept in its own style (untyped, root-logger calls):
# ruff: noqa: PLC0415, LOG015
# mypy: ignore-errors

import logging
import logging.handlers
import multiprocessing
import sys
from threading import Event, Thread  # changed: the article uses Thread without importing it

import logfunnel  # the fix, line 1 of 2

stop = Event()  # added: lets the bounded run end the logging thread


def listener_configurer():
    root = logging.getLogger()
    # changed: 300 bytes and 10 backups would delete records before they can be
    # counted; 10 MB keeps every one of them in out.log.
    h = logging.handlers.RotatingFileHandler("out.log", "a", 10_000_000, 10)
    f = logging.Formatter("%(asctime)s %(processName)-10s %(name)s %(levelname)-8s %(message)s")
    h.setFormatter(f)
    root.addHandler(h)


# Takes records from the queue and writes them.
def listener_process(queue, configurer):
    configurer()
    while True:  # changed: the article's `while False:` never reads a record
        try:
            record = queue.get()
            if record is None:
                break
            logger = logging.getLogger(record.name)
            logger.handle(record)
        except Exception:
            import traceback

            print("Whoops! Problem:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)


# The workers' configuration: a QueueHandler puts records on the queue.
def worker_configurer(queue):
    h = logging.handlers.QueueHandler(queue)
    root = logging.getLogger()
    root.addHandler(h)
    root.setLevel(logging.DEBUG)


def runs_in_subprocess(queue, configurer, cycle):  # changed: takes the cycle number
    configurer(queue)
    print("About to log...")
    # changed: the cycle number, so each record can be counted exactly
    logging.debug(
        "hello, I did something: %s (cycle %d)", multiprocessing.current_process().name, cycle
    )
    print("...logged")


if __name__ == "__main__":
    method, cycles = sys.argv[1], int(sys.argv[2])
    multiprocessing.set_start_method(method)  # added: the start method under test
    queue = multiprocessing.Queue(-1)
    listener = multiprocessing.Process(target=listener_process, args=(queue, listener_configurer))
    listener.start()
    # The parent process logs too.
    worker_configurer(queue)
    funnel = logfunnel.install()  # the fix, line 2 of 2

    def write_logs():
        while not stop.is_set():  # changed: was `while True`
            logging.debug("in main process, I just did something")

    thread = Thread(target=write_logs)
    thread.start()
    for cycle in range(cycles):  # changed: was `while True` with sleep(2) between starts
        p = multiprocessing.Process(
            target=runs_in_subprocess, args=(queue, worker_configurer, cycle)
        )
        p.start()
        p.join()  # added: a bounded run waits for each worker
    stop.set()
    thread.join()
    funnel.flush()  # added: everything sent reaches the queue before the listener stops
    queue.put(None)  # added: ends the listener's loop
    listener.join()
    funnel.shutdown()
    print("done")
