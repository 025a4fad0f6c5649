"""Cluster-memory contrastive losses: :class:`ClusterMemory` (Cluster Contrast, Dai et al., 2021: one
momentum-updated centroid per pseudo-label cluster and an InfoNCE over all of them) and its camera-aware form
:class:`CameraMemory` (CAP, Wang et al., AAAI 2021: one proxy per cluster and camera).

Each round, after clustering, :meth:`ClusterMemory.reset` stores the L2-normalised mean embedding of every
cluster. In a batch, an image's embedding ``f`` (L2-normalised) is scored against every centroid,
``logits = f @ M.T / temperature``, and the loss is the cross-entropy with its cluster as the target. After the
loss, each image of the batch moves its centroid, one image after the other in batch order:
``M[y] <- normalise(momentum * M[y] + (1 - momentum) * f)`` (no gradient through the memory).

Under DDP the update uses the gathered global batch (in rank order), so every rank holds the same memory; the
loss of each rank is that of its local images, and DDP's gradient average gives the global-batch mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class ClusterMemory(nn.Module):
    """Centroid memory with InfoNCE.

    Args:
        temperature: softmax temperature (Cluster Contrast: 0.05).
        momentum: weight of the old centroid in the update (Cluster Contrast: 0.1; 0 replaces it by the
            newest image).

    Example:
        >>> memory = ClusterMemory(temperature=1.0, momentum=0.5)
        >>> memory.reset(torch.eye(2))
        >>> loss, stats = memory(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        >>> round(loss.item(), 4), stats  # -log(e^1 / (e^1 + e^0)); the image's centroid scores highest
        (0.3133, {'accuracy': 1.0})
    """

    def __init__(self, temperature: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"temperature must be > 0 and momentum in [0, 1), got {temperature}, {momentum}")
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("centroids", torch.zeros(0, 0))

    @torch.no_grad()
    def reset(self, centroids: torch.Tensor) -> None:
        """Replace the memory by ``centroids`` (C, D), L2-normalised here."""
        self.centroids = F.normalize(centroids.detach().float(), dim=1).to(self.centroids.device)

    @staticmethod
    def centroids_from(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean feature of each cluster 0..C-1 (labels -1 ignored): (N, D), (N,) -> (C, D), not normalised."""
        keep = labels >= 0
        labels, features = labels[keep].long(), features[keep].float()
        num_clusters = int(labels.max()) + 1 if labels.numel() else 0
        sums = torch.zeros(num_clusters, features.shape[1], dtype=features.dtype).index_add_(0, labels, features)
        return sums / torch.bincount(labels, minlength=num_clusters).clamp(min=1)[:, None].to(features.dtype)

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                camids: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """InfoNCE of ``features`` (B, D) against the centroids, targets ``labels`` (B,); camids unused.

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` python floats for logging: ``"accuracy"``, the
            fraction of the batch whose most similar centroid is its own cluster's (before the update).
        """
        if self.centroids.numel() == 0:
            raise RuntimeError("ClusterMemory.reset() must be called with the round's centroids before training")
        labels = labels.to(features.device).long()
        if int(labels.max()) >= self.centroids.shape[0] or int(labels.min()) < 0:
            raise ValueError(f"labels must lie in [0, {self.centroids.shape[0]}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        embedding = F.normalize(features, dim=1)
        logits = embedding @ self.centroids.to(embedding.dtype).T / self.temperature
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self._update(embedding.detach(), labels)
        return loss, {"accuracy": float(accuracy)}

    def initialise(self, features: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor | None = None) -> None:
        """The round's memory from the extracted features and pseudo-labels (camids unused here)."""
        self.reset(self.centroids_from(features, labels))

    def export(self) -> torch.Tensor:
        """The checkpoint form: the (C, D) centroids."""
        return self.centroids.detach().cpu().clone()

    def restore(self, state: torch.Tensor) -> None:
        self.centroids = state.to(self.centroids.device)

    @torch.no_grad()
    def _update(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        embedding, labels = _gather_batch(embedding, labels)
        centroids = self.centroids.clone()  # the loss's graph holds the old tensor: never write into it
        for feature, label in zip(embedding.to(centroids.dtype), labels.tolist()):
            updated = self.momentum * centroids[label] + (1 - self.momentum) * feature
            centroids[label] = updated / updated.norm().clamp(min=1e-12)
        self.centroids = centroids


def _gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under torch.distributed: every rank's tensors concatenated in rank order; otherwise the tensors."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tensors
    gathered = []
    for tensor in tensors:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        gathered.append(torch.cat(parts))
    return tuple(gathered)


class CameraMemory(nn.Module):
    """Camera-aware proxy memory (CAP, Wang et al., AAAI 2021): one momentum-updated proxy per (cluster, camera).

    For an image of cluster ``y`` seen by camera ``c`` (``e`` its L2-normalised embedding, ``T`` the temperature):

    - intra-camera loss: cross-entropy of ``e @ P_c.T / T`` over the proxies of camera ``c`` only, the target
      being proxy ``(y, c)``: learn identities within a camera without fighting the camera's look;
    - inter-camera loss: ``-mean over the proxies p of y (all cameras) of log softmax(p)``, the softmax over
      those positive proxies and the ``num_hard_negatives`` most similar proxies of other clusters: pull the
      image towards its identity as seen by every camera.

    ``loss = intra + inter_weight * inter``. After the loss each image moves its own proxy ``(y, c)`` as
    :class:`ClusterMemory` moves a centroid (sequentially, gathered global batch under DDP).

    Example:
        >>> memory = CameraMemory(temperature=1.0, momentum=0.5, inter_weight=0.0)
        >>> memory.initialise(torch.eye(2), torch.tensor([0, 1]), torch.tensor([1, 1]))
        >>> loss, stats = memory(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))
        >>> round(loss.item(), 4), sorted(stats)
        (0.3133, ['inter', 'intra'])
    """

    def __init__(self, temperature: float = 0.05, momentum: float = 0.1, inter_weight: float = 0.5,
                 num_hard_negatives: int = 50) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= momentum < 1 or inter_weight < 0 or num_hard_negatives < 1:
            raise ValueError(f"temperature > 0, momentum in [0, 1), inter_weight >= 0, num_hard_negatives >= 1 "
                             f"expected, got {temperature}, {momentum}, {inter_weight}, {num_hard_negatives}")
        self.temperature, self.momentum = temperature, momentum
        self.inter_weight, self.num_hard_negatives = inter_weight, num_hard_negatives
        self.register_buffer("proxies", torch.zeros(0, 0))
        self.register_buffer("proxy_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("proxy_cameras", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def initialise(self, features: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor) -> None:
        """Proxies = L2-normalised mean feature of every (cluster, camera) group, ordered by (cluster, camera);
        labels -1 ignored."""
        keep = labels >= 0
        labels, camids, features = labels[keep].long(), torch.as_tensor(camids)[keep].long(), features[keep].float()
        groups, group_of = torch.unique(torch.stack([labels, camids], dim=1), dim=0, return_inverse=True)
        sums = torch.zeros(len(groups), features.shape[1]).index_add_(0, group_of, features)
        device = self.proxies.device
        self.proxies = F.normalize(sums, dim=1).to(device)
        self.proxy_labels, self.proxy_cameras = groups[:, 0].to(device), groups[:, 1].to(device)

    def export(self) -> dict[str, torch.Tensor]:
        return {"proxies": self.proxies.detach().cpu().clone(), "labels": self.proxy_labels.cpu().clone(),
                "cameras": self.proxy_cameras.cpu().clone()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        device = self.proxies.device
        self.proxies = state["proxies"].to(device)
        self.proxy_labels, self.proxy_cameras = state["labels"].to(device), state["cameras"].to(device)

    def _proxy_index(self, labels: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Index of proxy (label, camera) for each image; ValueError when a pair has no proxy."""
        base = int(max(int(self.proxy_cameras.max()), int(camids.max()))) + 1
        keys = self.proxy_labels * base + self.proxy_cameras  # sorted: proxies are ordered by (label, camera)
        wanted = labels * base + camids
        index = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
        if not bool((keys[index] == wanted).all()):
            raise ValueError("an image's (pseudo-label, camera) pair has no proxy: initialise() with this round's "
                             "labels and cameras")
        return index

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                camids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The CAP loss of ``features`` (B, D) with pseudo-labels ``labels`` (B,) seen by cameras ``camids`` (B,).

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` python floats for logging: ``"intra"`` and
            ``"inter"``, the two terms (``loss = intra + inter_weight * inter``).
        """
        if self.proxies.numel() == 0:
            raise RuntimeError("CameraMemory.initialise() must be called with the round's clusters before training")
        labels, camids = labels.to(features.device).long(), torch.as_tensor(camids).to(features.device).long()
        own = self._proxy_index(labels, camids)
        embedding = F.normalize(features, dim=1)
        logits = embedding @ self.proxies.to(embedding.dtype).T / self.temperature  # (B, M)
        other_camera = self.proxy_cameras[None, :] != camids[:, None]
        intra = F.cross_entropy(logits.masked_fill(other_camera, float("-inf")), own)
        positive = self.proxy_labels[None, :] == labels[:, None]
        # the hardest negatives: the most similar proxies of other clusters
        k = min(self.num_hard_negatives, int((~positive).sum(dim=1).min()))
        candidates = positive.clone()
        if k > 0:
            hardest = logits.detach().masked_fill(positive, float("-inf")).topk(k, dim=1).indices
            candidates.scatter_(1, hardest, True)
        log_probs = torch.log_softmax(logits.masked_fill(~candidates, float("-inf")), dim=1)
        inter = -(log_probs.masked_fill(~positive, 0).sum(dim=1) / positive.sum(dim=1)).mean()
        loss = intra + self.inter_weight * inter
        self._update(embedding.detach(), own)
        return loss, {"intra": float(intra.detach()), "inter": float(inter.detach())}

    @torch.no_grad()
    def _update(self, embedding: torch.Tensor, own: torch.Tensor) -> None:
        embedding, own = _gather_batch(embedding, own)
        proxies = self.proxies.clone()  # the loss's graph holds the old tensor
        for feature, index in zip(embedding.to(proxies.dtype), own.tolist()):
            updated = self.momentum * proxies[index] + (1 - self.momentum) * feature
            proxies[index] = updated / updated.norm().clamp(min=1e-12)
        self.proxies = proxies
