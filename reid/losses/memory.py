"""Cluster-memory contrastive loss (Cluster Contrast, Dai et al., 2021): one momentum-updated centroid per
pseudo-label cluster and an InfoNCE over all of them.

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
        >>> loss = memory(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        >>> round(loss.item(), 4)  # -log(e^1 / (e^1 + e^0))
        0.3133
    """

    def __init__(self, temperature: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"temperature must be > 0 and momentum in [0, 1), got {temperature}, {momentum}")
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("centroids", torch.zeros(0, 0))
        self.last_terms: dict[str, float] = {}

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

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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
        self.last_terms = {"memory": float(loss.detach()), "memory_accuracy": float(accuracy)}
        return loss

    @torch.no_grad()
    def _update(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world_size = dist.get_world_size()
            gathered = [torch.empty_like(embedding) for _ in range(world_size)]
            gathered_labels = [torch.empty_like(labels) for _ in range(world_size)]
            dist.all_gather(gathered, embedding.contiguous())
            dist.all_gather(gathered_labels, labels.contiguous())
            embedding, labels = torch.cat(gathered), torch.cat(gathered_labels)
        centroids = self.centroids.clone()  # the loss's graph holds the old tensor: never write into it
        for feature, label in zip(embedding.to(centroids.dtype), labels.tolist()):
            updated = self.momentum * centroids[label] + (1 - self.momentum) * feature
            centroids[label] = updated / updated.norm().clamp(min=1e-12)
        self.centroids = centroids
