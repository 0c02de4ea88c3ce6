"""PyTorch: a DataLoader's two workers (fork and spawn) deliver every record of their Dataset once."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from conftest import run_python

pytest.importorskip(
    "torch", reason="torch 2.13.0 (CPU) is a test extra on Python 3.11, where a wheel is at hand"
)

SCRIPT = str(Path(__file__).parent / "scripts" / "torch_loader.py")
ITEMS = 64


def _items(path: Path) -> collections.Counter[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return collections.Counter(line.rsplit("|", 1)[1] for line in lines if "|data.item|" in line)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_deliver_every_record_once(tmp_path: Path, method: str) -> None:
    """num_workers=2: each item's record lands once, from the workers' own pids."""
    log = tmp_path / "run.log"
    run_python(SCRIPT, str(log), method, timeout=240)
    items = _items(log)
    assert set(items) == {f"item {i}" for i in range(ITEMS)}
    assert all(n == 1 for n in items.values()), items.most_common(3)
    pids = {line.split("|", 1)[0] for line in log.read_text().splitlines() if "|data.item|" in line}
    assert len(pids) == 2  # the two workers, not the main process
    assert "epoch done, 64 items" in log.read_text()


def test_without_logfunnel_spawned_workers_lose_every_record(tmp_path: Path) -> None:
    """The baseline the funnel fixes: a spawn worker has no handler, so its records are gone."""
    log = tmp_path / "plain.log"
    run_python(SCRIPT, str(log), "spawn", "--plain", timeout=240)
    assert _items(log) == collections.Counter()
    assert "epoch done" in log.read_text()
