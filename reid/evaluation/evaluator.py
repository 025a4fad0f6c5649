"""Evaluate a model on a query/gallery split: features -> distances (optionally re-ranked) -> CMC / mAP / mINP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reid.cluster.camera import camera_normalize
from reid.data.datasets import Item
from reid.data.loaders import build_test_loader
from reid.evaluation.camera_bn import extract_features_camera_bn
from reid.evaluation.features import extract_features, pairwise_distance
from reid.evaluation.metrics import evaluate_rank
from reid.evaluation.rerank import re_ranking


@dataclass
class EvalResult:
    """``metrics``: {"mAP", "mINP", "R1", "R5", "R10", "cmc"} as fractions; ``distmat``: (Q, G) used for ranking;
    ``camera_metrics``: the same after transductive per-camera normalisation, or None; ``camera_mode`` names it
    (``center``, ``standardize``, ``bn``, ``bn+center``, ...)."""

    metrics: dict
    distmat: np.ndarray
    query_features: torch.Tensor
    gallery_features: torch.Tensor
    camera_metrics: dict | None = None
    camera_mode: str = ""


def summarize(result: dict) -> dict:
    """evaluate_rank output -> flat metrics with R1/R5/R10 (fractions)."""
    cmc = np.asarray(result["cmc"])
    ranks = {f"R{r}": float(cmc[min(r, len(cmc)) - 1]) for r in (1, 5, 10)}
    return {"mAP": float(result["mAP"]), "mINP": float(result["mINP"]), **ranks, "cmc": cmc.tolist()}


def evaluate_dataset(model: torch.nn.Module, query: list[Item], gallery: list[Item], *, height: int, width: int,
                     batch_size: int = 128, workers: int = 0, device: torch.device | str = "cpu",
                     flip: bool = False, rerank: bool = False, max_rank: int = 50, amp: bool = False,
                     distributed: bool = False, camera_norm: str = "none", camera_bn: bool = False) -> EvalResult:
    """Market-1501-protocol evaluation of ``model`` on one test split (see :func:`evaluate_rank`).

    ``camera_norm`` (``none`` | ``center`` | ``standardize``): transductive per-camera normalisation of the
    embeddings (:func:`reid.cluster.camera.camera_normalize`), statistics from each camera's query + gallery
    images together; not the standard protocol: the headline ``metrics`` stay standard, and the camera-normalised
    ones come as ``camera_metrics`` (None when ``camera_norm`` is ``none`` and ``camera_bn`` is false).
    ``camera_bn``: the camera row's features are extracted with per-camera BN statistics estimated from each
    camera's query + gallery images (:mod:`reid.evaluation.camera_bn`), then ``camera_norm`` applies.
    """
    query_loader = build_test_loader(query, height, width, batch_size, workers, distributed=distributed)
    gallery_loader = build_test_loader(gallery, height, width, batch_size, workers, distributed=distributed)
    qf, q_pids, q_camids = extract_features(model, query_loader, device, flip=flip, amp=amp)
    gf, g_pids, g_camids = extract_features(model, gallery_loader, device, flip=flip, amp=amp)
    distmat = _distances(qf, gf, rerank)
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    camera_metrics, camera_mode = None, "+".join(["bn"] * camera_bn + [camera_norm] * (camera_norm != "none"))
    if camera_mode:
        both = torch.cat([qf, gf])
        if camera_bn:  # every rank extracts the whole test set here: the same features everywhere
            both, _, _ = extract_features_camera_bn(model, [*query, *gallery], height=height, width=width,
                                                    batch_size=batch_size, workers=workers, device=device,
                                                    flip=flip, amp=amp)
        both = both.numpy()
        if camera_norm != "none":
            both = camera_normalize(both, np.concatenate([q_camids, g_camids]), camera_norm)
        camera_distmat = _distances(torch.from_numpy(both[: len(qf)]), torch.from_numpy(both[len(qf):]), rerank)
        camera_metrics = summarize(evaluate_rank(camera_distmat, q_pids, g_pids, q_camids, g_camids,
                                                 max_rank=max_rank))
    return EvalResult(summarize(result), distmat, qf, gf, camera_metrics, camera_mode)


def _distances(qf: torch.Tensor, gf: torch.Tensor, rerank: bool) -> np.ndarray:
    distmat = pairwise_distance(qf, gf)
    if rerank:
        distmat = re_ranking(distmat, pairwise_distance(qf, qf), pairwise_distance(gf, gf))
    return distmat


def format_metrics(metrics: dict) -> str:
    return " ".join(f"{k} {100 * metrics[k]:5.1f}" for k in ("R1", "R5", "R10", "mAP", "mINP"))
