"""Log inside and outside ``logfunnel.context()`` blocks, from every kind of process.

Usage: ``context_mix.py OUT_PATH HOST json|text``

Installs a funnel writing ``OUT_PATH`` (JSON lines, or text lines with
``TEXT_FORMAT``, which names the context fields) and logs records tagged
``[CX-where]``:

* ``main-outside``, ``main-inside``, ``main-nested``, ``main-extra`` (an
  ``extra=`` named like a field: it wins), ``main-thread`` (a thread started
  inside the block: threads do not inherit contextvars), ``main-after``;
* from processes started inside the block: ``fork``, ``spawn``, ``forkserver``
  (multiprocessing), ``subprocess`` (a Python child through the environment),
  ``fork-outside`` (started after the block);
* ``forkserver-second``: a forkserver child started in a second block with
  other values, from the forkserver server the first block started;
* tasks handed to pools made *outside* the block, submitted inside with
  ``logfunnel.carry``: ``pool-spawn-N`` (ProcessPoolExecutor, spawn) and
  ``joblib-N`` and ``joblib-lazy-N`` (joblib's loky backend, the latter
  evaluated in joblib's own thread); ``pool-plain-N``, submitted inside
  without ``carry``, shows what the pool's workers have instead (nothing).

Prints ``done`` once shut down.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import subprocess
import sys
import threading
from typing import Any

import joblib

import logfunnel

TEXT_FORMAT = "%(job)s|%(shard)s|%(processName)s|%(message)s"
log = logging.getLogger("cx")
CHILD_CODE = "import logging; logging.getLogger('cx').warning('[CX-subprocess] from a subprocess')"


def child(tag: str) -> None:
    """Log one record in a child process."""
    log.warning("[CX-%s] from a child", tag)


def task(tag: str) -> str:
    """Log one record in a pool worker."""
    log.warning("[CX-%s] from a pool task", tag)
    return tag


def start(method: str, tag: str) -> None:
    """Start a child with ``method``, wait for it, check it exited cleanly."""
    context: Any = multiprocessing.get_context(method)
    process = context.Process(target=child, args=(tag,), name=f"cx-{tag}")
    process.start()
    process.join(60)
    assert process.exitcode == 0, (tag, process.exitcode)


def main() -> None:
    """Run every case, then shut the funnel down."""
    out, host, kind = sys.argv[1:4]
    sink: dict[str, Any] = {"json": True} if kind == "json" else {"fmt": TEXT_FORMAT}
    funnel = logfunnel.install(file=out, level="INFO", host=host, **sink)  # type: ignore[arg-type]
    spawn_pool = concurrent.futures.ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("spawn")
    )
    assert spawn_pool.submit(task, "pool-warm").result(60) == "pool-warm"  # workers exist now
    parallel = joblib.Parallel(n_jobs=2, backend="loky")
    assert parallel(joblib.delayed(task)(t) for t in ("joblib-warm",)) == ["joblib-warm"]

    log.info("[CX-main-outside] before any block")
    with logfunnel.context(job="nightly", shard=3):
        log.info("[CX-main-inside] in the block")
        with logfunnel.context(shard=4, attempt=2):
            log.info("[CX-main-nested] in the inner block")
        log.info("[CX-main-extra] an extra of the same name", extra={"shard": "mine"})
        thread = threading.Thread(target=log.info, args=("[CX-main-thread] a new thread",))
        thread.start()
        thread.join(60)
        for method in ("fork", "spawn", "forkserver"):
            start(method, method)
        proc = subprocess.run([sys.executable, "-c", CHILD_CODE], timeout=60, check=False)
        assert proc.returncode == 0
        tags = [f"pool-spawn-{i}" for i in range(4)]
        carried = logfunnel.carry(task)
        assert list(spawn_pool.map(carried, tags, timeout=60)) == tags
        assert spawn_pool.submit(task, "pool-plain-0").result(60) == "pool-plain-0"
        jobs = [f"joblib-{i}" for i in range(4)]
        assert parallel(joblib.delayed(logfunnel.carry(task))(t) for t in jobs) == jobs
        # pre_dispatch="1", batch_size=1: joblib evaluates every item after the first in the thread
        # that collects results, where this block is not active (by default, some).
        lazy = joblib.Parallel(n_jobs=2, backend="loky", pre_dispatch="1", batch_size=1)
        jobs = [f"joblib-lazy-{i}" for i in range(4)]
        assert lazy(joblib.delayed(logfunnel.carry(task))(t) for t in jobs) == jobs
    with logfunnel.context(job="second", shard=5):
        start("forkserver", "forkserver-second")
    start("fork", "fork-outside")
    log.info("[CX-main-after] after every block")
    spawn_pool.shutdown()
    assert funnel.flush(timeout=60)
    assert funnel.shutdown()
    print("done")


if __name__ == "__main__":
    main()
