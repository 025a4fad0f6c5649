"""Command lines: ``scripts/train.py`` / ``reid-train`` and ``scripts/eval.py`` / ``reid-eval``.

Each parses its arguments and the config (once, here), calls the Python API (:class:`reid.engine.run.Run`,
:func:`reid.engine.evaluate.evaluate_checkpoint`) and prints. A :class:`reid.errors.ReidError` becomes one
``XError: message`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from reid.config import load_config, resolve_paths
from reid.engine.inputs import check_writable  # noqa: F401  (reid.apps use it from here)
from reid.errors import ReidError

if TYPE_CHECKING:
    from reid.engine.adapt import Observer


def _run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    try:
        return main(argv)
    except ReidError as error:
        message = str(error)
        if "\nOriginal Traceback" in message:  # re-raised by a DataLoader worker: keep the original one line
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        print(f"{type(error).__name__}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume auto", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------------------------------- train
def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Source pretraining + unsupervised adaptation (triplet + GDS-H).")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set gds.weight=0.5 (repeatable)")
    parser.add_argument("--resume", default="", help="'auto' (latest in the run folder) or a checkpoint path")
    parser.add_argument("--out", default="", help="run folder (default: output.dir from the config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def train_main(argv: list[str] | None = None, observers: Sequence[Observer] = ()) -> int:
    """``reid-train`` / ``scripts/train.py``; returns the exit status. ``observers``: see :class:`Run`."""
    def train(argv: list[str] | None) -> int:
        from reid.engine.run import Run

        args = train_parser().parse_args(argv)
        cfg = resolve_paths(load_config(args.config, args.overrides))
        Run(cfg, out=args.out or None, resume=args.resume, quiet=args.quiet or bool(os.environ.get("CI")),
            observers=observers).fit()
        return 0

    return _run_cli(train, argv)


# ----------------------------------------------------------------------------------------------------- eval
def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint: CMC / mAP / mINP, plots.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", default="",
                        help="checkpoint path; omit to evaluate the untrained backbone of model.pretrained")
    parser.add_argument("--dataset", default="", help="dataset name (default: data.target)")
    parser.add_argument("--root", default="", help="dataset folder (default: data.target_root)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--flip", action="store_true", help="average with horizontally flipped images")
    parser.add_argument("--out", default="", help="output folder (default: <checkpoint folder>/eval)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def eval_main(argv: list[str] | None = None) -> int:
    """``reid-eval`` / ``scripts/eval.py``: prints the metrics table; returns the exit status."""
    def evaluate(argv: list[str] | None) -> int:
        from reid.engine.evaluate import evaluate_checkpoint
        from reid.evaluation.evaluator import format_metrics

        args = eval_parser().parse_args(argv)
        cfg = resolve_paths(load_config(args.config, args.overrides))
        report = evaluate_checkpoint(cfg, args.checkpoint or None, dataset=args.dataset or None,
                                     root=args.root or None, rerank=args.rerank, flip=args.flip,
                                     out=args.out or None)
        columns = ("R1", "R5", "R10", "mAP", "mINP")
        width = max(16, *(len(label) + 2 for label, _ in report.rows))
        print(f"{'dataset':<{width}}" + "".join(f"{k:>7}" for k in columns))
        for label, values in report.rows:
            print(f"{label:<{width}}" + "".join(f"{100 * values[k]:7.1f}" for k in columns))
        for caption, reason in report.not_produced.items():
            print(f"warning: {caption}: not produced: {reason}", file=sys.stderr)
        print(f"wrote {report.out}/{', '.join(report.written)} ({format_metrics(report.metrics)})")
        return 0

    return _run_cli(evaluate, argv)
