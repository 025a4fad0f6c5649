"""Evaluate a checkpoint (or an untrained backbone) on a test split; writes metrics.json and PNG plots.

    python scripts/eval.py --config configs/demo.yaml --checkpoint outputs/demo/checkpoints/final.pt [--rerank]
"""

import sys

from reid.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
