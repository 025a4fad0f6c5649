"""Batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss", 2017).

Also holds :func:`pairwise_euclidean`, the one Euclidean distance the losses use.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
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

    Distributed (``torch.distributed`` initialised with world size > 1, ``global_batch=True``): the ranks' local
    batches (equal sizes) are all-gathered, detached, and this rank's own rows are put back with their graph, so
    every rank mines and averages over the GLOBAL batch, exactly as one process with the whole batch would; the
    loss value is the same on every rank. Gradient scaling as in :class:`~reid.losses.GDSLoss`: the returned loss
    is ``L.detach() + world_size * (L - L.detach())``, so rank r computes ``world_size * dL/df_r`` and DDP's
    average over ranks is exactly ``dL/dtheta``. One all-gather of the features and one of the labels per call;
    no collective in backward. ``global_batch=False`` mines within the local batch only.

    Args:
        margin: >= 0; 0 selects the soft margin.
        normalize_feature: L2-normalise the features before measuring distances.
        global_batch: under torch.distributed, mine over all ranks' batches (see above).

    Example:
        >>> loss, stats = TripletLoss(margin=0.3)(features, labels)   # features (B, D), labels (B,)
        >>> stats["precision"]   # a python float: the fraction of anchors with d_an > d_ap
    """

    def __init__(self, margin: float = 0.3, normalize_feature: bool = False, global_batch: bool = True) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0 (0 = soft margin), got {margin}")
        self.margin = float(margin)
        self.normalize_feature = normalize_feature
        self.global_batch = global_batch

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch-hard triplet loss of one batch.

        Args:
            features: (B, D) float embeddings.
            labels: (B,) int identity (or pseudo-identity) labels.

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` python floats for logging: ``"precision"``,
            the fraction of the valid anchors with ``d_an > d_ap`` (0 when there is none). The hardest distances
            themselves: :func:`batch_hard_distances`.
        """
        if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"TripletLoss expects features (B, D) and labels (B,), got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if self.global_batch and world_size > 1:
            features, labels = _gather_global_batch(features, labels.to(features.device), world_size)
        loss, stats = self._batch_hard(features, labels)
        if self.global_batch and world_size > 1:
            loss = loss.detach() + world_size * (loss - loss.detach())
        return loss, stats

    def _batch_hard(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.normalize_feature:
            features = F.normalize(features, dim=1)
        d_ap, d_an = batch_hard_distances(features, labels)
        if d_ap.numel() == 0:
            loss = features.sum() * 0.0
            precision = features.new_zeros(())
        else:
            if self.margin > 0:
                loss = F.relu(d_ap - d_an + self.margin).mean()
            else:
                loss = F.softplus(d_ap - d_an).mean()
            precision = (d_an > d_ap).to(features.dtype).mean()
        return loss, {"precision": float(precision)}


def batch_hard_distances(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest positive and hardest negative distance of every valid anchor (see :class:`TripletLoss`).

    Args:
        features: (B, D) float embeddings (as the loss sees them: normalised already when it normalises).
        labels: (B,) int labels.

    Returns:
        ``(d_ap, d_an)``: (V,) each, differentiable, for the V anchors that have a positive other than
        themselves and a negative, in batch order.

    Example:
        >>> batch_hard_distances(torch.tensor([[0.0], [2.0], [5.0]]), torch.tensor([0, 0, 1]))
        (tensor([2., 2.]), tensor([5., 3.]))
    """
    distances = pairwise_euclidean(features, features)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    has_positive = same.sum(dim=1) > 1  # the diagonal always counts once
    has_negative = (~same).any(dim=1)
    valid = has_positive & has_negative
    d_ap = distances.masked_fill(~same, float("-inf")).max(dim=1).values[valid]
    d_an = distances.masked_fill(same, float("inf")).min(dim=1).values[valid]
    return d_ap, d_an


def _gather_global_batch(
    features: torch.Tensor, labels: torch.Tensor, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' (B, D) features and (B,) labels concatenated in rank order; only this rank's rows carry grad."""
    gathered_features = [torch.empty_like(features) for _ in range(world_size)]
    gathered_labels = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(gathered_features, features.detach().contiguous())
    dist.all_gather(gathered_labels, labels.contiguous())
    gathered_features[dist.get_rank()] = features
    return torch.cat(gathered_features), torch.cat(gathered_labels)
