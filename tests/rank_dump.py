"""A test-only observer of training runs: at the end of every adaptation round, EVERY rank writes
``rank{r}_round{k}.pt`` with that round's pseudo-labels, the GDS buffers, the model state dict and the evaluation
history, so that DDP runs can be checked for ranks that drift apart (tests/test_distributed.py).

In a process: ``reid.train(cfg, out=..., observers=[RankDump(folder)])``. Under torchrun, this file is the entry
point, the command line of ``scripts/train.py`` with the folder first:

    python -m torch.distributed.run --nproc_per_node=2 tests/rank_dump.py FOLDER --config ... [--set ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch


class RankDump:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __call__(self, event) -> None:  # event: reid.engine.adapt.RoundEnd
        from reid import distributed

        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({"pseudo_labels": torch.as_tensor(np.asarray(event.pseudo_labels)), "gds": event.gds.state_dict(),
                    "model": event.model.state_dict(), "history": event.history},
                   self.folder / f"rank{distributed.rank()}_round{event.round}.pt")


if __name__ == "__main__":
    from reid.cli import train_main

    sys.exit(train_main(sys.argv[2:], observers=[RankDump(sys.argv[1])]))
