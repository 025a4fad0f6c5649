"""Cross-entropy with label smoothing (Szegedy et al. 2016, as in torchreid)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against smoothed targets ``(1 - epsilon) * onehot + epsilon / num_classes``.

    Equal to ``F.cross_entropy(logits, targets, label_smoothing=epsilon)``.

    Args:
        num_classes: C, the number of classes (source identities).
        epsilon: smoothing in [0, 1); 0 gives plain cross-entropy.

    Example:
        >>> criterion = CrossEntropyLabelSmooth(num_classes=751, epsilon=0.1)
        >>> loss, stats = criterion(logits, pids)   # logits (B, 751), pids (B,) in 0..750
        >>> stats["accuracy"]   # a python float: the fraction of images whose top logit is their class
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.num_classes = num_classes
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean smoothed cross-entropy of the batch.

        Args:
            logits: (B, C) float, unnormalised class scores.
            targets: (B,) int class indices in 0..C-1.

        Returns:
            ``(loss, stats)``: ``loss`` a scalar tensor; ``stats`` python floats for logging: ``"accuracy"``, the
            fraction of the batch whose largest logit is its target class.
        """
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits of shape (B, {self.num_classes}), got {tuple(logits.shape)}")
        if targets.shape != logits.shape[:1]:
            raise ValueError(f"expected targets of shape ({logits.shape[0]},), got {tuple(targets.shape)}")
        log_probs = F.log_softmax(logits, dim=1)
        smoothed = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1.0)
        smoothed = (1.0 - self.epsilon) * smoothed + self.epsilon / self.num_classes
        loss = -(smoothed * log_probs).sum(dim=1).mean()
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, {"accuracy": accuracy.item()}
