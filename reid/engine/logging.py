"""One run logger: console lines, ``metrics.jsonl`` records and TensorBoard events, written by rank 0 only."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows :class:`RunLogger` wrote to ``<run_dir>/metrics.jsonl``, in order; only those of ``kind`` (e.g.
    ``"eval"``, ``"cluster"``, ``"adapt_epoch"``) when given. Non-finite numbers were written as null (None).

    Example: ``[row["mAP"] for row in read_metrics("outputs/demo", "eval") if row["stage"] == "adapt"]``.
    """
    with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row for row in rows if kind is None or row["kind"] == kind]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


class RunLogger:
    """Logs to stdout, ``<run_dir>/metrics.jsonl`` and TensorBoard (``<run_dir>/events.out.tfevents.*``).

    Args:
        run_dir: the run folder. ``enabled=False`` (ranks > 0) makes every call a no-op.
        quiet: no tqdm progress bars.
        open_files: create the TensorBoard writer now; ``False`` defers it to :meth:`open_files`, so that a run
            failing at start-up (bad config, dataset or checkpoint) leaves no file behind. ``info`` works either way.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, quiet: bool = False,
                 open_files: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.quiet = quiet  # no progress bars (tests, CI logs)
        self.writer = None
        self.start = time.time()
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if open_files:
            self.open_files()

    def open_files(self) -> None:
        """Create the run folder and its TensorBoard events file (rank 0; a no-op while the writer is open)."""
        if self.enabled and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.run_dir))

    def info(self, message: str) -> None:
        if self.enabled:
            elapsed = time.time() - self.start
            print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {message}", file=sys.stdout, flush=True)

    def record(self, kind: str, **values: Any) -> None:
        """Append one JSON line ``{"kind": kind, "time": ..., **values}`` to metrics.jsonl."""
        if not self.enabled:
            return
        row = {"kind": kind, "time": round(time.time() - self.start, 3), **_jsonable(values)}
        with open(self.jsonl_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def log(self, kind: str, values: dict[str, float], *, at: int, line: str, **fields: Any) -> None:
        """One event to all three sinks: ``line`` followed by ``name value`` for each of ``values`` to the
        console, ``{"kind": kind, **fields, **values}`` to metrics.jsonl, and ``values`` as TensorBoard scalars
        ``kind/name`` at step ``at``."""
        self.info(line + " " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))
        self.record(kind, **fields, **values)
        self.scalars(kind, values, at)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        if self.writer is not None and len(values):
            self.writer.add_histogram(tag, np.asarray(values, dtype=np.float64), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
