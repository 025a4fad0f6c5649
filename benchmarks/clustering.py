"""Time and memory of one clustering round (Jaccard distance + eps + DBSCAN) on synthetic ReID-like features.

Run from the repository root: ``python -m benchmarks.clustering --num-samples 16522`` (DukeMTMC-reID train
size), or ``python scripts/benchmark.py cluster``.
The work runs in a fresh child process (multiprocessing "spawn") so that its peak resident memory is its own:
faiss, MKL and scipy allocate outside Python, which ``tracemalloc`` does not see.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np

# DukeMTMC-reID train: 16,522 images of 702 identities.
_IMAGES_PER_IDENTITY = 16522 / 702
_NUM_CAMERAS = 8
_POSE_DIM = 32


def make_clustered_features(
    num_samples: int,
    dim: int = 2048,
    num_ids: int | None = None,
    seed: int = 0,
    nuisance: float = 1.0,
    with_cameras: bool = False,
    dtype: type = np.float32,
) -> tuple[np.ndarray, ...]:
    """Synthetic features shaped like a ReID training set: identity centres plus noise, L2-normalised.

    Each feature is ``normalise(0.6 g + c_id + 0.5 t cam + 0.8 t P z + s n)``: ``g`` a direction shared by
    all (real embeddings after ReLU are far from orthogonal), ``c_id`` the identity centre, ``cam`` one of 8
    camera directions, ``P z`` a pose/background vector from a 32-dimensional subspace shared by everyone
    (``z`` ~ N(0, I/32)), ``n`` isotropic noise; ``g``, ``c_id``, ``cam``, the columns of ``P`` and ``n`` are
    random unit vectors, ``t`` is ``nuisance`` and ``s`` a per-image noise level drawn from [0.6, 1.4]. Camera
    and pose put images of different identities among each other's neighbours, as in real data; raise
    ``nuisance`` for a harder, less clustered set (wider Jaccard rows). Identity sizes vary (log-normal, mean
    ``num_samples / num_ids``, at least 1).

    Args:
        num_samples: N images.
        dim: D feature size.
        num_ids: identities; default N / 23.5 as in DukeMTMC-reID.
        seed: seed of the generator; the same arguments give the same arrays.
        nuisance: weight t of the camera and pose components (0: identity + isotropic noise only).
        dtype: of the returned features (float16 halves a million-row set; generated in float32 chunks).

    Returns:
        features: (N, D) float32, unit rows. labels: (N,) int64 identity of each row, 0..num_ids-1.
        With ``with_cameras``, also cameras: (N,) int64 camera of each row, 0..7.
    """
    if num_ids is None:
        num_ids = max(1, round(num_samples / _IMAGES_PER_IDENTITY))
    if not 1 <= num_ids <= num_samples:
        raise ValueError(f"num_ids must be in [1, num_samples={num_samples}], got {num_ids}")
    rng = np.random.default_rng(seed)
    shares = rng.lognormal(mean=0.0, sigma=0.5, size=num_ids)
    sizes = 1 + np.floor(shares / shares.sum() * (num_samples - num_ids)).astype(np.int64)
    sizes[: num_samples - sizes.sum()] += 1  # the floor left fewer than num_ids images over
    labels = rng.permutation(np.repeat(np.arange(num_ids, dtype=np.int64), sizes))
    cameras = rng.integers(0, _NUM_CAMERAS, size=num_samples)

    def unit(rows: int) -> np.ndarray:
        vectors = rng.standard_normal((rows, dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    shared = unit(1)
    centres = unit(num_ids)
    camera_directions = unit(_NUM_CAMERAS)
    pose_basis = unit(_POSE_DIM)
    features = np.empty((num_samples, dim), dtype=dtype)
    chunk = 4096  # bounds the temporary arrays
    for start in range(0, num_samples, chunk):
        stop = min(start + chunk, num_samples)
        pose = rng.standard_normal((stop - start, _POSE_DIM), dtype=np.float32) / np.sqrt(_POSE_DIM)
        noise_level = rng.uniform(0.6, 1.4, size=(stop - start, 1)).astype(np.float32)
        block = (
            0.6 * shared
            + centres[labels[start:stop]]
            + 0.5 * nuisance * camera_directions[cameras[start:stop]]
            + 0.8 * nuisance * (pose @ pose_basis)
            + noise_level * unit(stop - start)
        )
        features[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return (features, labels, cameras.astype(np.int64)) if with_cameras else (features, labels)


def benchmark_clustering(
    num_samples: int,
    dim: int = 2048,
    num_ids: int | None = None,
    seed: int = 0,
    nuisance: float = 1.0,
    k1: int = 20,
    k2: int = 6,
    min_samples: int = 4,
    camera_jaccard: bool = False,
) -> dict:
    """Time ``jaccard_distance`` + ``compute_eps`` + ``cluster_dbscan`` and their peak memory, in a child process.

    Args:
        num_samples, dim, num_ids, seed, nuisance: see :func:`make_clustered_features`.
        k1, k2, min_samples: clustering settings (the project defaults).
        camera_jaccard: time :func:`reid.cluster.jaccard.camera_jaccard_distance` (its default k values, the
            features' 8 cameras) instead of the plain distance.

    Returns:
        {"num_samples", "dim", "num_ids",
         "seconds": total wall time of the three steps, "seconds_jaccard", "seconds_eps", "seconds_dbscan",
         "peak_mb": peak resident memory (MiB) of the child while clustering, minus its resident memory just
             before (features and imports excluded),
         "baseline_mb": that resident memory before, "peak_rss_mb": the child's whole peak during clustering,
         "eps", "nnz": stored distances, "num_clusters", "num_outliers",
         "pairwise_precision", "pairwise_recall": pseudo-labels against the synthetic identities}.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_measure, (num_samples, dim, num_ids, seed, nuisance, k1, k2, min_samples,
                                     camera_jaccard))


def _measure(
    num_samples: int,
    dim: int,
    num_ids: int | None,
    seed: int,
    nuisance: float,
    k1: int,
    k2: int,
    min_samples: int,
    camera_jaccard: bool = False,
) -> dict:
    """Body of :func:`benchmark_clustering`, run inside the child process."""
    from reid.cluster import cluster_dbscan, compute_eps, pseudo_label_quality
    from reid.cluster.jaccard import camera_jaccard_distance, jaccard_distance

    features, true_labels, cameras = make_clustered_features(
        num_samples, dim=dim, num_ids=num_ids, seed=seed, nuisance=nuisance, with_cameras=True
    )
    baseline_mb = _resident_mb("VmRSS")
    peak_reset = _reset_peak_rss()
    maxrss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    start = time.perf_counter()
    dist = camera_jaccard_distance(features, cameras) if camera_jaccard else jaccard_distance(features, k1=k1, k2=k2)
    after_jaccard = time.perf_counter()
    eps = compute_eps(dist, num_samples)
    after_eps = time.perf_counter()
    labels = cluster_dbscan(dist, eps, min_samples=min_samples)
    end = time.perf_counter()

    if peak_reset:
        peak_rss_mb = _resident_mb("VmHWM")
    else:  # without a resettable high-water mark the earlier peak (feature generation) may hide ours
        peak_rss_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, maxrss_before_mb)
    quality = pseudo_label_quality(labels, true_labels)
    return {
        "num_samples": num_samples,
        "dim": dim,
        "num_ids": int(true_labels.max()) + 1,
        "nuisance": nuisance,
        "distance": "camera_jaccard" if camera_jaccard else "jaccard",
        "seconds": end - start,
        "seconds_jaccard": after_jaccard - start,
        "seconds_eps": after_eps - after_jaccard,
        "seconds_dbscan": end - after_eps,
        "peak_mb": peak_rss_mb - baseline_mb,
        "baseline_mb": baseline_mb,
        "peak_rss_mb": peak_rss_mb,
        "eps": eps,
        "nnz": int(dist.nnz),
        "num_clusters": int(labels.max()) + 1,
        "num_outliers": int(np.count_nonzero(labels < 0)),
        "pairwise_precision": quality["pairwise_precision"],
        "pairwise_recall": quality["pairwise_recall"],
    }


def _resident_mb(field: str) -> float:
    """A memory field of /proc/self/status ("VmRSS" now, "VmHWM" peak) in MiB; ru_maxrss where absent."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs); True if it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=16522)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--num-ids", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuisance", type=float, default=1.0, help="camera/pose weight; higher is harder")
    args = parser.parse_args(argv)
    result = benchmark_clustering(
        args.num_samples, dim=args.dim, num_ids=args.num_ids, seed=args.seed, nuisance=args.nuisance
    )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
