"""Clustering at scale (issue 17): one clustering round on N synthetic features with a known identity structure,
stage by stage (k-NN, rest of the Jaccard distance, eps, DBSCAN), with each stage's wall time and peak RSS,
the k-NN recall against the exact search on a sample of rows, and the pseudo-labels against the identities
(and against the exact pipeline's, ARI, where that is computed too).

Run from the repository root::

    python scripts/benchmark.py cluster --n 100000 --knn ivf            # side by side with --knn exact
    python -m benchmarks.cluster_scale --n 100000 --knn ivf --exact      # the same, one JSON
    python -m benchmarks.cluster_scale --n 1000000 --knn ivf --float16   # exact not computed (half a day)
    python -m benchmarks.cluster_scale --features outputs/emb    # real embeddings (scripts/embed.py): ivf's lists

Each configuration runs in a fresh child process (multiprocessing "spawn"), so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time

import numpy as np

from benchmarks.clustering import _reset_peak_rss, _resident_mb, make_clustered_features

RECALL_QUERIES = 1000


def benchmark_scale(num_samples: int, knn: str = "ivf", dim: int = 2048, nlist: int = 0, nprobe: int = 0,
                    float16: bool = False, seed: int = 0, k1: int = 20, k2: int = 6,
                    min_samples: int = 4, sketch_dim: int = 0, candidates: int = 0, drop: int = -1,
                    train_dim: int = 0) -> dict:
    """One round in a child process. Returns the measurements (see :func:`_measure`) and ``labels``.
    ``sketch_dim`` / ``candidates``: the projected search's ``cluster.knn_dim`` / ``cluster.knn_candidates`` (0:
    their defaults); for ivf, ``sketch_dim`` / ``drop`` are its partition space's ``cluster.knn_dim`` /
    ``cluster.knn_drop``, ``train_dim`` its ``cluster.knn_train_dim``."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_measure, (num_samples, knn, dim, nlist, nprobe, float16, seed, k1, k2, min_samples,
                                     sketch_dim, candidates, drop, train_dim))


def compare(num_samples: int, knn: str = "ivf", with_exact: bool = True, **kwargs) -> dict:
    """``knn`` and, when ``with_exact``, the exact pipeline on the same features, one after the other; adds the
    ARI between their pseudo-labels and the ratios."""
    from sklearn.metrics import adjusted_rand_score

    result = {knn: benchmark_scale(num_samples, knn=knn, **kwargs)}
    if with_exact and knn != "exact":
        result["exact"] = benchmark_scale(num_samples, knn="exact", **kwargs)
        approx, exact = result[knn], result["exact"]
        result["ari_vs_exact"] = float(adjusted_rand_score(singletons(exact["labels"]), singletons(approx["labels"])))
        result["seconds_ratio_vs_exact"] = approx["seconds"] / exact["seconds"]
    for run in result.values():
        if isinstance(run, dict):
            run.pop("labels", None)
    return result


def singletons(labels: np.ndarray) -> np.ndarray:
    """DBSCAN labels with every outlier (-1) its own cluster, for the adjusted Rand index."""
    labels = labels.copy()
    outliers = labels < 0
    labels[outliers] = labels.max() + 1 + np.arange(np.count_nonzero(outliers))
    return labels


def _stage(timings: dict, name: str, fn, *args, **kwargs):
    """Run ``fn``; record its wall time and the process's peak RSS while it ran (MiB)."""
    _reset_peak_rss()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[f"seconds_{name}"] = time.perf_counter() - start
    timings[f"peak_rss_mb_{name}"] = _resident_mb("VmHWM")
    return out


def _measure(num_samples: int, knn: str, dim: int, nlist: int, nprobe: int, float16: bool, seed: int, k1: int,
             k2: int, min_samples: int, sketch_dim: int = 0, candidates: int = 0, drop: int = -1,
             train_dim: int = 0) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from reid.cluster import (
        KnnMethod,
        cluster_dbscan,
        compute_eps,
        jaccard_distance,
        knn_search,
        pseudo_label_quality,
    )
    from reid.cluster.ivf import DEFAULT_DROP, DEFAULT_PARTITION_DIM, default_nlist
    from reid.cluster.knn import DEFAULT_CANDIDATES_PER_K, DEFAULT_NPROBE, DEFAULT_PROJECTION_DIM

    generated = time.perf_counter()
    features, true_labels = make_clustered_features(num_samples, dim=dim, seed=seed,
                                                    dtype=np.float16 if float16 else np.float32)
    generated = time.perf_counter() - generated
    baseline_mb = _resident_mb("VmRSS")
    method = KnnMethod(knn, dim=sketch_dim, candidates=candidates, nlist=nlist, nprobe=nprobe, drop=drop,
                       train_dim=train_dim, seed=seed)
    kind = method.resolve(num_samples)
    t: dict = {}
    neighbours = _stage(t, "knn", knn_search, features, k1, method=method)
    dist = _stage(t, "jaccard_rest", jaccard_distance, features, k1=k1, k2=k2, neighbours=neighbours)
    eps = _stage(t, "eps", compute_eps, dist, num_samples)
    labels = _stage(t, "dbscan", cluster_dbscan, dist, eps, min_samples=min_samples)

    # recall@k1 on a seeded sample of rows, against their exact neighbours over all N rows
    rows = np.sort(np.random.default_rng(seed).choice(num_samples, size=min(RECALL_QUERIES, num_samples),
                                                      replace=False))
    exact_ids = _exact_rows(features, rows, k1)
    found = neighbours[1][rows]
    recall = float(np.mean((found[:, :, None] == exact_ids[:, None, :]).any(axis=2)))
    quality = pseudo_label_quality(labels, true_labels)
    num_clusters = int(labels.max()) + 1
    return {
        "num_samples": num_samples, "dim": dim, "knn": kind,
        "nlist": (nlist or default_nlist(num_samples)) if kind == "ivf" else None,
        "nprobe": (nprobe or DEFAULT_NPROBE) if kind == "ivf" else None,
        "sketch_dim": sketch_dim or (DEFAULT_PROJECTION_DIM if kind == "projected" else DEFAULT_PARTITION_DIM or dim),
        "drop": (DEFAULT_DROP if drop < 0 else drop) if kind == "ivf" else None,
        "train_dim": train_dim if kind == "ivf" else None,
        "candidates": (candidates or DEFAULT_CANDIDATES_PER_K * k1) if kind == "projected" else None,
        "float16": float16, "seconds_generate": generated,
        "seconds": t["seconds_knn"] + t["seconds_jaccard_rest"] + t["seconds_eps"] + t["seconds_dbscan"],
        **t, "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": max(v for key, v in t.items() if key.startswith("peak_rss_mb")),
        "recall_at_k1": recall, "recall_rows": int(rows.size),
        "eps": float(eps), "nnz": int(dist.nnz), "num_ids": int(true_labels.max()) + 1,
        "num_clusters": num_clusters, "num_outliers": int(np.count_nonzero(labels < 0)),
        "largest_cluster": int(np.bincount(labels[labels >= 0]).max()) if num_clusters else 0,
        "ari_vs_identities": float(adjusted_rand_score(true_labels, singletons(labels))),
        "pairwise_precision": quality["pairwise_precision"], "pairwise_recall": quality["pairwise_recall"],
        "labels": labels,
    }


def _exact_rows(features: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) exact top-k indices of ``features[rows]`` over all rows (float32 products, by chunks)."""
    import torch

    queries = torch.from_numpy(features[rows].astype(np.float32))
    best = torch.full((rows.size, k), -np.inf)
    best_ids = torch.full((rows.size, k), -1, dtype=torch.int64)
    chunk = 65536
    for start in range(0, features.shape[0], chunk):
        block = torch.from_numpy(features[start : start + chunk].astype(np.float32))
        sims = queries @ block.T
        ids = torch.arange(start, start + block.shape[0]).expand_as(sims)
        merged = torch.cat([best, sims], dim=1)
        top = torch.topk(merged, k, dim=1)
        best_ids = torch.gather(torch.cat([best_ids, ids], dim=1), 1, top.indices)
        best = top.values
    return best_ids.numpy()


def real_feature_check(directory: str, drops: tuple[int, ...] = (0, 16, 64), nlist: int = 0, nprobe: int = 0,
                       seed: int = 0, k1: int = 20, k2: int = 6, min_samples: int = 4) -> dict:
    """ivf on real embeddings (``scripts/embed.py``'s ``features.npy`` + ``manifest.csv``, identities read from
    Market-style file names ``PID_cCAM...``), for each number of leading principal components removed: how
    often an identity's images share a list (its main list's share; the share of same-identity pairs filed
    together), and the whole round against the exact one on the same features (k-NN recall@k1, ARI of the
    pseudo-labels). The synthetic features' nuisance directions are not real ones: this is the check that
    chose ``cluster.knn_drop``'s default (docs/BENCHMARKS.md)."""
    import csv
    from pathlib import Path

    from sklearn.metrics import adjusted_rand_score

    from reid.cluster import KnnMethod, cluster_dbscan, compute_eps, ivf, jaccard_distance, knn_search
    from reid.data.datasets import parse_market_name
    from reid.errors import DatasetError

    folder = Path(directory)
    for name in ("features.npy", "manifest.csv"):
        if not (folder / name).is_file():
            raise DatasetError(f"{folder / name} not found: --features expects a scripts/embed.py output folder "
                               "(features.npy + manifest.csv)")
    features = np.load(folder / "features.npy").astype(np.float32)
    with open(folder / "manifest.csv", newline="") as handle:
        names = [Path(row["path"]).name for row in csv.DictReader(handle)]
    if len(names) != features.shape[0]:
        raise DatasetError(f"{folder / 'manifest.csv'} lists {len(names)} images but features.npy holds "
                           f"{features.shape[0]} rows: an unfinished embedding (run scripts/embed.py again)")
    pids = np.array([parse_market_name(name)[0] for name in names])
    _, labels = np.unique(pids, return_inverse=True)
    nlist = nlist or ivf.default_nlist(features.shape[0])

    def round_of(method):
        neighbours = knn_search(features, k1, method=method)
        dist = jaccard_distance(features, k1=k1, k2=k2, neighbours=neighbours)
        return neighbours[1], cluster_dbscan(dist, compute_eps(dist, features.shape[0]), min_samples=min_samples)

    exact_ids, exact_labels = round_of(KnnMethod("exact"))
    result = {"features": str(folder), "num_samples": int(features.shape[0]), "num_ids": int(labels.max()) + 1,
              "nlist": nlist, "exact_clusters": int(exact_labels.max()) + 1, "drops": {}}
    for drop in drops:
        space = ivf.fit_partition_space(features, drop=drop, seed=seed)
        list_of, _ = ivf.assign(features, ivf.train_centroids(features, nlist, seed=seed, space=space), space=space)
        counts = np.zeros((labels.max() + 1, nlist))
        np.add.at(counts, (labels, list_of), 1)
        sizes = counts.sum(axis=1)
        ids, approx_labels = round_of(KnnMethod("ivf", nlist=nlist, nprobe=nprobe, drop=drop, seed=seed))
        result["drops"][str(drop)] = {
            "identity_main_list_share": float(np.mean(counts.max(axis=1) / sizes)),
            "same_identity_pairs_sharing_a_list": float((counts * (counts - 1)).sum() / (sizes * (sizes - 1)).sum()),
            "recall_at_k1": float(np.mean((ids[:, :, None] == exact_ids[:, None, :]).any(axis=2))),
            "ari_vs_exact": float(adjusted_rand_score(singletons(exact_labels), singletons(approx_labels))),
            "clusters": int(approx_labels.max()) + 1,
        }
    return result


def benchmark_sharded(num_samples: int, knn: str = "exact", ranks: int = 2, dim: int = 2048, seed: int = 0,
                      k1: int = 20) -> dict:
    """The k-NN search split across ``ranks`` gloo processes (one thread each) against one process (one thread
    per rank's worth of cores), side by side: each rank's wall time, and whether every rank got the one-process
    lists exactly."""
    import os
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(_sharded_rank, args=(ranks, port, num_samples, knn, dim, seed, k1, queue), nprocs=ranks,
                       join=True, start_method="spawn")
    per_rank = sorted((queue.get() for _ in range(ranks)), key=lambda r: r["rank"])
    single = benchmark_single_knn(num_samples, knn, dim, seed, k1, threads=ranks)
    digest = single.pop("digest")
    return {"num_samples": num_samples, "dim": dim, "knn": knn, "ranks": ranks, "cpus": os.cpu_count(),
            "seconds_per_rank": [r["seconds"] for r in per_rank], "seconds_one_process": single["seconds"],
            "identical_to_one_process": all(r["digest"] == digest for r in per_rank)}


def benchmark_single_knn(num_samples: int, knn: str, dim: int, seed: int, k1: int, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_single_knn, (num_samples, knn, dim, seed, k1, threads))


def _single_knn(num_samples: int, knn: str, dim: int, seed: int, k1: int, threads: int) -> dict:
    import hashlib

    import torch

    from reid.cluster import KnnMethod, knn_search

    torch.set_num_threads(threads)
    features, _ = make_clustered_features(num_samples, dim=dim, seed=seed)
    start = time.perf_counter()
    _, ids = knn_search(features, k1, method=KnnMethod(knn, seed=seed))
    return {"seconds": time.perf_counter() - start, "digest": hashlib.sha256(ids.tobytes()).hexdigest()}


def _sharded_rank(rank: int, ranks: int, port: int, num_samples: int, knn: str, dim: int, seed: int, k1: int,
                  queue) -> None:
    import hashlib

    import torch
    import torch.distributed as dist

    from reid.cluster import KnnMethod, knn_search

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    try:
        features, _ = make_clustered_features(num_samples, dim=dim, seed=seed)
        dist.barrier()
        start = time.perf_counter()
        _, ids = knn_search(features, k1, method=KnnMethod(knn, seed=seed), shard=True)
        queue.put({"rank": rank, "seconds": time.perf_counter() - start,
                   "digest": hashlib.sha256(ids.tobytes()).hexdigest()})
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--features", default="", help="a scripts/embed.py output folder: ivf's lists on real "
                        "embeddings for --drops, against the exact round")
    parser.add_argument("--drops", type=int, nargs="+", default=[0, 16, 64])
    parser.add_argument("--knn", choices=["exact", "projected", "ivf", "auto"], default="ivf")
    parser.add_argument("--exact", action="store_true", help="also the exact pipeline: ARI and time ratio")
    parser.add_argument("--nlist", type=int, default=0)
    parser.add_argument("--nprobe", type=int, default=0)
    parser.add_argument("--float16", action="store_true")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--sketch-dim", type=int, default=0, help="projected: sketch dimensions (0: 512); ivf: "
                        "sketch of the partition space (0: none)")
    parser.add_argument("--drop", type=int, default=-1, help="ivf: leading principal components removed before "
                        "filing (-1: 0)")
    parser.add_argument("--candidates", type=int, default=0, help="projected: candidates per row (0: 4 k1)")
    parser.add_argument("--train-dim", type=int, default=0, help="ivf: k-means and filing in a sketch this wide, "
                        "8 centroids re-ranked exactly (0: full width)")
    parser.add_argument("--ranks", type=int, default=0, help="the k-NN search alone, split across this many gloo "
                        "processes, side by side with one process")
    args = parser.parse_args(argv)
    if args.features:
        from reid.errors import ReidError

        try:
            result = real_feature_check(args.features, drops=tuple(args.drops), nlist=args.nlist, nprobe=args.nprobe)
        except ReidError as error:
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    if args.ranks:
        json.dump(benchmark_sharded(args.n, knn=args.knn, ranks=args.ranks, dim=args.dim), sys.stdout, indent=2)
        print()
        return
    result = compare(args.n, knn=args.knn, with_exact=args.exact, dim=args.dim, nlist=args.nlist,
                     nprobe=args.nprobe, float16=args.float16, sketch_dim=args.sketch_dim,
                     candidates=args.candidates, drop=args.drop, train_dim=args.train_dim)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
