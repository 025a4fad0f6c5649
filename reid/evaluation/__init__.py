"""Evaluation: CMC / mAP / mINP (Market-1501 protocol), k-reciprocal re-ranking, plots."""

from reid.evaluation.metrics import evaluate_rank
from reid.evaluation.rerank import re_ranking

__all__ = ["evaluate_rank", "re_ranking"]
