"""The tiny two-stage training run the end-to-end, reliability and distributed tests share.

32x16 images, 12 synthetic identities per domain, a few iterations per stage, no loader workers, CPU: a full run
takes a few seconds. ``tiny_args(data, out, "key=value", ...)`` returns ``scripts/train.py`` arguments (for tests
of the command line itself), ``tiny_config(data, "key=value", ...)`` the same run's config and ``tiny_train(data,
out, "key=value", ...)`` trains it in this process through ``reid.train``; extra overrides come last and win.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_OVERRIDES = [
    "data.synthetic_train_ids=12", "data.synthetic_test_ids=6", "data.synthetic_images_per_id=6",
    "data.height=32", "data.width=16", "data.batch_size=16", "data.num_instances=4", "data.workers=0",
    "data.test_batch_size=64", "model.arch=resnet18", "model.pretrained=none",
    "pretrain.epochs=2", "pretrain.warmup_epochs=1", "pretrain.milestones=[1]", "pretrain.iters_per_epoch=3",
    "adapt.rounds=2", "adapt.epochs_per_round=2", "adapt.iters_per_epoch=2", "adapt.lr=3.5e-4",
    "cluster.eps=0.5", "cluster.min_samples=2", "cluster.k1=6", "cluster.k2=2", "output.log_every=1",
    "amp=false", "device=cpu",
    # the plain recipe these runs were designed around (configs/demo.yaml now defaults to the camera-aware one,
    # whose pieces have tests of their own): the kill points and expectations below count its rounds and saves
    "cluster.camera_norm=none", "cluster.camera_jaccard=false", "adapt.camera_balanced=false", "adapt.loss=triplet",
]


def tiny_overrides(data: Path, *extra: str) -> list[str]:
    return [f"data.source_root={data}/synth-a", f"data.target_root={data}/synth-b", *TINY_OVERRIDES, *extra]


def tiny_config(data: Path, *extra: str):
    """The tiny run's resolved config (``configs/demo.yaml`` + the tiny overrides + ``extra``)."""
    from reid.config import load_config, resolve_paths

    return resolve_paths(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(data, *extra)))


def tiny_train(data: Path, out: Path, *extra: str, resume: str = "", observers=()) -> dict:
    """Train the tiny run into ``out`` with ``reid.train`` (no progress bars); returns its summary."""
    import reid

    return reid.train(tiny_config(data, *extra), out=out, resume=resume, quiet=True, observers=observers)


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    """Arguments of a tiny run on synthetic domains generated under ``data``, writing to ``out``."""
    overrides = tiny_overrides(data, *extra)
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    return args
