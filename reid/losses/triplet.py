"""Batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss", 2017).

Also holds :func:`pairwise_euclidean`, the one Euclidean distance the losses use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean (not squared) distances between the rows of ``x`` and the rows of ``y``.

    Computed as ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, min=1e-12))``: the clamp keeps the square root away from 0,
    so identical rows (the diagonal of ``pairwise_euclidean(x, x)``) get distance ~1e-6 and a finite (zero)
    gradient instead of NaN.

    Args:
        x: (B, D) float.
        y: (M, D) float, same dtype and device as ``x``.

    Returns:
        (B, M) Euclidean distances, differentiable w.r.t. ``x`` and ``y``.

    Example:
        >>> pairwise_euclidean(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([[5.]])
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"pairwise_euclidean expects (B, D) and (M, D) tensors, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    squared = (x * x).sum(dim=1, keepdim=True) + (y * y).sum(dim=1).unsqueeze(0) - 2.0 * (x @ y.t())
    return squared.clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss.

    For every anchor i: the hardest positive is the farthest sample with the same label (the max runs over the
    anchor itself too, at distance ~0, which never wins when another positive exists) and the hardest negative
    is the nearest sample with a different label. Then

        margin > 0:   loss = mean_i relu(d_ap_i - d_an_i + margin)      (MarginRankingLoss)
        margin == 0:  loss = mean_i softplus(d_ap_i - d_an_i)             (soft margin)

    Anchors with no positive other than themselves, or with no negative, are left out of the mean. When no
    anchor is valid (one identity per sample, or a single identity in the whole batch) the loss is
    ``features.sum() * 0``: zero, still attached to the graph so ``backward()`` runs and gives zero gradients.

    Args:
        margin: >= 0; 0 selects the soft margin.
        normalize_feature: L2-normalise the features before measuring distances.

    Example:
        >>> loss, stats = TripletLoss(margin=0.3)(features, labels)   # features (B, D), labels (B,)
    """

    def __init__(self, margin: float = 0.3, normalize_feature: bool = False) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0 (0 = soft margin), got {margin}")
        self.margin = float(margin)
        self.normalize_feature = normalize_feature

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Batch-hard triplet loss of one batch.

        Args:
            features: (B, D) float embeddings.
            labels: (B,) int identity (or pseudo-identity) labels.

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` holds detached tensors
            ``"d_ap"`` (V,) and ``"d_an"`` (V,), the hardest positive / negative distances of the V valid
            anchors, and ``"precision"`` (0-dim), the fraction of valid anchors with ``d_an > d_ap``
            (0 when V == 0).
        """
        if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"TripletLoss expects features (B, D) and labels (B,), got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        if self.normalize_feature:
            features = F.normalize(features, dim=1)
        dist = pairwise_euclidean(features, features)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        has_positive = same.sum(dim=1) > 1  # the diagonal always counts once
        has_negative = (~same).any(dim=1)
        valid = has_positive & has_negative

        d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values[valid]
        d_an = dist.masked_fill(same, float("inf")).min(dim=1).values[valid]
        if d_ap.numel() == 0:
            loss = features.sum() * 0.0
            precision = features.new_zeros(())
        else:
            if self.margin > 0:
                loss = F.relu(d_ap - d_an + self.margin).mean()
            else:
                loss = F.softplus(d_ap - d_an).mean()
            precision = (d_an > d_ap).to(features.dtype).mean()
        stats = {"d_ap": d_ap.detach(), "d_an": d_an.detach(), "precision": precision.detach()}
        return loss, stats
