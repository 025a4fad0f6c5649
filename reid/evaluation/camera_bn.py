"""Camera-based batch normalisation (Zhuang et al., "Rethinking the Distribution Gap of Person Re-identification
with Camera-based Batch Normalization", ECCV 2020).

Every camera gets its own BatchNorm statistics, so each camera's images are normalised towards the same
distribution at every BN layer, not only at the embedding (:func:`reid.cluster.camera.camera_normalize` does the
latter). Two uses:

- **Extraction** (:func:`extract_features_camera_bn`): for each camera, the BN statistics are re-estimated from
  that camera's images alone (forward passes in train mode for the BN layers, cumulative average over the
  batches, no gradient), then that camera's embeddings are extracted in eval mode with them. The model's own
  statistics are restored afterwards. Used for the clustering features (``cluster.camera_bn``, statistics from
  the unlabelled target-train images) and for the transductive test row (``eval.camera_bn``, statistics from
  each camera's query + gallery images).
- **Training** (``ReidNet.forward(images, camids)``, :mod:`reid.models.camera_bn`): in a
  training batch, each camera's images are normalised with their own batch statistics, in one forward of the whole
  batch (``adapt.camera_bn``, ``pretrain.camera_bn``).

A camera with fewer than ``min_images`` images keeps the model's statistics (a BN layer after global pooling
cannot estimate a variance from one image).

Example::

    feats, pids, camids = extract_features_camera_bn(model, target.train, height=256, width=128)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reid.data.datasets import Item
from reid.data.loaders import build_test_loader
from reid.evaluation.features import extract_features


def bn_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (1d / 2d, including a BNNeck), in module order."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def estimate_bn_statistics(model: torch.nn.Module, loader, device: torch.device | str = "cpu") -> None:
    """Replace the running statistics of every BN layer by those of ``loader``'s images (in place).

    The other layers stay in eval mode; each BN layer's running mean / variance become the cumulative average
    over the batches (``momentum=None``) of its batch mean / unbiased batch variance (AdaBN).
    """
    was_training = model.training
    layers = bn_layers(model)
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    for images, *_ in loader:
        model(images.to(device, memory_format=torch.channels_last))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)


def bn_state(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A copy of every BN layer's (running_mean, running_var, num_batches_tracked)."""
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bn_layers(model)]


@torch.no_grad()
def load_bn_state(model: torch.nn.Module, state: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    for layer, (mean, var, count) in zip(bn_layers(model), state, strict=True):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
        layer.num_batches_tracked.copy_(count)


def extract_features_camera_bn(model: torch.nn.Module, items: Sequence[Item], *, height: int, width: int,
                               batch_size: int = 128, workers: int = 0, device: torch.device | str = "cpu",
                               flip: bool = False, amp: bool = False,
                               min_images: int = 2) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embeddings of ``items`` with per-camera BN statistics; same outputs as
    :func:`reid.evaluation.features.extract_features` (L2-normalised, dataset order).

    Every process computes the whole set (no sharding under torchrun), so all ranks get the same features.
    The model's BN statistics are left as they were.
    """
    camids = np.array([cam for _, _, cam in items], dtype=np.int64)
    saved = bn_state(model)
    features = None
    try:
        for camera in np.unique(camids):
            index = np.flatnonzero(camids == camera)
            subset = [items[i] for i in index]
            loader = build_test_loader(subset, height, width, batch_size, workers)
            if len(subset) >= min_images:  # replaces every layer's statistics (reset first)
                estimate_bn_statistics(model, loader, device)
            else:  # too few images: the model's own statistics
                load_bn_state(model, saved)
            part, _, _ = extract_features(model, loader, device, flip=flip, amp=amp)
            if features is None:
                features = torch.empty(len(items), part.shape[1], dtype=part.dtype)
            features[torch.from_numpy(index)] = part
    finally:
        load_bn_state(model, saved)
    pids = np.array([pid for _, pid, _ in items], dtype=np.int64)
    if features is None:
        features = torch.empty(0, 0)
    return features, pids, camids
