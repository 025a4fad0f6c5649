"""Training losses: label-smoothed cross-entropy, batch-hard triplet, GDS / GDS-H, cluster memory."""

from __future__ import annotations

from reid.losses.cross_entropy import CrossEntropyLabelSmooth
from reid.losses.gds import GDSLoss
from reid.losses.memory import CameraMemory, ClusterMemory
from reid.losses.triplet import TripletLoss, pairwise_euclidean

__all__ = ["CameraMemory", "ClusterMemory", "CrossEntropyLabelSmooth", "GDSLoss", "TripletLoss", "pairwise_euclidean"]
