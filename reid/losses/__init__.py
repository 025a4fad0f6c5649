"""Training losses: label-smoothed cross-entropy, batch-hard triplet, GDS / GDS-H, cluster memory.

Every loss's forward returns ``(loss, stats)``: a scalar tensor and a dict of python floats for logging (accuracy,
precision, the loss's terms and statistics); the caller names the loss and prefixes its stats in the log.
"""

from __future__ import annotations

from reid.losses.cross_entropy import CrossEntropyLabelSmooth
from reid.losses.gds import GDSLoss
from reid.losses.memory import CameraMemory, ClusterMemory
from reid.losses.triplet import TripletLoss, batch_hard_distances, pairwise_euclidean

__all__ = ["CameraMemory", "ClusterMemory", "CrossEntropyLabelSmooth", "GDSLoss", "TripletLoss",
           "batch_hard_distances", "pairwise_euclidean"]
