"""Camera awareness for clustering and retrieval: per-camera feature normalisation and per-camera neighbour lists.

Real cameras differ in viewpoint, light and background, and an embedding trained elsewhere carries that
difference as a per-camera offset: images of one camera sit closer to each other than to the same person seen
by another camera, so k-NN lists, Jaccard distances and DBSCAN group by camera. Two remedies live here:

- :func:`camera_normalize`: subtract each camera's mean embedding (``center``; and divide by its per-dimension
  standard deviation: ``standardize``), statistics taken from the very images being processed, then
  re-normalise the rows. No training, no labels.
- :func:`camera_neighbours`: nearest neighbours found separately among the same camera's images and among the
  other cameras' (CA-Jaccard, Chen et al., CVPR 2024), so cross-camera matches are not crowded out of a k-NN
  list by same-camera look-alikes.

Both take ``camids`` (N,) and fall back to the plain form when there is no camera information (``None``) or a
single camera; :func:`camera_fallback_reason` says why, for the one informational log line.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

CameraNorm = Literal["none", "center", "standardize"]
# Query rows handled at once when searching one camera's neighbours: (rows x database) float32 blocks.
_BLOCK_ENTRIES = 2**25


def camera_fallback_reason(camids: np.ndarray | None) -> str | None:
    """``None`` when camera-aware processing applies; otherwise why it does not (no ids, one camera)."""
    if camids is None:
        return "no camera ids"
    num_cameras = np.unique(np.asarray(camids)).size
    if num_cameras < 2:
        return f"{num_cameras} camera"
    return None


def camera_normalize(features: np.ndarray, camids: np.ndarray | None, mode: CameraNorm = "center",
                     eps: float = 1e-6) -> np.ndarray:
    """Per-camera centring (or standardisation) of embeddings, rows L2-normalised again.

    Args:
        features: (N, D) float embeddings (normally L2-normalised).
        camids: (N,) camera ids, or None.
        mode: ``none`` (returned as float32, unchanged), ``center`` (x - mean of its camera) or ``standardize``
            ((x - mean) / (std + eps), per dimension, population std).
        eps: added to the standard deviation.

    Returns:
        (N, D) float32, unit rows (a row that centres to exactly 0 stays 0). Unchanged when ``mode`` is
        ``none`` or :func:`camera_fallback_reason` gives a reason (no ids, one camera).

    Example:
        >>> x = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1]], dtype=np.float32)
        >>> camera_normalize(x, np.array([0, 0, 1, 1])).round(3).tolist()
        [[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]]
    """
    features = np.asarray(features, dtype=np.float32)
    if mode not in ("none", "center", "standardize"):
        raise ValueError(f"camera normalisation mode must be none, center or standardize, got {mode!r}")
    if mode == "none" or camera_fallback_reason(camids) is not None:
        return features
    camids = np.asarray(camids).ravel()
    if camids.shape[0] != features.shape[0]:
        raise ValueError(f"camids has {camids.shape[0]} entries for {features.shape[0]} feature rows")
    _, groups = np.unique(camids, return_inverse=True)
    counts = np.bincount(groups).astype(np.float64)[:, None]
    x = features.astype(np.float64)
    sums = np.zeros((counts.shape[0], x.shape[1]))
    np.add.at(sums, groups, x)
    means = sums / counts
    out = x - means[groups]
    if mode == "standardize":
        squares = np.zeros_like(sums)
        np.add.at(squares, groups, out * out)
        out /= np.sqrt(squares / counts)[groups] + eps
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def camera_neighbours(features: np.ndarray, camids: np.ndarray, k: int,
                      same_camera: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row by inner product, among the rows of its own camera
    (``same_camera=True``: the row itself included, normally first) or among the other cameras' rows.

    Args:
        features: (N, D) float32, L2-normalised rows.
        camids: (N,) camera ids.
        k: neighbours per row, >= 1.
        same_camera: which pool to search.

    Returns:
        similarities (N, k) float32 and indices (N, k) int64, each row by decreasing similarity, ties by
        increasing index. A row whose pool holds fewer than k images is padded by repeating its first
        (nearest) entry; a row with an empty pool (inter-camera search, one camera) gets ``-1`` indices and
        ``-inf`` similarities.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    camids = np.asarray(camids).ravel()
    num_samples = features.shape[0]
    similarities = np.full((num_samples, k), -np.inf, dtype=np.float32)
    indices = np.full((num_samples, k), -1, dtype=np.int64)
    x = torch.from_numpy(features)
    for camera in np.unique(camids):
        rows = np.flatnonzero(camids == camera)
        pool = rows if same_camera else np.flatnonzero(camids != camera)
        if pool.size == 0:
            continue
        take = min(k, pool.size)
        database = x[torch.from_numpy(pool)]
        chunk = max(1, _BLOCK_ENTRIES // pool.size)
        with torch.inference_mode():
            for start in range(0, rows.size, chunk):
                block_rows = rows[start:start + chunk]
                top_sims, top = torch.topk(x[torch.from_numpy(block_rows)] @ database.T, take, dim=1)
                top_sims, top_ids = top_sims.numpy(), pool[top.numpy()]
                order = np.lexsort((top_ids, -top_sims), axis=-1)  # ties by increasing dataset index
                similarities[block_rows, :take] = np.take_along_axis(top_sims, order, axis=1)
                indices[block_rows, :take] = np.take_along_axis(top_ids, order, axis=1)
        if take < k:
            similarities[rows, take:] = similarities[rows, :1]
            indices[rows, take:] = indices[rows, :1]
    return similarities, indices
