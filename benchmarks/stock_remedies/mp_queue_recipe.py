"""Experiment 2: the article's first remedy, a multiprocessing.Queue read by a listener process.

Three parts, each running real programs in a sandbox with a watchdog:

``--part printed``
    The recipe as printed (plus the missing ``from threading import Thread``,
    with three children instead of an endless loop).  Its listener loop is
    ``while False:``, so it reads nothing.  Counts the records in out.log*, the
    children still alive after their work (each waits at exit for its queue
    feeder thread, which waits for the pipe no one reads), and the parent's
    memory.  Then the same with only the loop fixed (``while True:``) and a
    plain FileHandler (the article's RotatingFileHandler(maxBytes=300,
    backupCount=10) keeps only the last ~30 records, so nothing could be
    counted): how many times each child's record arrives.

``--part kill``
    With the loop fixed: a worker that logs in a loop is sent SIGKILL or
    SIGTERM (what ``Process.terminate()`` and ``Pool.terminate()`` send) at a
    random moment.  If its feeder thread held the queue's cross-process write
    lock at that instant, the lock is never released: a probe child started
    afterwards cannot deliver its record or even exit, and the parent's
    records stop too.  Counts such wedges over ``--trials`` trials per signal.

``--part pool``
    With the loop fixed: the article's Pool loop (``with Pool() as pool:
    pool.apply(...)``; leaving the block calls ``terminate()``), children
    configured by fork inheritance.  Counts the child records delivered.

    python benchmarks/stock_remedies/mp_queue_recipe.py --part printed|kill|pool [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import linecache
import re
import sys
from collections import Counter
from pathlib import Path

from _harness import Run, header, run_program

from logfunnel.diagnose.seed_programs import (
    QUEUE_RECIPE as RECIPE,
)
from logfunnel.diagnose.seed_programs import (
    RECIPE_FIXED_LOOP as _FIXED_LOOP,
)
from logfunnel.diagnose.seed_programs import (
    RECIPE_MAIN_LOOP as _MAIN_LOOP,
)
from logfunnel.diagnose.seed_programs import (
    RECIPE_PLAIN_FILE as _PLAIN_FILE,
)
from logfunnel.diagnose.seed_programs import (
    RECIPE_STOPPABLE_THREAD as _STOPPABLE_THREAD,
)
from logfunnel.diagnose.seed_programs import replace_line as _replace


def printed_program(*, fixed_loop: bool) -> str:
    text = RECIPE
    if fixed_loop:
        text = _replace(text, *_FIXED_LOOP)
        text = _replace(text, *_PLAIN_FILE)
    return _replace(
        text,
        _MAIN_LOOP,
        """    import faulthandler, signal  # added: a stuck child can be asked for its stacks
    stacks = open("stacks.txt", "w")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    children = []
    for _ in range(3):  # changed: 3 children, not an endless loop
        p = multiprocessing.Process(target=runs_in_subprocess, args=(queue, worker_configurer))
        p.start()
        children.append(p)
        sleep(2)
    # added: the measurement. A child's work takes milliseconds; 2 s after the
    # last one started, any child still alive is stuck at its exit.
    import json, os
    rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
    stuck = [p for p in children if p.is_alive()]
    if stuck:
        os.kill(stuck[0].pid, signal.SIGUSR1)
        sleep(0.5)
    print("RESULT " + json.dumps({
        "alive": sum(p.is_alive() for p in children),
        "children": len(children),
        "listener_alive": listener.is_alive(),
        "parent_rss_kib": int(rss),
    }))
    os._exit(0)  # the parent would wait for its own stuck feeder thread at exit
""",
    )


def kill_program(signame: str, seed: int) -> str:
    text = _replace(RECIPE, *_FIXED_LOOP)
    text = _replace(text, *_PLAIN_FILE)
    text = _replace(text, *_STOPPABLE_THREAD)
    return _replace(
        text,
        _MAIN_LOOP,
        f"""    # added: the measurement. SIGUSR1 makes a process (and its forked
    # children, which inherit the handler) write its Python stacks.
    import faulthandler
    stacks = open("stacks.txt", "w")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    def busy_worker(queue):  # a worker that logs in a loop, as a batch job's might
        while True:
            logging.debug("busy worker record")
    random.seed({seed})
    victim = multiprocessing.Process(target=busy_worker, args=(queue,))
    victim.start()
    kill_after = random.uniform(0.05, 0.5)  # a random instant of its work
    time.sleep(kill_after)
    os.kill(victim.pid, signal.{signame})
    victim.join()
    # A probe: the article's worker, started after the kill; its record must
    # arrive and it must exit.
    probe = multiprocessing.Process(target=runs_in_subprocess, args=(queue, worker_configurer))
    probe.start()
    probe.join(5)
    deadline = time.monotonic() + 5
    delivered = False
    while time.monotonic() < deadline and not delivered:
        with open("out.log") as f:
            delivered = "hello, I did something: " + probe.name in f.read()
        time.sleep(0.05)
    if probe.exitcode is None:
        os.kill(probe.pid, signal.SIGUSR1)  # its stacks, to stacks.txt
        time.sleep(0.5)
    print("RESULT " + json.dumps({{
        "kill_after": round(kill_after, 3),
        "probe_exited": probe.exitcode is not None,
        "probe_delivered": delivered,
    }}))
    os._exit(0)  # a wedged parent would wait for its own feeder thread at exit
""",
    )


def pool_program(cycles: int, records: int) -> str:
    text = _replace(RECIPE, *_FIXED_LOOP)
    text = _replace(text, *_PLAIN_FILE)
    text = _replace(text, *_STOPPABLE_THREAD)
    text = _replace(
        text,
        """def runs_in_subprocess(queue, configurer):
    configurer(queue)
    print("About to log...")
    logging.debug("hello, I did something: %s", multiprocessing.current_process().name)
""",
        f"""def runs_in_pool(cycle):  # changed: a Pool task; fork children inherit the QueueHandler
    print("About to log...")
    for i in range({records}):  # changed: {records} record(s) per task
        logging.debug("hello, I did something (cycle %d, record %d)", cycle, i)
""",
    )
    text = _replace(text, '    print("...logged, %s",queue.qsize())\n', '    print("...logged")\n')
    return _replace(
        text,
        _MAIN_LOOP,
        f"""    for cycle in range({cycles}):  # the article's Pool loop, bounded
        with multiprocessing.Pool() as pool:
            pool.apply(runs_in_pool, (cycle,))
    # added: the measurement. Stop logging, tell the listener to finish.
    stop.set()
    queue.put_nowait(None)
    listener.join(10)
    print("RESULT " + json.dumps({{"listener_finished": listener.exitcode is not None}}))
    os._exit(0)  # a wedged parent would wait for its own feeder thread at exit
""",
    )


def _result(run: Run) -> dict[str, object] | None:
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            loaded: dict[str, object] = json.loads(line[len("RESULT ") :])
            return loaded
    return None


def part_printed() -> None:
    print("\n## (i-a) the recipe as printed: listener loop `while False:`, 3 children, 2 s apart")
    run = run_program(printed_program(fixed_loop=False), timeout=12)
    result = _result(run)
    records = len(run.lines("hello, I did something"))
    parent = len(run.lines("in main process"))
    print(f"result: {result}; watchdog kill: {run.timed_out}; {run.elapsed:.1f} s")
    print(f"records in out.log*: children {records}, parent {parent}")
    print(f"children's prints: {run.stdout.count('...logged')} x '...logged'")
    if (run.workdir / "stacks.txt").stat().st_size:
        _show_stacks(run, "a child still alive")
    run.cleanup()

    print("\n## (i-b) only the loop fixed (`while True:`) and a plain FileHandler, 3 children")
    run = run_program(printed_program(fixed_loop=True), timeout=12)
    result = _result(run)
    per_child = Counter(
        m[1]
        for line in run.lines("hello, I did something")
        if (m := re.search(r"hello, I did something: (\S+)", line))
    )
    print(f"result: {result}; watchdog kill: {run.timed_out}; {run.elapsed:.1f} s")
    print(f"child records in out.log, per child: {dict(per_child)}")
    print(f"parent records in out.log: {len(run.lines('in main process'))}")
    if "Whoops" in run.stderr:
        print(f"listener errors: {run.stderr.count('Whoops')}")
    run.cleanup()


def _show_stacks(run: Run, who: str = "the stuck probe") -> None:
    """Print a stuck process's faulthandler dump, with the source of each frame's line."""
    print(f"    {who}: Python stacks (faulthandler, SIGUSR1):")
    for line in (run.workdir / "stacks.txt").read_text().splitlines():
        frame = re.match(r'\s*File "([^"]+)", line (\d+) in (\S+)', line)
        if frame:
            source = linecache.getline(frame[1], int(frame[2])).strip()
            print(f"      {Path(frame[1]).name}:{frame[2]} {frame[3]}: {source}")
        elif line.strip():
            print(f"    {line.strip()}")


def part_kill(trials: int) -> None:
    for signame in ("SIGKILL", "SIGTERM"):
        wedged = stuck_exit = lost = 0
        shown_stack = False
        print(f"\n## (ii) {trials} trials: a busy worker gets {signame} at a random instant")
        for seed in range(trials):
            run = run_program(kill_program(signame, seed), timeout=30)
            result = _result(run)
            if result is None:
                wedged += 1
                print(f"trial {seed + 1:2}: no result (watchdog kill: {run.timed_out})")
                run.cleanup()
                continue
            is_wedged = not result["probe_delivered"]
            wedged += is_wedged
            stuck_exit += not result["probe_exited"]
            lost += not result["probe_delivered"]
            print(
                f"trial {seed + 1:2}: killed after {result['kill_after']} s; probe record "
                f"{'delivered' if result['probe_delivered'] else 'NOT delivered'}, probe "
                f"{'exited' if result['probe_exited'] else 'STUCK at exit'}"
                + ("  -> WEDGED" if is_wedged else "")
            )
            if not result["probe_exited"] and not shown_stack:
                shown_stack = True
                _show_stacks(run)
            run.cleanup()
        print(
            f"{signame}: wedged {wedged} of {trials} trials (probe record not delivered in 5 s: "
            f"{lost}; probe stuck at exit: {stuck_exit})"
        )


def part_pool(trials: int, cycles: int, records: int) -> None:
    print(
        f"\n## (iii) {trials} runs x {cycles} cycles of `with Pool() as pool: pool.apply(...)`, "
        f"{records} record(s) per task"
    )
    delivered_total = 0
    wedged = 0
    for trial in range(trials):
        run = run_program(pool_program(cycles, records), timeout=60)
        result = _result(run)
        got = Counter(
            (int(m[1]), int(m[2]))
            for line in run.lines("hello, I did something")
            if (m := re.search(r"hello, I did something \(cycle (\d+), record (\d+)\)", line))
        )
        delivered = len(got)
        dup = sum(1 for n in got.values() if n > 1)
        delivered_total += delivered
        finished = bool(result and result["listener_finished"])
        wedged += not finished
        print(
            f"run {trial + 1:2}: child records delivered {delivered} of {cycles * records}"
            + (f", {dup} more than once" if dup else "")
            + ("" if finished else "; listener never got the sentinel (WEDGED)")
            + ("; watchdog kill" if run.timed_out else "")
            + f"; {run.elapsed:.1f} s"
        )
        run.cleanup()
    total = trials * cycles * records
    print(
        f"delivered {delivered_total} of {total} child records "
        f"({100 * delivered_total / total:.0f}%); "
        f"runs wedged: {wedged} of {trials}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("printed", "kill", "pool"), required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--records", type=int, default=1, help="records each pool task logs")
    args = parser.parse_args()
    header("Experiment 2: multiprocessing.Queue + listener process (the article's first remedy)")
    if args.part == "printed":
        part_printed()
    elif args.part == "kill":
        part_kill(args.trials)
    else:
        part_pool(args.trials, args.cycles, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
