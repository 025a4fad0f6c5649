"""Independent reference implementations the library is checked against (by the tests and the benchmarks).

``evaluate_rank_loop`` is a plain re-implementation of torchreid's ``eval_market1501`` Python loop with AGW's
mINP; it is slow (about 25 ms per Market-1501 query) and is kept as the independent reference for
:func:`reid.evaluation.evaluate_rank`.
"""

from __future__ import annotations

import numpy as np
import torch

from reid.data.datasets import JUNK_PID


def evaluate_rank_loop(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                       g_camids: np.ndarray, max_rank: int = 50) -> dict:
    """Reference CMC / mAP / mINP, one query at a time, as torchreid's ``eval_market1501`` + AGW's mINP.

    Same protocol and return value as :func:`reid.evaluation.evaluate_rank`. Where it departs from torchreid:
    junk gallery items (pid -1) are removed along with same-pid-same-camera ones; a kept list shorter than
    ``max_rank`` is padded with its last CMC value (1) instead of failing; the CMC mean is taken in float64
    (torchreid casts to float32); no valid query raises ValueError instead of an assert.

    Args:
        distmat: (Q, G) distances; q_pids, q_camids: (Q,); g_pids, g_camids: (G,); max_rank: CMC length.

    Returns:
        ``{"cmc": (min(max_rank, G),) float64, "mAP": float, "mINP": float, "num_valid_queries": int}``.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_query, num_gallery = distmat.shape
    max_rank = min(max_rank, num_gallery)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(num_query):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        remove |= g_pids[order] == JUNK_PID
        raw_cmc = matches[q_idx][~remove]  # 1 where the ranked, kept gallery item is a true match
        if not np.any(raw_cmc):
            continue

        cmc = raw_cmc.cumsum()
        last_match = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[last_match] / (last_match + 1.0))
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        if cmc.size < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - cmc.size, cmc[-1])])
        all_cmc.append(cmc)

        num_relevant = raw_cmc.sum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())]) * raw_cmc
        all_ap.append(precision.sum() / num_relevant)

    if not all_cmc:
        raise ValueError("no query has a true match in the gallery")
    # as torchreid: all_cmc = np.asarray(all_cmc).astype(np.float32); all_cmc.sum(0) / num_valid_q
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_cmc)
    return {"cmc": cmc.astype(np.float64), "mAP": float(np.mean(all_ap)),
            "mINP": float(np.mean(all_inp)), "num_valid_queries": len(all_cmc)}


def per_group_forwards(model: torch.nn.Module, images: torch.Tensor, groups: list[torch.Tensor]) -> dict:
    """Camera-based BN the obvious way: one plain forward per camera group (each BN layer sees only that group's
    images), the outputs put back in batch order. The one-forward implementation (reid/models/camera_bn.py) is
    checked against it, and timed against it."""
    outputs: dict[str, torch.Tensor] = {}
    for index in groups:
        for key, value in model(images[index]).items():
            outputs.setdefault(key, value.new_zeros((images.shape[0], *value.shape[1:])))
            outputs[key] = outputs[key].index_copy(0, index, value)
    return outputs
