"""Image reading, the image dataset and the train (P x K) / test data loaders.

Bad images fail loudly: :func:`read_image` raises :class:`~reid.errors.DatasetError` naming the file for a
missing, empty, truncated or non-image file (PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left at its default,
False, and the pixel data is decoded inside the ``try``). :func:`validate_images` checks a whole list up front
and can drop the bad files instead (``on_bad_image="skip"``).

Reproducible augmentation: the train dataset owns a private torch RNG stream, seeded from ``seed`` in the main
process (``workers=0``) and, in each worker, from the worker's torch seed, which the DataLoader derives from its
seeded ``generator``. Two train loaders built with the same arguments yield identical batches, and the random
transforms never touch (or depend on) the global torch RNG.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, get_worker_info

from reid import distributed as process_group
from reid.data.datasets import Item
from reid.data.samplers import DistributedRandomIdentitySampler, RandomIdentitySampler
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from reid.errors import DatasetError

BAD_IMAGE_POLICIES = ("fail", "skip")


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB (grayscale, RGBA, palette, CMYK are converted).

    Raises:
        DatasetError: ``cannot read image <path>: <reason>`` for a missing, empty, truncated or non-image file.
    """
    image, reason = _decode_rgb(path)
    if image is None:
        raise DatasetError(f"cannot read image {path}: {reason}")
    return image


def _decode_rgb(path: str | Path) -> tuple[Image.Image | None, str]:
    """``(RGB image, "")``, or ``(None, why it cannot be read)``."""
    # Someone may have switched PIL to silently pad truncated files with grey; we want them reported.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            return image.convert("RGB"), ""
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        empty = os.path.getsize(path) == 0
        return None, "empty file (0 bytes)" if empty else "not an image file (unknown format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        return None, f"truncated file ({message})" if "truncated" in message else message


def validate_images(
    items: Sequence[Item], on_bad_image: str = "fail"
) -> tuple[list[Item], list[tuple[str, str]]]:
    """Decode every image once; keep the good items.

    Args:
        items: ``(path, pid, camid)``.
        on_bad_image: ``"fail"`` raises at the first bad file; ``"skip"`` drops bad files.

    Returns:
        ``(good_items, bad)`` where ``bad`` lists ``(path, reason)``.

    Raises:
        DatasetError: a bad file with ``on_bad_image="fail"``.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got '{on_bad_image}'")
    good, bad = [], []
    for item in items:
        image, reason = _decode_rgb(item[0])
        if image is not None:
            good.append(item)
        elif on_bad_image == "fail":
            raise DatasetError(f"cannot read image {item[0]}: {reason}")
        else:
            bad.append((item[0], reason))
    return good, bad


class ImageDataset(Dataset):
    """``(path, pid, camid)`` items -> ``(image tensor, pid, camid, index)``.

    Args:
        items: the split.
        transform: PIL image -> tensor (e.g. :func:`~reid.data.transforms.build_transforms`); None returns
            the PIL image.
        seed: when given, the transform's random draws come from a private torch RNG stream seeded with it
            (reseeded per DataLoader worker by :func:`seed_worker`), so augmentation is reproducible.

    Raises (at ``__getitem__``):
        DatasetError: the image cannot be read.
    """

    def __init__(
        self, items: Sequence[Item], transform: Callable | None = None, seed: int | None = None
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self._rng_state: torch.Tensor | None = None
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the private augmentation stream from ``seed``."""
        self._rng_state = torch.Generator().manual_seed(seed).get_state()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple:
        path, pid, camid = self.items[index]
        image = read_image(path)
        if self.transform is not None:
            image = self._apply_transform(image)
        return image, pid, camid, index

    def _apply_transform(self, image: Image.Image):
        if self._rng_state is None:
            return self.transform(image)
        # torchvision v1 transforms draw from the global CPU RNG; swap our stream in and out around them.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            output = self.transform(image)
            self._rng_state = torch.get_rng_state()
        return output


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive every RNG of a worker from the loader-given torch seed."""
    worker_seed = torch.initial_seed()  # base_seed (from the loader's generator) + worker_id
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, ImageDataset) and info.dataset._rng_state is not None:
        info.dataset.reseed(worker_seed)


def _rank_seed(seed: int, rank: int) -> int:
    """A per-rank seed, so ranks augment differently but reproducibly."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def build_train_loader(
    items: Sequence[Item],
    height: int,
    width: int,
    batch_size: int,
    num_instances: int,
    workers: int,
    seed: int,
    flip_prob: float = 0.5,
    pad: int = 10,
    random_erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    num_replicas: int | None = None,
    rank: int | None = None,
    camera_balanced: bool = False,
) -> DataLoader:
    """P x K training loader with augmentation; batches are ``(images (B, 3, H, W) float32, pids, camids,
    indices)`` with int64 label tensors.

    Args:
        items: ``(path, pid, camid)`` with pids as the training labels (ground truth or pseudo-labels).
        height, width: image size in pixels.
        batch_size: GLOBAL batch size P x K; with ``num_replicas`` = W each rank gets ``batch_size / W``.
        num_instances: K.
        workers: DataLoader worker processes (0 loads in the main process).
        seed: seeds the sampler order and the augmentation.
        flip_prob, pad, random_erasing_prob, mean, std: see :func:`~reid.data.transforms.build_transforms`.
        num_replicas, rank: world size and rank for DDP; None (or W=1) for one process.
        camera_balanced: spread each identity's K images over its cameras (see
            :class:`~reid.data.samplers.RandomIdentitySampler`); False keeps the plain shuffle.

    The sampler is ``loader.sampler``; call :func:`set_train_epoch` at the start of every epoch. Batches are
    never partial (``drop_last=True``).

    Example::

        >>> loader = build_train_loader(dataset.train, 256, 128, batch_size=64, num_instances=4, workers=4, seed=0)
        >>> images, pids, camids, indices = next(iter(loader))
    """
    rank = rank or 0
    if num_replicas is None or num_replicas == 1:
        sampler: RandomIdentitySampler = RandomIdentitySampler(
            items, batch_size, num_instances, seed=seed, camera_balanced=camera_balanced
        )
        local_batch_size = batch_size
    else:
        sampler = DistributedRandomIdentitySampler(
            items, batch_size, num_instances, num_replicas, rank, seed=seed, camera_balanced=camera_balanced
        )
        local_batch_size = sampler.local_batch_size
    transform = build_transforms(
        height,
        width,
        is_train=True,
        flip_prob=flip_prob,
        pad=pad,
        random_erasing_prob=random_erasing_prob,
        mean=mean,
        std=std,
    )
    rank_seed = _rank_seed(seed, rank)
    return DataLoader(
        ImageDataset(items, transform, seed=rank_seed),
        batch_size=local_batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=False,  # workers are re-seeded by every new iterator (see set_train_epoch)
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(rank_seed),
    )


def set_train_epoch(loader: DataLoader, epoch: int, seed: int, rank: int = 0) -> None:
    """Start epoch ``epoch`` of a :func:`build_train_loader` loader from a known state: the sampler order
    (``set_epoch``) and the augmentation streams restart from ``seed`` (pass one derived from the epoch), in the
    main process (``workers=0``) and in the workers, whose seeds the loader draws from its generator. A run resumed
    at an epoch boundary then augments exactly as the uninterrupted run did.
    """
    loader.sampler.set_epoch(epoch)
    rank_seed = _rank_seed(seed, rank)
    loader.generator.manual_seed(rank_seed)
    loader.dataset.reseed(rank_seed)


def build_test_loader(
    items: Sequence[Item],
    height: int,
    width: int,
    batch_size: int,
    workers: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    distributed: bool = False,
) -> DataLoader:
    """Loader over ``items`` in order, no augmentation, last partial batch kept.

    Batches are ``(images (B, 3, H, W) float32, pids, camids, indices)``. With ``distributed=True`` (under
    torchrun) rank r reads items r, r+W, r+2W, ... (no padding); ``indices`` are the global positions, so the
    shards can be gathered back into dataset order.
    """
    transform = build_transforms(height, width, is_train=False, mean=mean, std=std)
    sampler = None
    if distributed and process_group.is_distributed():
        world, rank = process_group.world_size(), process_group.rank()
        sampler = list(range(rank, len(items), world))
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def train_loader_from(d, items: Sequence[Item], *, seed: int, camera_balanced: bool = False) -> DataLoader:
    """:func:`build_train_loader` from the config's ``data`` section (a :class:`reid.config.DataConfig`), sharded
    over the torchrun processes when there are several. Example:
    ``train_loader_from(cfg.data, source.train, seed=derive_seed(cfg.seed, "pretrain"))``."""
    return build_train_loader(items, d.height, d.width, d.batch_size, d.num_instances, d.workers, seed=seed,
                              flip_prob=d.flip_prob, pad=d.pad, random_erasing_prob=d.random_erasing_prob,
                              num_replicas=process_group.world_size(), rank=process_group.rank(),
                              camera_balanced=camera_balanced)
