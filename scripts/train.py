"""Train: stage 1 (source pretraining) then stage 2 (adaptation with triplet + GDS-H).

    python scripts/train.py --config configs/demo.yaml [--set key=value ...] [--resume auto]
    torchrun --nproc_per_node=2 scripts/train.py --config configs/market2duke.yaml
"""

import sys

from reid.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
