"""Global Distance-distributions Separation loss, GDS / GDS-H (Jin et al., ECCV 2020), as fixed in docs/GDS.md.

Pairs and statistics: for a batch f_1..f_B with labels y_1..y_B, the pairs i < j with y_i = y_j are positive and
those with y_i != y_j negative; d_ij is the Euclidean distance of the L2-normalised embeddings (raw embeddings
with ``normalize=False``). The batch statistics are the mean and the population variance of the positive and of
the negative distances. Global statistics follow a momentum update whose stored part is detached::

    mu_g  <- beta * stopgrad(mu_g)  + (1 - beta) * mu_batch          (var_g likewise; the first update is mu_batch)
    L_GDS = softplus(mu_g+ - mu_g-) + lambda_sigma * (var_g+ + var_g-)
    L_H   = softplus((mu_g+ + kappa * sigma_g+) - (mu_g- - kappa * sigma_g-)),   sigma = sqrt(max(var, 1e-12))
    loss  = L_GDS + lambda_h * L_H   (hard=True)   or   L_GDS   (hard=False)

``mining="overlap"`` replaces, in L_H only, each side's global (mu, sigma) by the batch mean and standard deviation
of that side's hard pairs, the pairs inside the overlap of the two global Gaussians (thresholds from this step's
global statistics, detached)::

    hard positives: d+ > mu_g- - kappa * sigma_g-        hard negatives: d- < mu_g+ + kappa * sigma_g+
    L_H   = softplus((m_hp + kappa * s_hp) - (m_hn - kappa * s_hn))

with (m_hp, s_hp) the mean / population std of the hard positive distances, or (mu_g+, sigma_g+) when there is
no hard positive (likewise for the negative side).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from reid.losses.triplet import pairwise_euclidean

_SIDES = ("pos", "neg")
MINING_MODES = ("none", "overlap")


class GDSLoss(nn.Module):
    """GDS-H loss with momentum-tracked global distance statistics.

    State (registered buffers, so ``state_dict()`` and checkpoints carry them): ``mu_pos, var_pos, mu_neg,
    var_neg`` (float32 scalars, NaN until first set) and ``initialized`` ((2,) bool: positive side, negative
    side). The two sides are tracked independently because a batch may lack positive (or negative) pairs.

    Rules where GDS.md leaves room:

    - A batch with no positive (negative) pair leaves that side's buffers unchanged; the loss then uses the
      stored, detached values for it, so no gradient flows through that side.
    - Never initialised: while either side has never been set (e.g. every batch so far had one sample per
      label), the loss is ``features.sum() * 0`` (zero, attached to the graph); the side that is available in
      the batch is still recorded in the buffers.
    - Buffers are written only in training mode (``self.training``). In eval mode the loss is computed exactly
      as in training (batch statistics blended with the stored ones) but nothing is written.

    Distributed (``torch.distributed`` initialised with world size > 1): pairs are formed only within each
    rank's local batch; the counts, sums and sums of squares of the local positive and negative distances are
    all-reduced (one all-reduce of 6 float64 numbers per call), and mean = S1 / n, var = max(S2 / n - mean^2, 0),
    so every rank holds the same global statistics, buffers and loss value: those of one process whose pair set
    is the union of the ranks' local pair sets. Gradient scaling: the reduced sums are
    ``allreduce(local).detach() + world_size * (local - local.detach())``, so the gradient that rank r
    computes w.r.t. its own features is ``world_size * dL/df_r``. DDP averages parameter gradients over ranks,
    hence the averaged gradient is exactly dL/dtheta of that single process, consistent with a triplet loss
    averaged over the local batch. No collective runs in backward.

    Args:
        momentum: beta in [0, 1]; the weight of the stored statistics.
        lambda_sigma: >= 0, weight of the variance term in L_GDS.
        lambda_h: >= 0, weight of L_H (used when ``hard``).
        kappa: >= 0, how many standard deviations the hard term pushes apart.
        normalize: measure distances between L2-normalised embeddings.
        hard: GDS-H (True) or plain GDS (False).
        mining: ``"none"`` (L_H on the global statistics, as above) or ``"overlap"``: L_H on the statistics of
            the batch's hard pairs. Hard positives are the positive pairs with distance
            > mu_neg - kappa * sigma_neg, hard negatives the negative pairs with distance < mu_pos + kappa *
            sigma_pos (this step's global statistics, detached: the pairs inside the overlap of the two global
            Gaussians). Their mean and population variance (pooled over ranks like the batch statistics; no
            momentum) replace mu and var of that side in L_H, so the gradient flows through the hard pairs'
            distances with weight 1. A side without a hard pair (on any rank) falls back to its global mu and
            var, i.e. to today's L_H for that side. L_GDS and the buffers are the same in both modes.

    Attributes (for the distance histograms, refreshed by every forward):
        last_pos_dist, last_neg_dist: (P,), (N,) float32 CPU tensors, this rank's positive / negative pair
            distances of the last batch.

    Example:
        >>> gds = GDSLoss(momentum=0.9, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0)
        >>> loss_gds, stats = gds(features, pseudo_labels)   # (B, D), (B,); stats["l_h"], stats["mu_pos"], ...
        >>> loss = loss_triplet + gds_weight * loss_gds
    """

    mu_pos: torch.Tensor
    var_pos: torch.Tensor
    mu_neg: torch.Tensor
    var_neg: torch.Tensor
    initialized: torch.Tensor

    def __init__(
        self,
        momentum: float = 0.9,
        lambda_sigma: float = 1.0,
        lambda_h: float = 1.0,
        kappa: float = 1.0,
        normalize: bool = True,
        hard: bool = True,
        mining: str = "none",
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"GDS momentum (beta) must be in [0, 1], got {momentum}")
        for name, value in (("lambda_sigma", lambda_sigma), ("lambda_h", lambda_h), ("kappa", kappa)):
            if value < 0:
                raise ValueError(f"GDS {name} must be >= 0, got {value}")
        if mining not in MINING_MODES:
            raise ValueError(f"GDS mining must be one of {MINING_MODES}, got {mining!r}")
        self.momentum = float(momentum)
        self.lambda_sigma = float(lambda_sigma)
        self.lambda_h = float(lambda_h)
        self.kappa = float(kappa)
        self.normalize = normalize
        self.hard = hard
        self.mining = mining
        for side in _SIDES:
            self.register_buffer(f"mu_{side}", torch.tensor(float("nan"), dtype=torch.float32))
            self.register_buffer(f"var_{side}", torch.tensor(float("nan"), dtype=torch.float32))
        self.register_buffer("initialized", torch.zeros(2, dtype=torch.bool))
        self.last_pos_dist = torch.empty(0)
        self.last_neg_dist = torch.empty(0)

    def extra_repr(self) -> str:
        return (
            f"momentum={self.momentum}, lambda_sigma={self.lambda_sigma}, lambda_h={self.lambda_h}, "
            f"kappa={self.kappa}, normalize={self.normalize}, hard={self.hard}, mining={self.mining}"
        )

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                confident: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """GDS(-H) loss of one batch; updates the global statistics in training mode.

        Args:
            features: (B, D) float embeddings (half precision is computed in float32).
            labels: (B,) int (pseudo) identity labels.
            confident: optional (B,) bool; positive pairs are only those of two confident images
                (:func:`pair_distances`).

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` python floats for logging (one device-to-host
            copy): ``l_gds, l_h, total`` (total = the loss), the batch statistics ``batch_mu_pos, batch_var_pos,
            batch_mu_neg, batch_var_neg`` (NaN for a side without pairs), the global statistics used by the loss
            ``mu_pos, var_pos, mu_neg, var_neg`` (NaN while uninitialised), and ``num_pos_pairs, num_neg_pairs``
            (global counts under distributed training); with ``mining="overlap"`` also ``hard_mu_pos,
            hard_var_pos, hard_mu_neg, hard_var_neg`` (NaN for a side without hard pairs) and
            ``num_hard_pos_pairs, num_hard_neg_pairs``.
        """
        if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"GDSLoss expects features (B, D) and labels (B,), got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        embeddings = F.normalize(features, dim=1) if self.normalize else features
        if confident is not None:
            confident = confident.to(device=features.device, dtype=torch.bool)
        pos_dist, neg_dist = pair_distances(embeddings, labels.to(features.device), confident)

        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world_size > 1:
            batch_stats = _global_statistics(pos_dist, neg_dist, world_size)
        else:
            batch_stats = [_local_statistics(pos_dist), _local_statistics(neg_dist)]

        global_stats = [
            self._update(side_index, mean, var, features.dtype)
            for side_index, (_, mean, var) in enumerate(batch_stats)
        ]
        (mu_pos, var_pos), (mu_neg, var_neg) = global_stats
        hard_stats = None
        if mu_pos is None or mu_neg is None:
            zero = features.sum() * 0.0
            l_gds, l_h, total = zero, zero, zero
        else:
            l_gds = F.softplus(mu_pos - mu_neg) + self.lambda_sigma * (var_pos + var_neg)
            sigma_pos = var_pos.clamp(min=1e-12).sqrt()
            sigma_neg = var_neg.clamp(min=1e-12).sqrt()
            if self.mining == "overlap":
                hard_stats = self._hard_statistics(pos_dist, neg_dist, mu_pos, sigma_pos, mu_neg, sigma_neg,
                                                   world_size)
                (_, hard_mu_pos, hard_var_pos), (_, hard_mu_neg, hard_var_neg) = hard_stats
                if hard_mu_pos is not None and hard_var_pos is not None:
                    mu_pos, sigma_pos = hard_mu_pos, hard_var_pos.clamp(min=1e-12).sqrt()
                if hard_mu_neg is not None and hard_var_neg is not None:
                    mu_neg, sigma_neg = hard_mu_neg, hard_var_neg.clamp(min=1e-12).sqrt()
            l_h = F.softplus((mu_pos + self.kappa * sigma_pos) - (mu_neg - self.kappa * sigma_neg))
            total = l_gds + self.lambda_h * l_h if self.hard else l_gds

        stats = self._record(l_gds, l_h, total, batch_stats, global_stats, pos_dist, neg_dist, hard_stats)
        return total, stats

    def _hard_statistics(
        self,
        pos_dist: torch.Tensor,
        neg_dist: torch.Tensor,
        mu_pos: torch.Tensor,
        sigma_pos: torch.Tensor,
        mu_neg: torch.Tensor,
        sigma_neg: torch.Tensor,
        world_size: int,
    ) -> list[tuple[int, torch.Tensor | None, torch.Tensor | None]]:
        """(count, mean, population variance) of the hard positive and hard negative distances (``mining=overlap``).

        Thresholds: this step's global statistics, detached. Under distributed training the hard pairs of all
        ranks are pooled exactly as the batch statistics are (:func:`_global_statistics`), so every rank gets the
        same values; every rank takes part in the all-reduce, even one without hard pairs.
        """
        pos_threshold = (mu_neg - self.kappa * sigma_neg).detach()
        neg_threshold = (mu_pos + self.kappa * sigma_pos).detach()
        hard_pos = pos_dist[pos_dist > pos_threshold.to(pos_dist.dtype)]
        hard_neg = neg_dist[neg_dist < neg_threshold.to(neg_dist.dtype)]
        if world_size > 1:
            return _global_statistics(hard_pos, hard_neg, world_size)
        return [_local_statistics(hard_pos), _local_statistics(hard_neg)]

    def _update(
        self,
        side_index: int,
        batch_mean: torch.Tensor | None,
        batch_var: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Blend one side's batch statistics into the stored ones; returns the (mean, var) the loss uses."""
        side = _SIDES[side_index]
        stored_mean, stored_var = getattr(self, f"mu_{side}"), getattr(self, f"var_{side}")
        initialized = bool(self.initialized[side_index])
        if batch_mean is None or batch_var is None:
            if not initialized:
                return None, None
            return stored_mean.detach().to(dtype), stored_var.detach().to(dtype)
        if initialized:
            beta = self.momentum
            new_mean = beta * stored_mean.detach().to(batch_mean.dtype) + (1.0 - beta) * batch_mean
            new_var = beta * stored_var.detach().to(batch_var.dtype) + (1.0 - beta) * batch_var
        else:
            new_mean, new_var = batch_mean, batch_var
        if self.training:
            with torch.no_grad():
                stored_mean.copy_(new_mean.detach())
                stored_var.copy_(new_var.detach())
                self.initialized[side_index] = True
        return new_mean, new_var

    def _record(
        self,
        l_gds: torch.Tensor,
        l_h: torch.Tensor,
        total: torch.Tensor,
        batch_stats: list[tuple[int, torch.Tensor | None, torch.Tensor | None]],
        global_stats: list[tuple[torch.Tensor | None, torch.Tensor | None]],
        pos_dist: torch.Tensor,
        neg_dist: torch.Tensor,
        hard_stats: list[tuple[int, torch.Tensor | None, torch.Tensor | None]] | None = None,
    ) -> dict[str, float]:
        """The stats :meth:`forward` returns, and ``last_*_dist``, with one device-to-host copy."""
        names = ["l_gds", "l_h", "total"]
        values: list[torch.Tensor | None] = [l_gds, l_h, total]
        for side, (_, mean, var) in zip(_SIDES, batch_stats):
            names += [f"batch_mu_{side}", f"batch_var_{side}"]
            values += [mean, var]
        for side, (mean, var) in zip(_SIDES, global_stats):
            names += [f"mu_{side}", f"var_{side}"]
            values += [mean, var]
        if self.mining == "overlap":  # NaN while the loss is zero (a side never seen): no hard pairs were mined
            for side, (_, mean, var) in zip(_SIDES, hard_stats or [(0, None, None)] * 2):
                names += [f"hard_mu_{side}", f"hard_var_{side}"]
                values += [mean, var]
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=pos_dist.device)
        terms = torch.stack([nan if v is None else v.detach().to(torch.float64).reshape(()) for v in values])
        host = torch.cat(
            [terms, pos_dist.detach().to(torch.float64), neg_dist.detach().to(torch.float64)]
        ).cpu()
        stats = dict(zip(names, host[: len(names)].tolist()))
        stats["num_pos_pairs"] = float(batch_stats[0][0])
        stats["num_neg_pairs"] = float(batch_stats[1][0])
        if self.mining == "overlap":
            stats["num_hard_pos_pairs"] = float(hard_stats[0][0]) if hard_stats else 0.0
            stats["num_hard_neg_pairs"] = float(hard_stats[1][0]) if hard_stats else 0.0
        self.last_pos_dist = host[len(names) : len(names) + pos_dist.numel()].float()
        self.last_neg_dist = host[len(names) + pos_dist.numel() :].float()
        return stats


def pair_distances(embeddings: torch.Tensor, labels: torch.Tensor,
                   confident: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances of the positive and the negative pairs i < j of one batch.

    Args:
        embeddings: (B, D) float.
        labels: (B,) int.
        confident: optional (B,) bool: a positive pair counts only when both of its images are confident
            (``gds.pairs: core``: DBSCAN core points); negative pairs are never filtered.

    Returns:
        ``(pos_dist, neg_dist)``: (P,) distances of the (confident) pairs with equal labels and (N,) of the pairs
        with different labels, in row-major order of (i, j); P + N = B (B - 1) / 2 without ``confident``.
    """
    num = embeddings.shape[0]
    rows, cols = torch.triu_indices(num, num, offset=1, device=embeddings.device)
    distances = pairwise_euclidean(embeddings, embeddings)[rows, cols]
    same = labels[rows] == labels[cols]
    positive = same if confident is None else same & confident[rows] & confident[cols]
    return distances[positive], distances[~same]


def _local_statistics(distances: torch.Tensor) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
    """(count, mean, population variance) of (P,) distances; two-pass variance. Mean/var are None if P == 0."""
    count = distances.numel()
    if count == 0:
        return 0, None, None
    mean = distances.mean()
    return count, mean, (distances - mean).pow(2).mean()


def _global_statistics(
    pos_dist: torch.Tensor, neg_dist: torch.Tensor, world_size: int
) -> list[tuple[int, torch.Tensor | None, torch.Tensor | None]]:
    """(count, mean, population variance) of the positive and negative distances pooled over all ranks.

    Sums are taken in float64 and all-reduced detached; the local part re-enters with weight ``world_size`` so
    that DDP's gradient averaging yields the single-process gradient (see :class:`GDSLoss`).
    """
    parts = []
    for distances in (pos_dist, neg_dist):
        as_double = distances.to(torch.float64)
        parts += [as_double.new_tensor(float(distances.numel())), as_double.sum(), as_double.pow(2).sum()]
    local = torch.stack(parts)
    reduced = local.detach().clone()
    dist.all_reduce(reduced)
    sums = reduced + world_size * (local - local.detach())
    counts = reduced[0::3].tolist()

    stats: list[tuple[int, torch.Tensor | None, torch.Tensor | None]] = []
    for side_index, distances in enumerate((pos_dist, neg_dist)):
        count = int(round(counts[side_index]))
        if count == 0:
            stats.append((0, None, None))
            continue
        mean = sums[3 * side_index + 1] / count
        var = (sums[3 * side_index + 2] / count - mean * mean).clamp(min=0.0)
        stats.append((count, mean.to(distances.dtype), var.to(distances.dtype)))
    return stats
