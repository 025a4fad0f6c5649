"""A run's inputs, checked before anything is written: device, process count, output folder, datasets.

Shared by training (:class:`reid.engine.run.Run`), checkpoint evaluation (:mod:`reid.engine.evaluate`) and the
scripts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from reid import distributed
from reid.config import Config
from reid.data.datasets import ReidDataset, build_dataset
from reid.data.loaders import validate_images
from reid.errors import DatasetError, ReidError


def pick_device(name: str) -> torch.device:
    """``device: auto | cpu | cuda`` -> the device of this process (``cuda:LOCAL_RANK`` under torchrun)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ReidError("device: 'cuda' requested but CUDA is not available (use device: auto or cpu)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank)


def configure_determinism(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed Python, numpy and torch; cuDNN / TF32 switches for ``deterministic``."""
    from reid.engine.trainer import seed_everything

    seed_everything(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic


def load_domain(name: str, root: str, cfg: Config, verbose: bool) -> ReidDataset:
    """``build_dataset``, generating the built-in synthetic domains (``synth-a``, ``synth-b``) first if missing;
    ``folder`` (an unlabelled image tree, :func:`reid.data.folder.build_folder_dataset`) with the camera rule and
    optional test split of ``cfg.data``."""
    if name == "folder":
        from reid.data.folder import build_folder_dataset

        return build_folder_dataset(root, camera_rule=cfg.data.camera_rule, camera_regex=cfg.data.camera_regex,
                                    test_root=cfg.data.target_test_root, verbose=verbose)
    if name in ("synth-a", "synth-b"):
        from reid.synthetic import ensure_synthetic

        if distributed.is_main():
            ensure_synthetic(name, root, num_train_ids=cfg.data.synthetic_train_ids,
                             num_test_ids=cfg.data.synthetic_test_ids,
                             images_per_id=cfg.data.synthetic_images_per_id, seed=0,
                             log=print if verbose else None)
        distributed.barrier()
        name = "market-format"
    return build_dataset(name, root, verbose=verbose)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ReidError(f"output folder {folder} is not writable: {error.strerror or error} "
                        "(set output.dir or --out)") from None


def check_world_size(cfg: Config, world_size: int) -> None:
    """Under torchrun the P identities of each global batch are split evenly over the ranks."""
    identities = cfg.data.batch_size // cfg.data.num_instances
    if world_size > 1 and identities % world_size:
        raise ReidError(f"data.batch_size / data.num_instances = {identities} identities per batch must be a "
                        f"multiple of the number of processes ({world_size}): identities are sharded across ranks")
    uses_gds = cfg.gds.enabled and cfg.adapt.enabled and cfg.adapt.rounds > 0
    if world_size > 1 and uses_gds and identities // world_size < 2:
        raise ReidError(f"{identities} identities per batch over {world_size} processes leaves one per process: GDS "
                        "pairs are formed within each process's batch, which would hold no negative pair. Raise "
                        "data.batch_size or use fewer processes")
    if world_size > 1 and cfg.sync_bn and pick_device(cfg.device).type != "cuda":
        raise ReidError("sync_bn: SyncBatchNorm needs CUDA devices (nccl); set sync_bn: false for CPU (gloo) runs")


def drop_unreadable_images(dataset: ReidDataset, role: str, logger) -> ReidDataset:
    """``data.on_bad_image: skip``: drop the train images that cannot be decoded, with one warning line.

    Train pids are relabelled 0..C-1 again in case an identity lost all its images (unlabelled train splits,
    ``data.target: folder``, keep their placeholder pids).
    """
    good, bad = validate_images(dataset.train, on_bad_image="skip")
    if not bad:
        return dataset
    if not good:
        raise DatasetError(f"{dataset.root}: none of the {len(bad)} {role} train images can be read "
                           f"(e.g. {bad[0][0]}: {bad[0][1]})")
    logger.info(f"warning: {role} train: skipped {len(bad)} unreadable image(s) (data.on_bad_image: skip), "
                f"e.g. {bad[0][0]}: {bad[0][1]}")
    if not dataset.train_labelled:
        return dataclasses.replace(dataset, train=good)
    labels = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in good}))}
    return dataclasses.replace(dataset, train=[(path, labels[pid], camid) for path, pid, camid in good])
