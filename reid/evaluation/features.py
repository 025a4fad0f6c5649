"""The one feature extractor (training, clustering, evaluation and scripts/eval.py all use it) and distances."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from reid import distributed


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                     flip: bool = False, amp: bool = False) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embed every image of ``loader`` in eval mode.

    Args:
        loader: yields ``(images, pids, camids, indices)``; under DDP each rank holds a shard (see
            :func:`reid.data.loaders.build_test_loader`) and the shards are gathered back into dataset order.
        flip: average the embeddings of the image and its horizontal mirror (test-time augmentation).
        amp: autocast on CUDA (features are returned in float32 either way).

    Returns:
        features (N, D) float32 CPU tensor, L2-normalised; pids (N,) int64; camids (N,) int64; in dataset order.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else contextlib.nullcontext()
    chunks, pid_chunks, cam_chunks, index_chunks = [], [], [], []
    for images, pids, camids, indices in loader:
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        with autocast:
            embedding = model(images).float()
            if flip:
                embedding = embedding + model(torch.flip(images, dims=[3])).float()
        chunks.append(F.normalize(embedding, dim=1).cpu())
        pid_chunks.append(torch.as_tensor(pids))
        cam_chunks.append(torch.as_tensor(camids))
        index_chunks.append(torch.as_tensor(indices))
    model.train(was_training)
    if not chunks:  # an empty shard (fewer images than ranks): 1-D empty tensors concatenate with any shard
        chunks, pid_chunks, cam_chunks, index_chunks = ([torch.empty(0, dtype=t)] for t in (
            torch.float32, torch.int64, torch.int64, torch.int64))
    features = torch.cat(chunks)
    pids, camids, indices = torch.cat(pid_chunks), torch.cat(cam_chunks), torch.cat(index_chunks)
    if distributed.world_size() > 1:
        features, pids, camids, indices = distributed.gather_in_order(features, pids, camids, indices)
    else:
        order = torch.argsort(indices)
        features, pids, camids = features[order], pids[order], camids[order]
    return features, pids.numpy().astype(np.int64), camids.numpy().astype(np.int64)


def pairwise_distance(query: torch.Tensor, gallery: torch.Tensor, chunk_size: int = 4096) -> np.ndarray:
    """Squared Euclidean distances of L2-normalised features, ``2 - 2 q.g``, clamped at 0.

    Args:
        query: (Q, D) float32, L2-normalised.  gallery: (G, D) float32, L2-normalised.
    Returns:
        (Q, G) float32 numpy array.
    """
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would perturb rankings in the 4th digit
    try:
        out = np.empty((query.shape[0], gallery.shape[0]), dtype=np.float32)
        gallery_t = gallery.float().t()
        for start in range(0, query.shape[0], chunk_size):
            block = query[start:start + chunk_size].float() @ gallery_t
            out[start:start + chunk_size] = (2.0 - 2.0 * block).clamp_(min=0.0).cpu().numpy()
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
