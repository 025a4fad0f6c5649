"""Per-round monitoring of the adaptation stage: clustering statistics, pseudo-label quality, distance histograms."""

from __future__ import annotations

import numpy as np
import torch

from reid.cluster import camera_spread, cluster_separation, pseudo_label_quality
from reid.engine.logging import RunLogger

# A pseudo-identity holding more than this share of the images (and at least this many) is warned about: no
# re-ID identity is 10 % of a set, and such a cluster is what a degenerate eps gives (docs/BENCHMARKS.md: 1M).
GIANT_CLUSTER_FRACTION = 0.10
GIANT_CLUSTER_MIN_SIZE = 50


def pair_distance_samples(features: torch.Tensor, labels: np.ndarray, max_pairs: int = 100_000,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of L2-normalised features for same-label (positive) and different-label (negative)
    pairs among samples with label >= 0; each set is a uniform sample of at most ``max_pairs`` pairs.

    Returns (positive distances, negative distances), float32.
    """
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(labels >= 0)
    if len(keep) < 2:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    feats = torch.nn.functional.normalize(features[keep].float(), dim=1)
    kept_labels = labels[keep]
    # positives: all within-cluster pairs (few), subsampled if needed
    order = np.argsort(kept_labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, kept_labels[order][1:] != kept_labels[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    pos_i, pos_j = [], []
    for start, end in zip(starts, ends):
        members = order[start:end]
        if len(members) > 1:
            i, j = np.triu_indices(len(members), k=1)
            pos_i.append(members[i])
            pos_j.append(members[j])
    pos_i = np.concatenate(pos_i) if pos_i else np.empty(0, np.int64)
    pos_j = np.concatenate(pos_j) if pos_j else np.empty(0, np.int64)
    if len(pos_i) > max_pairs:
        pick = rng.choice(len(pos_i), max_pairs, replace=False)
        pos_i, pos_j = pos_i[pick], pos_j[pick]
    # negatives: random pairs with different labels
    a = rng.integers(0, len(keep), size=2 * max_pairs)
    b = rng.integers(0, len(keep), size=2 * max_pairs)
    different = kept_labels[a] != kept_labels[b]
    neg_i, neg_j = a[different][:max_pairs], b[different][:max_pairs]

    def distances(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if len(i) == 0:
            return np.empty(0, np.float32)
        diff = feats[torch.as_tensor(i)] - feats[torch.as_tensor(j)]
        return diff.norm(dim=1).numpy().astype(np.float32)

    return distances(pos_i, pos_j), distances(neg_i, neg_j)


def log_clustering(logger: RunLogger, round_index: int, info: dict, pseudo_labels: np.ndarray,
                   true_pids: np.ndarray | None, camids: np.ndarray | None = None,
                   features: np.ndarray | None = None) -> dict:
    """Console + metrics.jsonl + TensorBoard for one clustering round; returns the logged record.

    Label-free, always: clusters, outliers (count and ``outlier_fraction``), eps, cluster sizes (histogram,
    ``largest_cluster``, ``median_cluster_size``; ``giant_cluster`` and a warning line when one cluster holds
    more than 10 % of the images, at least 50). With ``camids`` (the target training images' camera ids), the
    label-free record also gets :func:`reid.cluster.camera_spread`'s values, and the label-using diagnostic its
    cross-camera precision/recall. With ``features`` ((N, D), the features the clustering saw, after any per-camera
    normalisation), it also gets :func:`reid.cluster.cluster_separation`'s intra-cluster distance, nearest
    other-centroid distance, their gap and the silhouette (on a fixed sample of at most 2,000 clustered images).
    ``true_pids`` None (an unlabelled target) leaves out every label-using value.
    """
    sizes = np.asarray(info["cluster_sizes"])
    edges = [1, 2, 4, 8, 16, 32, 64, 128, np.inf]
    histogram = {f"{int(lo)}-{'inf' if hi == np.inf else int(hi) - 1}": int(((sizes >= lo) & (sizes < hi)).sum())
                 for lo, hi in zip(edges[:-1], edges[1:])}
    record = {"round": round_index, "num_clusters": int(info["num_clusters"]),
              "num_outliers": int(info["num_outliers"]), "num_samples": int(len(pseudo_labels)),
              "eps": float(info["eps"]), "cluster_size_histogram": histogram, "seconds": float(info["seconds"])}
    line = (f"round {round_index}: {record['num_clusters']} clusters, {record['num_outliers']} outliers "
            f"of {record['num_samples']}, eps {record['eps']:.4f}, sizes {histogram}")
    scalar_keys = ["num_clusters", "num_outliers", "eps", "outlier_fraction", "largest_cluster",
                   "median_cluster_size"]
    record.update({"outlier_fraction": record["num_outliers"] / max(1, record["num_samples"]),
                   "largest_cluster": int(sizes.max()) if len(sizes) else 0,
                   "median_cluster_size": float(np.median(sizes)) if len(sizes) else 0.0})
    if features is not None:
        separation = cluster_separation(features, pseudo_labels, seed=0)  # seed 0: the same sample every round
        record.update(separation)
        scalar_keys += list(separation)

        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        line += (f", distance gap {show(separation['distance_gap'])} (intra-cluster "
                 f"{show(separation['intra_cluster_distance'])}, nearest other centroid "
                 f"{show(separation['nearest_centroid_distance'])}), silhouette {show(separation['silhouette'])} "
                 f"on {separation['separation_points']} images")
    if camids is not None:
        spread = camera_spread(pseudo_labels, camids)
        record.update(spread)
        scalar_keys += list(spread)
        line += (f", cross-camera clusters {spread['cross_camera_cluster_fraction']:.3f}, "
                 f"cameras/cluster {spread['mean_cameras_per_cluster']:.2f} of {spread['num_cameras']}")
    if true_pids is not None:
        quality = pseudo_label_quality(pseudo_labels, true_pids, camids=camids)
        record["diagnostic_uses_target_labels"] = quality
        line += (f" | [uses target labels] pairwise precision {quality['pairwise_precision']:.3f} "
                 f"recall {quality['pairwise_recall']:.3f} NMI {quality['nmi']:.3f}")
        if camids is not None:
            line += (f", cross-camera precision {quality['cross_camera_pairwise_precision']:.3f} "
                     f"recall {quality['cross_camera_pairwise_recall']:.3f}")
        logger.scalars("pseudo_labels_diagnostic_uses_labels", quality, round_index)
    logger.info(line)
    largest = record["largest_cluster"]
    record["giant_cluster"] = bool(largest >= GIANT_CLUSTER_MIN_SIZE
                                   and largest > GIANT_CLUSTER_FRACTION * record["num_samples"])
    if record["giant_cluster"]:
        logger.info(f"warning: round {round_index}: one cluster holds {largest} of the {record['num_samples']} "
                    f"images ({largest / record['num_samples']:.0%}) at eps {record['eps']:.4f}: it merges many "
                    "identities (eps near 1: an approximate cluster.knn missing neighbours, or collapsed "
                    "features); set cluster.eps by hand, use cluster.knn: exact / projected, or give ivf ~N / 50 "
                    "lists (cluster.knn_nlist, with cluster.knn_train_dim: 256)")
    logger.record("cluster", **record)
    logger.scalars("cluster", {k: record[k] for k in scalar_keys}, round_index)
    if len(sizes):
        logger.histogram("cluster/sizes", sizes, round_index)
    return record


def log_distance_histograms(logger: RunLogger, tag: str, positives: np.ndarray, negatives: np.ndarray,
                            step: int) -> dict:
    """TensorBoard histograms of positive and negative pair distances (the picture GDS-H is about)."""
    logger.histogram(f"{tag}/positive", positives, step)
    logger.histogram(f"{tag}/negative", negatives, step)
    summary = {}
    for name, values in (("positive", positives), ("negative", negatives)):
        if len(values):
            summary[f"{name}_mean"] = float(values.mean())
            summary[f"{name}_std"] = float(values.std())
    logger.scalars(tag, summary, step)
    return summary


def log_eval(logger: RunLogger, result, label: str, tag: str, step: int, **record) -> None:
    """Console + metrics.jsonl + TensorBoard for one evaluation (an :class:`EvalResult`). The camera-normalised
    metrics, when asked for (transductive, not the standard protocol), go out as their own rows: split
    ``<split>_camera_<mode>`` and tag ``<tag>_camera_<mode>`` (mode e.g. ``center``, ``bn``, ``bn+center``)."""
    from reid.evaluation.evaluator import format_metrics

    rows = [("", result.metrics)]
    if result.camera_metrics is not None:
        rows.append((f"_camera_{result.camera_mode}", result.camera_metrics))
    for suffix, metrics in rows:
        note = f" [+ camera {result.camera_mode}, transductive]" if suffix else ""
        logger.info(f"{label}{note}: {format_metrics(metrics)}")
        logger.record("eval", **{**record, "split": record["split"] + suffix}, **metrics)
        logger.scalars(tag + suffix, {k: v for k, v in metrics.items() if k != "cmc"}, step)
