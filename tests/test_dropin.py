"""Drop-in: every process's own logging works as without logfunnel; funnel sinks get everything.

Each test runs a real program in a fresh interpreter (fork, spawn, forkserver
and ``subprocess`` children as the program starts them) and reads the files
it wrote.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import child_env, run_python

HOSTS = ("thread", "process")


def _program(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def _messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.rsplit(": ", 1)[-1] for line in path.read_text().splitlines() if line]


TOOL = """
    import logging, sys
    logging.basicConfig(filename=sys.argv[1], level=logging.DEBUG, format="%(levelname)s: %(message)s")
    logging.getLogger("tool").debug("tool debug")
    logging.getLogger("tool").info("tool info")
"""


@pytest.mark.parametrize("mode", ["adopt", "file-thread", "file-process"])
def test_a_subprocess_childs_own_basicconfig_works(tmp_path: Path, mode: str) -> None:
    """``subprocess.run([python, tool.py])``: tool.py's basicConfig(filename, level) is obeyed."""
    tool = _program(tmp_path, "tool.py", TOOL)
    funnel_file = tmp_path / "funnel.log"
    install = {
        "adopt": f"logging.basicConfig(filename={str(tmp_path / 'parent.log')!r}, format='%(levelname)s: %(message)s'); logfunnel.install()",
        "file-thread": f"logfunnel.install(file={str(funnel_file)!r})",
        "file-process": f"logfunnel.install(file={str(funnel_file)!r}, host='process')",
    }[mode]
    main = _program(
        tmp_path,
        "main.py",
        f"""
        import logging, subprocess, sys
        import logfunnel
        {install}
        subprocess.run([sys.executable, {str(tool)!r}, {str(tmp_path / "tool.log")!r}], check=True)
        logfunnel.current().shutdown()
        """,
    )
    run_python(str(main), timeout=60)
    assert _messages(tmp_path / "tool.log") == ["tool debug", "tool info"]
    if mode == "adopt":
        # The child's own configuration handled them: no copy on the parent's handlers.
        assert _messages(tmp_path / "parent.log") == []
    else:
        # Funnel-owned sinks get every record of every process.
        assert [m for m in _messages(funnel_file) if m.startswith("tool")] == [
            "tool debug",
            "tool info",
        ]


SPAWN_POOL = """
    import logging, multiprocessing, os, sys
    import logfunnel

    def init(directory):
        logging.basicConfig(filename=os.path.join(directory, f"worker-{os.getpid()}.log"),
                            level=logging.INFO, format="%(levelname)s: %(message)s")

    def work(i):
        logging.getLogger("work").info("record %d", i)
        return os.getpid()

    if __name__ == "__main__":
        directory, method, host = sys.argv[1:4]
        kwargs = {"file": os.path.join(directory, "funnel.log")} if host != "adopt" else {}
        if host == "process":
            kwargs["host"] = "process"
        funnel = logfunnel.install(**kwargs)
        with multiprocessing.get_context(method).Pool(2, initializer=init, initargs=(directory,)) as pool:
            pids = set(pool.map(work, range(8)))
        funnel.shutdown()
        print(len(pids))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
@pytest.mark.parametrize("host", ["adopt", "thread", "process"])
def test_a_pool_initializers_basicconfig_reaches_the_workers_files(
    tmp_path: Path, method: str, host: str
) -> None:
    """The usual spawn recipe (an initializer that calls basicConfig) keeps working."""
    program = _program(tmp_path, "pool.py", SPAWN_POOL)
    run_python(str(program), str(tmp_path), method, host, timeout=90)
    worker_records = sorted(
        m for path in tmp_path.glob("worker-*.log") for m in _messages(path)
    )
    if method == "fork" and host == "adopt":
        # The forked workers inherit the parent's (empty) root: basicConfig works there too.
        pass
    assert worker_records == sorted(f"record {i}" for i in range(8))
    if host != "adopt":
        funnel_records = sorted(m for m in _messages(tmp_path / "funnel.log") if "record" in m)
        assert funnel_records == sorted(f"record {i}" for i in range(8))


RECONFIGURES = """
    import logging, multiprocessing, sys
    logging.basicConfig(level=logging.INFO, filename=sys.argv[1], format="%(levelname)s: %(message)s")

    def work(i):
        logging.getLogger("child").info("child %d", i)

    if __name__ == "__main__":
        logging.getLogger("main").info("main before")
        with multiprocessing.get_context(sys.argv[2]).Pool(2) as pool:
            pool.map(work, range(4))
        # A framework's root hijack: replace the root's handlers wholesale.
        logging.root.handlers = [logging.StreamHandler(sys.stdout)]
        logging.getLogger("main").info("main after")
        with multiprocessing.get_context(sys.argv[2]).Pool(2) as pool:
            pool.map(work, range(4, 8))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("host", HOSTS)
def test_run_file_gets_every_record_whatever_the_program_does_to_its_root(
    tmp_path: Path, method: str, host: str
) -> None:
    """``run --file F``: basicConfig(filename=X) and a root hijack leave F complete."""
    program = _program(tmp_path, "prog.py", RECONFIGURES)
    funnel_file, own = tmp_path / "funnel.log", tmp_path / "own.log"
    run_python(
        "-m", "logfunnel", "run", "--file", str(funnel_file), "--host", host, "--",
        str(program), str(own), method, timeout=90,
    )
    got = sorted(_messages(funnel_file))
    assert got == sorted(["main before", "main after", *(f"child {i}" for i in range(8))])
    # The program's own file is as it would be without logfunnel: its own records
    # before the hijack (and, under fork, the children's, as inherited handlers).
    mine = _messages(own)
    assert "main before" in mine
    assert "main after" not in mine


CHILD_HANDLERS = """
    import logging, multiprocessing, sys
    import logfunnel

    def work(kind):
        log = logging.getLogger("lib")
        if kind == "null":
            log.addHandler(logging.NullHandler())    # what a library does
        else:
            logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))  # a capture handler
        log.warning("from %s", kind)

    if __name__ == "__main__":
        out, mode = sys.argv[1:3]
        if mode == "adopt":
            logging.basicConfig(filename=out, format="%(levelname)s: %(message)s")
            funnel = logfunnel.install()
        else:
            funnel = logfunnel.install(file=out)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.map(work, ["null", "capture"])
        funnel.shutdown()
"""


def test_a_nullhandler_is_not_handling_and_other_handlers_do_not_mute_funnel_sinks(
    tmp_path: Path,
) -> None:
    """Adopt: a NullHandler's record still reaches the parent; sinks: a second handler mutes nothing."""
    program = _program(tmp_path, "handlers.py", CHILD_HANDLERS)
    adopt, sinks = tmp_path / "adopt.log", tmp_path / "sinks.log"
    run_python(str(program), str(adopt), "adopt", timeout=60)
    run_python(str(program), str(sinks), "sinks", timeout=60)
    # "capture" added a root handler of the child's own: it handled that record there.
    assert _messages(adopt) == ["from null"]
    assert sorted(_messages(sinks)) == ["from capture", "from null"]


FORK_BASICCONFIG = """
    import logging, os, sys
    import logfunnel
    funnel = logfunnel.install(file=sys.argv[1])
    pid = os.fork()
    if pid == 0:
        logging.basicConfig(filename=sys.argv[2], level=logging.INFO, format="%(levelname)s: %(message)s")
        logging.getLogger("child").info("child info")
        os._exit(0)
    os.waitpid(pid, 0)
    funnel.shutdown()
"""


def test_a_forked_childs_basicconfig_works_when_the_parent_configured_nothing(
    tmp_path: Path,
) -> None:
    """install(file=) puts nothing on the root, so a forked child's basicConfig is obeyed."""
    program = _program(tmp_path, "forked.py", FORK_BASICCONFIG)
    run_python(str(program), str(tmp_path / "funnel.log"), str(tmp_path / "own.log"))
    assert _messages(tmp_path / "own.log") == ["child info"]
    assert _messages(tmp_path / "funnel.log") == ["child info"]


def test_the_installers_own_basicconfig_after_install_works(tmp_path: Path) -> None:
    """BasicConfig after install(file=) is not a no-op, and the funnel file gets the records too."""
    program = _program(
        tmp_path,
        "after.py",
        f"""
        import logging
        import logfunnel
        funnel = logfunnel.install(file={str(tmp_path / "funnel.log")!r})
        logging.basicConfig(filename={str(tmp_path / "own.log")!r}, level=logging.INFO,
                            format="%(levelname)s: %(message)s")
        logging.getLogger("main").info("hello")
        funnel.shutdown()
        """,
    )
    run_python(str(program))
    assert _messages(tmp_path / "own.log") == ["hello"]
    assert _messages(tmp_path / "funnel.log") == ["hello"]


QUEUE_ATEXIT = """
    import atexit, logging, logging.handlers, os, queue, sys, threading
    import logfunnel
    q = queue.Queue()
    held, release = threading.Event(), threading.Event()

    def hold_the_mutex():
        # A parent thread inside Queue.put at the instant of fork(), made certain.
        with q.mutex:
            held.set()
            release.wait()

    listener = logging.handlers.QueueListener(q, logging.StreamHandler(sys.stdout))
    logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
    logging.getLogger().setLevel(logging.INFO)
    listener.start()
    funnel = logfunnel.install()
    pids = []
    for i in range(int(sys.argv[1])):
        held.clear()
        release.clear()
        holder = threading.Thread(target=hold_the_mutex)
        holder.start()
        held.wait()
        pid = os.fork()
        if pid != 0:
            release.set()
            holder.join()
        if pid == 0:
            atexit.register(listener.stop)   # the cookbook's exit hook, run by sys.exit
            logging.getLogger("child").info("child %d", i)
            sys.exit(0)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    funnel.shutdown()
    listener.stop()
    print(codes)
"""


def test_inherited_queue_locks_are_fresh_so_the_programs_exit_hooks_cannot_hang(
    tmp_path: Path,
) -> None:
    """A forked child's atexit ``listener.stop()`` puts on a queue whose mutex was held at fork."""
    program = _program(tmp_path, "queue_exit.py", QUEUE_ATEXIT)
    proc = run_python(str(program), "5", timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0, 0]"
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("child")) == [
        f"child {i}" for i in range(5)
    ]


def test_a_child_that_never_logs_imports_nothing_of_the_funnel_but_the_hook(
    tmp_path: Path,
) -> None:
    """Joining is free until used: no logging, socket or codec import at start-up."""
    probe = "import sys; print(sorted(m for m in sys.modules if m.startswith(('logfunnel', 'msgpack', 'logging', 'socket'))))"
    env = child_env(LOGFUNNEL_ADDRESS=f"unix:{tmp_path}/writer.sock")
    proc = run_python("-c", probe, env=env)
    assert proc.stdout.strip() == "['logfunnel', 'logfunnel._core', 'logfunnel._core.hook']"
    # Importing logging joins, and still opens no socket and loads no codec.
    probe_logging = "import logging, sys; print(sorted(m for m in sys.modules if m.startswith(('logfunnel._core.connection', 'msgpack', 'socket'))), logging.Logger.callHandlers.__module__)"
    proc = run_python("-c", probe_logging, env=env)
    assert proc.stdout.strip() == "[] logfunnel._core.route"


LEVELS = """
    import logging, multiprocessing, os, subprocess, sys
    import logfunnel

    def child(_):
        return [logging.getLogger(f"l{i}").level for i in (0, 1, 9999)] + [logging.getLogger("late").level]

    if __name__ == "__main__":
        for i in range(10_000):
            logging.getLogger(f"l{i}").setLevel(10 + i % 30)
        funnel = logfunnel.install(file=sys.argv[1])
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(1) as pool:
            first = pool.map(child, [0])[0]
            # Set after the forkserver started: its later children see it.
            logging.getLogger("late").setLevel(logging.ERROR)
            logging.getLogger("l1").setLevel(logging.CRITICAL)
        with ctx.Pool(1) as pool:
            second = pool.map(child, [0])[0]
        subprocess.run(["/bin/true"], check=True)   # E2BIG before
        size = sum(len(k) + len(v) for k, v in os.environ.items() if k.startswith("LOGFUNNEL_"))
        funnel.shutdown()
        print(first, second, size)
"""


def test_levels_travel_without_growing_the_environment(tmp_path: Path) -> None:
    """10,000 loggers with levels: exec works, forkserver children see later changes."""
    program = _program(tmp_path, "levels.py", LEVELS)
    proc = run_python(str(program), str(tmp_path / "funnel.log"), timeout=120)
    first, second, size = proc.stdout.strip().rsplit(" ", 1)[0], None, proc.stdout.split()[-1]
    del second
    assert first.startswith("[10, 11, 19, 0] [10, 50, 19, 40]")
    assert int(size) < 1000


def test_shutdown_restores_the_root_level_and_install_leaves_handlers_alone(
    tmp_path: Path,
) -> None:
    """install(file=, level=) adds no handler anywhere; shutdown() puts the root level back."""
    program = _program(
        tmp_path,
        "restore.py",
        f"""
        import logging, os
        import logfunnel
        before = (list(logging.root.handlers), logging.root.level)
        funnel = logfunnel.install(file={str(tmp_path / "f.log")!r}, level="DEBUG")
        during = (list(logging.root.handlers), logging.root.level)
        funnel.shutdown()
        after = (list(logging.root.handlers), logging.root.level)
        print(before == after, during[0] == before[0], during[1],
              sorted(k for k in os.environ if k.startswith("LOGFUNNEL_")))
        """,
    )
    proc = run_python(str(program))
    assert proc.stdout.split() == ["True", "True", "10", "[]"]


ALL_OR_NOTHING = """
    import glob, logging, os, resource, sys, tempfile
    import logfunnel
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("named").addHandler(logging.NullHandler())

    def state():
        return (list(logging.root.handlers), logging.root.level, logging.Logger.callHandlers,
                logging.Logger.setLevel, {k: v for k, v in os.environ.items()},
                list(logging.getLogger("named").handlers), logfunnel.current(),
                sorted(glob.glob(os.path.join(tempfile.gettempdir(), "logfunnel-*"))),
                len(os.listdir("/proc/self/fd")))

    host = sys.argv[2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    refused = accepted = 0
    for room in range(16):
        before = state()
        top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1 + room, hard))
        try:
            funnel = logfunnel.install(file=sys.argv[1], host=host)
        except OSError:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            refused += 1
            assert state() == before, (room, before, state())
            continue
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        accepted += 1
        assert funnel.shutdown()
        assert state() == before, (room, before, state())
    print(refused, accepted)
"""


@pytest.mark.parametrize("host", HOSTS)
def test_install_is_all_or_nothing(tmp_path: Path, host: str) -> None:
    """install() failing at any step (here: out of file descriptors) changes nothing.

    The descriptor limit is raised one by one from "none left", so install()
    fails at each of its steps in turn, and then succeeds.
    """
    program = _program(tmp_path, "fails.py", ALL_OR_NOTHING)
    # A TMPDIR of its own: the directories it compares are this test's alone.
    private = tmp_path / "tmp"
    private.mkdir()
    proc = run_python(
        str(program), str(tmp_path / "f.log"), host, timeout=120,
        env=child_env(TMPDIR=str(private)),
    )
    refused, accepted = map(int, proc.stdout.split())
    assert refused >= 3
    assert accepted >= 1


def test_a_writer_process_that_cannot_build_its_sinks_changes_nothing(tmp_path: Path) -> None:
    """config= naming a handler class that does not exist: refused, everything as it was."""
    program = _program(
        tmp_path,
        "config_fails.py",
        """
        import logging, os
        import logfunnel
        logging.basicConfig(level=logging.INFO)
        before = (list(logging.root.handlers), logging.root.level, dict(os.environ))
        bad = {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}},
               "root": {"handlers": ["h"], "level": "DEBUG"}}
        for kwargs in (dict(config=bad, host="process"), dict(config=bad)):
            try:
                logfunnel.install(**kwargs)
            except ValueError as exc:
                print("refused")
            print(before == (list(logging.root.handlers), logging.root.level, dict(os.environ)),
                  logfunnel.current())
        """,
    )
    proc = run_python(str(program))
    assert proc.stdout.split("\n")[:4] == ["refused", "True None", "refused", "True None"]


# fmt='%(nope)s' is accepted since context fields (issue 11, item 7): a field a record
# lacks renders as "-" (test_context.py), so a format may name fields only some records have.
BAD_OPTIONS = [
    ("fmt='%(message)d'", "cannot format"),
    ("datefmt=123", "strftime"),
    ("fmt='%(message)s', json=True", "one or the other"),
    ("token='x' * 20", "listen="),
    ("max_bytes=True, file='f.log'", "max_bytes=True"),
    ("full_timeout=float('nan')", "finite"),
    ("full_timeout=float('inf')", "finite"),
    ("fallback='.'", "is a directory"),
    ("listen='tcp:127.0.0.1:0', token='\\udc80' * 20", "surrogates"),
    ("file='.'", "is a directory"),
    ("file=3", "give a path"),
    ("json='yes'", "True or False"),
]


@pytest.mark.parametrize(("kwargs", "says"), BAD_OPTIONS, ids=[k for k, _ in BAD_OPTIONS])
def test_wrong_options_fail_at_install_saying_what_to_change(
    tmp_path: Path, kwargs: str, says: str
) -> None:
    """Each was accepted and then ignored or harmful; now install() refuses it, changing nothing."""
    program = _program(
        tmp_path,
        "bad.py",
        f"""
        import logging, os
        import logfunnel
        try:
            logfunnel.install({kwargs})
        except ValueError as exc:
            print("ValueError", exc)
        print(logfunnel.current(), sorted(k for k in os.environ if k.startswith("LOGFUNNEL_")))
        """,
    )
    proc = run_python(str(program), cwd=tmp_path)
    first, last = proc.stdout.strip().splitlines()[0], proc.stdout.strip().splitlines()[-1]
    assert first.startswith("ValueError"), proc.stdout
    assert says in first
    assert last == "None []"


FORKED_INSTALL = """
    import os, sys
    import logfunnel
    funnel = logfunnel.install(file=sys.argv[1])
    pid = os.fork()
    if pid == 0:
        same = logfunnel.install(file=sys.argv[1]) is funnel and logfunnel.install() is funnel
        try:
            logfunnel.install(file=sys.argv[1] + ".other", level="DEBUG")
            print(same, "accepted", flush=True)
        except ValueError as exc:
            print(same, "refused", "child of the funnel" in str(exc), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    funnel.shutdown()
"""


def test_a_forked_childs_install_with_other_options_is_refused(tmp_path: Path) -> None:
    """Same options (or none) give the parent's funnel; others fail instead of being ignored."""
    program = _program(tmp_path, "forked_install.py", FORKED_INSTALL)
    proc = run_python(str(program), str(tmp_path / "f.log"))
    assert proc.stdout.split() == ["True", "refused", "True"]


def test_run_exits_by_sigint_when_the_program_is_interrupted(tmp_path: Path) -> None:
    """As ``python`` does: an uncaught KeyboardInterrupt ends the process by SIGINT (130 in a shell)."""
    program = _program(tmp_path, "interrupted.py", "raise KeyboardInterrupt\n")
    proc = run_python("-m", "logfunnel", "run", str(program), check=False)
    plain = run_python(str(program), check=False)
    assert plain.returncode == -signal.SIGINT
    assert proc.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the hook is tested on Linux")
def test_the_hook_file_is_installed_beside_the_package() -> None:
    """The start-up hook is what makes children join: it must be in site-packages."""
    import site  # noqa: PLC0415

    found = [
        os.path.join(d, "logfunnel-hook.pth")
        for d in site.getsitepackages()
        if os.path.exists(os.path.join(d, "logfunnel-hook.pth"))
    ]
    assert found, "logfunnel-hook.pth is not installed: children will not join"
    assert "logfunnel._core.hook" in Path(found[0]).read_text()


def _has_cpython_tests() -> bool:
    import importlib.util  # noqa: PLC0415

    try:
        return importlib.util.find_spec("test.test_logging") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _has_cpython_tests(), reason="this Python has no test package")
@pytest.mark.timeout(300)
def test_cpythons_own_test_logging_passes_under_run(tmp_path: Path) -> None:
    """`logfunnel run -m test test_logging`: all pass; with --file, all but test_last_resort.

    With funnel-owned sinks the funnel is a handler of every record, so
    ``logging.lastResort`` (which prints only when no handler exists) stays
    silent: the one test that checks it is the one place where the funnel is
    the point (docs/guarantees.md).
    """
    adopt = run_python("-m", "logfunnel", "run", "-m", "test", "test_logging", "-v",
                       cwd=tmp_path, timeout=280, check=False)
    assert adopt.returncode == 0, adopt.stdout[-3000:] + adopt.stderr[-3000:]
    sinks = run_python("-m", "logfunnel", "run", "--file", str(tmp_path / "f.log"), "-m",
                       "test", "test_logging", "-v", cwd=tmp_path, timeout=280, check=False)
    failed = sorted(
        line.split()[1]
        for line in (sinks.stdout + sinks.stderr).splitlines()
        if line.startswith(("FAIL:", "ERROR:"))
    )
    assert failed == ["test_last_resort"], (sinks.stdout + sinks.stderr)[-3000:]


ADOPT_ROTATING = """
    import logging, logging.handlers, multiprocessing, sys
    import logfunnel

    path, workers, per_worker, use_funnel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=20_000, backupCount=200)
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    funnel = logfunnel.install() if use_funnel else None


    def work(k):
        log = logging.getLogger("worker")
        for i in range(per_worker):
            log.info("w%d %d", k, i)


    if __name__ == "__main__":
        context = multiprocessing.get_context("fork")
        procs = [context.Process(target=work, args=(k,)) for k in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        logging.getLogger("main").info("main done")
        if funnel is not None:
            assert funnel.shutdown(timeout=60)
        print("exit codes", [p.exitcode for p in procs])
"""


def _rotated_lines(path: Path) -> tuple[list[str], list[int]]:
    """Every line of ``path`` and its backups, oldest file first; and each file's size."""
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    files.append(path)
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    return lines, [f.stat().st_size for f in files]


def test_the_programs_rotating_handler_gets_every_forked_workers_record_once_in_order(
    tmp_path: Path,
) -> None:
    """Adopt mode: the program's own ``RotatingFileHandler``, fed by forked workers, rotates alone.

    The same program without ``install()`` is the stock race: every worker's
    inherited copy rotates the file on its own.
    """
    program = _program(tmp_path, "rotating.py", ADOPT_ROTATING)
    log = tmp_path / "app.log"
    workers, per_worker = 2, 3000
    proc = run_python(str(program), str(log), str(workers), str(per_worker), "1", timeout=180)
    assert "exit codes [0, 0]" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines, sizes = _rotated_lines(log)
    assert len(sizes) > 5  # it did rotate, many times
    assert all(size <= 20_000 for size in sizes), sizes
    messages = [line.rsplit(" ", 2)[-2:] for line in lines]
    for k in range(workers):
        own = [int(seq) for tag, seq in messages if tag == f"w{k}"]
        assert own == list(range(per_worker)), f"w{k}: lost, duplicated or reordered"
    # The installer's own record went to its handler at once, the workers'
    # through the writer: across processes there is no order to keep.
    assert sum(line.endswith(" main done") for line in lines) == 1
    assert len(lines) == workers * per_worker + 1
