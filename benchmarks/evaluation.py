"""Speed check of :func:`reid.evaluation.evaluate_rank` against the per-query loop it replaces.

The loop is :func:`benchmarks.reference.evaluate_rank_loop`, the independent reference the tests also use.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.reference import evaluate_rank_loop
from reid.data.datasets import JUNK_PID
from reid.evaluation.metrics import evaluate_rank


def make_market_like_problem(num_query: int = 3368, num_gallery: int = 15913, num_ids: int = 751,
                             num_cameras: int = 6, distractor_fraction: float = 0.176, junk_fraction: float = 0.0,
                             seed: int = 0) -> tuple[np.ndarray, ...]:
    """A random re-ID problem with Market-1501 structure (shapes, id and camera counts, distractors).

    Each query identity appears in the gallery under several cameras; ``distractor_fraction`` of the gallery
    is pid 0 and ``junk_fraction`` pid -1 (Market-1501's test gallery, junk dropped: 2,798 / 15,913 = 0.176
    distractors). Distances are uniform in [0, 1) with true pairs pulled 0.25 closer, so mAP lands in a
    realistic middle range instead of at chance.

    Returns:
        distmat (Q, G) float32, q_pids (Q,) int64, g_pids (G,) int64, q_camids (Q,) int64, g_camids (G,) int64.
    """
    rng = np.random.default_rng(seed)
    q_pids = np.sort(rng.integers(1, num_ids + 1, size=num_query))
    q_camids = rng.integers(0, num_cameras, size=num_query)
    num_junk = int(round(junk_fraction * num_gallery))
    num_distractors = int(round(distractor_fraction * num_gallery))
    num_identity_images = num_gallery - num_junk - num_distractors
    g_pids = np.concatenate([np.full(num_junk, JUNK_PID), np.zeros(num_distractors, dtype=np.int64),
                             rng.integers(1, num_ids + 1, size=num_identity_images)])
    g_camids = rng.integers(0, num_cameras, size=num_gallery)
    permutation = rng.permutation(num_gallery)
    g_pids, g_camids = g_pids[permutation], g_camids[permutation]

    distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    distmat -= np.float32(0.25) * (q_pids[:, None] == g_pids[None, :])
    return distmat, q_pids, g_pids, q_camids, g_camids


def benchmark_evaluation(num_query: int = 3368, num_gallery: int = 15913, num_ids: int = 751, seed: int = 0,
                         loop_queries: int = 400) -> dict:
    """Time :func:`evaluate_rank` on a Market-sized random problem against the per-query loop.

    The loop is timed on the first ``loop_queries`` queries and scaled linearly to all of them (its cost is one
    full-row argsort plus a fixed Python overhead per query); ``loop_queries >= num_query`` times it in full.
    Both are run on that subset and must agree to 1e-9 (RuntimeError otherwise).

    Returns:
        ``{"num_query", "num_gallery", "vectorised_s", "loop_s", "loop_measured_s", "loop_queries",
        "loop_extrapolated", "speedup", "max_abs_diff", "mAP", "mINP", "rank1"}``; times in seconds,
        ``loop_s`` the (extrapolated) full-size loop time, ``speedup = loop_s / vectorised_s``, metrics from
        the full vectorised run.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = make_market_like_problem(
        num_query=num_query, num_gallery=num_gallery, num_ids=num_ids, seed=seed)

    start = time.perf_counter()
    full = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    vectorised_s = time.perf_counter() - start

    subset = slice(0, min(loop_queries, num_query))
    sub_args = (distmat[subset], q_pids[subset], g_pids, q_camids[subset], g_camids)
    start = time.perf_counter()
    loop = evaluate_rank_loop(*sub_args)
    loop_measured_s = time.perf_counter() - start
    num_loop_queries = subset.stop
    loop_s = loop_measured_s * num_query / num_loop_queries

    fast = evaluate_rank(*sub_args)
    max_abs_diff = max(float(np.max(np.abs(fast["cmc"] - loop["cmc"]))), abs(fast["mAP"] - loop["mAP"]),
                       abs(fast["mINP"] - loop["mINP"]))
    if max_abs_diff > 1e-9 or fast["num_valid_queries"] != loop["num_valid_queries"]:
        raise RuntimeError(f"evaluate_rank and evaluate_rank_loop disagree: max |diff| = {max_abs_diff:.3g}, "
                           f"valid queries {fast['num_valid_queries']} vs {loop['num_valid_queries']}")
    return {"num_query": num_query, "num_gallery": num_gallery, "vectorised_s": vectorised_s, "loop_s": loop_s,
            "loop_measured_s": loop_measured_s, "loop_queries": num_loop_queries,
            "loop_extrapolated": num_loop_queries < num_query, "speedup": loop_s / vectorised_s,
            "max_abs_diff": max_abs_diff, "mAP": full["mAP"], "mINP": full["mINP"],
            "rank1": float(full["cmc"][0])}
