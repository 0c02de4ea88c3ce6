"""A PyTorch DataLoader with two workers whose Dataset logs every item: python torch_loader.py LOG METHOD [--plain].

With ``--plain`` the program logs as it would without logfunnel: a FileHandler
on the root of the main process, which no spawned worker has (and a forked one
writes through its own copy).
"""

from __future__ import annotations

import logging
import sys

import torch
from torch.utils.data import DataLoader, Dataset

import logfunnel

ITEMS = 64


class Logged(Dataset[int]):  # type: ignore[misc,unused-ignore]  # Any without torch (3.10)
    """Each item logs one record from the worker that loads it."""

    def __len__(self) -> int:
        """Return the number of items."""
        return ITEMS

    def __getitem__(self, index: int) -> int:
        """Log the item from the worker that loads it, and return it."""
        logging.getLogger("data.item").info("item %d", index)
        return index


def main() -> int:
    path, method = sys.argv[1], sys.argv[2]
    if "--plain" in sys.argv:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(process)d|%(name)s|%(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        funnel = None
    else:
        funnel = logfunnel.install(file=path, level="INFO", fmt="%(process)d|%(name)s|%(message)s")
    loader = DataLoader(
        Logged(), batch_size=4, num_workers=2, multiprocessing_context=method, shuffle=False
    )
    seen = [int(i) for batch in loader for i in batch]
    assert seen == list(range(ITEMS)), seen
    logging.getLogger("data.main").info("epoch done, %d items, torch %s", len(seen), torch.__version__)
    if funnel is not None:
        funnel.shutdown()
    else:
        logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
