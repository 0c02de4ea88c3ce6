"""Dask: the workers of a LocalCluster, a scale() and a separately started worker all log into the client's funnel."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import child_env

distributed = pytest.importorskip("distributed", reason="dask is a test extra")

import logfunnel  # noqa: E402
from logfunnel.integrations import dask as funnel_dask  # noqa: E402

RECORDS = 40
FMT = "%(process)d|%(name)s|%(levelname)s|%(message)s"


@pytest.fixture
def funnel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[logfunnel.Funnel]:
    """Install a funnel with a TCP listener, as attach() needs."""
    for name in list(os.environ):
        if name.startswith("LOGFUNNEL_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    level = root.level
    funnel = logfunnel.install(
        file=tmp_path / "all.log", level="INFO", fmt=FMT, listen="tcp:127.0.0.1:0"
    )
    yield funnel
    funnel.shutdown()
    root.setLevel(level)


def _task_messages(path: Path) -> collections.Counter[str]:
    lines = [line for line in path.read_text().splitlines() if "|task.work|" in line]
    return collections.Counter(line.rsplit("|", 1)[1] for line in lines)


def test_every_worker_local_scaled_and_separate_logs_every_record_once(
    funnel: logfunnel.Funnel, tmp_path: Path
) -> None:
    """Records of tasks on LocalCluster workers, scaled ones and an external worker land once."""
    cluster = distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1,
        dashboard_address=":0",  # a free port: another cluster may hold 8787 (a warning, an error here)
    )
    client = distributed.Client(cluster)
    external = None
    try:
        plugin = funnel_dask.attach(client)
        assert funnel_dask.attach(client).name == plugin.name  # idempotent: one plugin, replaced
        cluster.scale(2)  # a worker the plugin meets when it starts
        # A worker that is no child of this process: no LOGFUNNEL_ variable reaches it.
        command = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                   "--nthreads", "1", "--no-dashboard", "--name", "external"]  # fmt: skip
        external = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        client.wait_for_workers(3, timeout=90)
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 3

        def work(task: int, records: int) -> int:
            import logging  # noqa: PLC0415 - runs in the worker
            import os  # noqa: PLC0415

            log = logging.getLogger("task.work")
            for record in range(records):
                log.info("task %d record %d", task, record)
            return os.getpid()

        futures = [
            client.submit(work, task, RECORDS, workers=[address], pure=False)
            for task, address in enumerate(workers)
        ]
        pids = set(client.gather(futures))
        assert len(pids) == 3
    finally:
        client.close()
        cluster.close()
        if external is not None:
            external.terminate()
            external.communicate(timeout=60)
    assert funnel.flush()
    messages = _task_messages(tmp_path / "all.log")
    assert set(messages) == {f"task {t} record {r}" for t in range(3) for r in range(RECORDS)}
    assert all(count == 1 for count in messages.values()), messages.most_common(3)
    stats = funnel.stats()
    assert stats.refused == 0
    assert stats.processes >= 3


def test_attach_needs_a_tcp_listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without listen=, attach() says what to change instead of leaving workers silent."""
    for name in list(os.environ):
        if name.startswith("LOGFUNNEL_"):
            monkeypatch.delenv(name)
    with (
        logfunnel.install(file=tmp_path / "x.log"),
        pytest.raises(ValueError, match='listen="tcp:HOST:PORT"'),
    ):
        funnel_dask.attach(object())
