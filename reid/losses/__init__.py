"""Training losses: label-smoothed cross-entropy, batch-hard triplet, GDS / GDS-H."""

from __future__ import annotations

from reid.losses.cross_entropy import CrossEntropyLabelSmooth
from reid.losses.gds import GDSLoss
from reid.losses.triplet import TripletLoss, pairwise_euclidean

__all__ = ["CrossEntropyLabelSmooth", "GDSLoss", "TripletLoss", "pairwise_euclidean"]
