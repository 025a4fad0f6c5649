"""k-nearest-neighbour self-search by inner product on L2-normalised features: exact, or an inverted file
(:mod:`reid.cluster.ivf`) when N is large, optionally sharded across the ranks of a torchrun job.

``KnnMethod`` says which: ``exact`` (below); ``projected`` (approximate: the exact search on a seeded Gaussian
random projection of the features to ``dim`` dimensions finds ``candidates`` per row, re-ranked by their exact
inner products; a Johnson-Lindenstrauss sketch keeps every direction equally, so it does not depend on how the
identities are laid out, but it is still quadratic); ``ivf`` (approximate and sub-quadratic: k-means lists made
on the centred features, optionally without their leading directions, each joined with the lists its features
name as second choice; what it misses are neighbours filed in lists that are not joined, see docs/BENCHMARKS.md); or
``auto`` (``projected`` from ``AUTO_APPROXIMATE_MIN_SAMPLES`` features on). With
``shard=True`` inside an initialised torch.distributed job every rank computes its share of the similarity blocks
(exact, and the sketch's search in projected) or of the list pairs (ivf) and the ranks' candidate lists are
gathered and merged, so every rank gets the
same lists a single process computes. All ranks must call it together.

Exact search:
On a machine where faiss was built with GPU support and sees a GPU, the search runs on a faiss ``IndexFlatIP``
placed on GPU 0. Otherwise it runs on the CPU as blocked matrix products (torch / MKL) feeding faiss's
per-row heaps: the same exact inner-product search as a CPU ``IndexFlatIP``, but about five times faster than
the faiss-cpu wheel's own BLAS on this project's machines, and it computes each inner product once for both
points of a pair (the self-search is symmetric), which halves the work.

Either way the lists are returned in a deterministic order: by decreasing similarity, equal similarities by
increasing index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import torch
import torch.distributed as dist

from reid import distributed
from reid.cluster import ivf

# Entries of one float32 similarity block (rows x columns): 2**25 entries = 128 MiB.
_BLOCK_ENTRIES = 2**25
# ``auto`` switches to the projected search from this many features on (docs/BENCHMARKS.md, "Clustering at
# scale"): it does not depend on how the identities are laid out; ivf is faster but its lists do (measured both
# ways), so it is chosen by name. Below 50,000 the exact search takes under a minute on 2 cores.
AUTO_APPROXIMATE_MIN_SAMPLES = 50_000
# The projected search: dimensions of the sketch, and candidates per row as a multiple of k.
DEFAULT_PROJECTION_DIM = 512
DEFAULT_CANDIDATES_PER_K = 4  # 4 x k1: recall 0.92 -> 0.96 at 30,000, same time (docs/BENCHMARKS.md)
# Lists each list is joined with (docs/BENCHMARKS.md: recall against the exact search per nprobe).
DEFAULT_NPROBE = 8


@dataclass(frozen=True)
class KnnMethod:
    """How :func:`knn_search` finds the neighbours (``cluster.knn*`` in the config).

    Attributes:
        kind: ``exact`` | ``projected`` | ``ivf`` | ``auto`` (projected from ``AUTO_APPROXIMATE_MIN_SAMPLES``
            features on, exact below).
        dim: projected: sketch dimensions; 0: ``DEFAULT_PROJECTION_DIM`` (a sketch at least as wide as the
            features is the exact search). ivf: a sketch of the space the lists are made in to ``dim``
            dimensions; 0: none (:data:`reid.cluster.ivf.DEFAULT_PARTITION_DIM`).
        candidates: projected: candidates per row re-ranked exactly; 0: ``DEFAULT_CANDIDATES_PER_K`` x k.
        nlist: inverted lists; 0: :func:`reid.cluster.ivf.default_nlist` (4·sqrt(N)).
        nprobe: lists each list is joined with (itself included); 0: ``DEFAULT_NPROBE``.
        drop: ivf: leading principal components removed before the features are filed into lists; -1:
            :data:`reid.cluster.ivf.DEFAULT_DROP` (at most D / 8).
        train_dim: ivf: k-means and the assignment to lists made in a seeded sketch of the partition space to
            this many dimensions, each feature's 8 nearest sketched centroids re-ranked exactly
            (:class:`reid.cluster.ivf.Shortlist`); 0: full width. For the ~N / 50 lists a million images need.
        seed: seed of the k-means sample and initialisation.
    """

    kind: Literal["exact", "projected", "ivf", "auto"] = "exact"
    dim: int = 0
    candidates: int = 0
    nlist: int = 0
    nprobe: int = 0
    drop: int = -1
    train_dim: int = 0
    seed: int = 0

    def resolve(self, num_samples: int) -> str:
        """``exact``, ``projected`` or ``ivf`` for N = ``num_samples``."""
        if self.kind not in ("exact", "projected", "ivf", "auto"):
            raise ValueError(f"knn kind must be exact, projected, ivf or auto, got {self.kind!r}")
        if self.kind == "auto":
            return "projected" if num_samples >= AUTO_APPROXIMATE_MIN_SAMPLES else "exact"
        return self.kind


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one CUDA device."""
    if not hasattr(faiss, "get_num_gpus"):
        return False
    return faiss.get_num_gpus() > 0


def knn_search(features: np.ndarray, k: int, use_gpu: bool | None = None, method: KnnMethod | None = None,
               shard: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Find, for every row of ``features``, its ``k`` most similar rows (itself included).

    Args:
        features: (N, D) float32 (or float16), L2-normalised rows (not re-normalised here).
        k: neighbours per row, 1 <= k <= N. The row itself is one of them, normally at position 0.
        use_gpu: exact search only: ``True`` forces a faiss GPU index (error if there is none), ``False`` the CPU,
            ``None`` picks the GPU when :func:`faiss_gpu_available`.
        method: exact / projected / ivf / auto and their settings (:class:`KnnMethod`); default exact.
        shard: split the work across the ranks of an initialised torch.distributed job (all ranks call this
            with the same features); ignored without one, and on GPU.

    Returns:
        similarities: (N, k) float32 inner products, each row non-increasing.
        indices: (N, k) int64 row indices into ``features``; equal similarities ordered by index.

    Example:
        >>> x = np.eye(3, dtype=np.float32)
        >>> knn_search(x, 1)[1].ravel().tolist()
        [0, 1, 2]
    """
    if features.dtype != np.float16:
        features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {features.shape}")
    num_samples = features.shape[0]
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in [1, N={num_samples}], got k={k}")
    method = method or KnnMethod()
    ranks = distributed.world_size() if shard else 1
    kind = method.resolve(num_samples)
    if kind == "ivf":
        return _sort_neighbours(*_knn_ivf(features, k, method, ranks))
    if kind == "projected" and (method.dim or DEFAULT_PROJECTION_DIM) < features.shape[1]:
        return _sort_neighbours(*_knn_projected(features, k, method, shard, use_gpu))
    if use_gpu is None:
        use_gpu = faiss_gpu_available()
    if use_gpu:
        if not faiss_gpu_available():
            raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no GPU")
        similarities, indices = _knn_faiss_gpu(np.ascontiguousarray(features, dtype=np.float32), k)
    else:
        similarities, indices = _knn_cpu_symmetric(features, k, ranks)
    return _sort_neighbours(similarities, indices)


def _sort_neighbours(similarities: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by decreasing similarity, ties by increasing index. Inputs (N, k); same outputs."""
    order = np.lexsort((indices, -similarities), axis=-1)
    similarities = np.take_along_axis(similarities, order, axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    return np.ascontiguousarray(similarities, dtype=np.float32), np.ascontiguousarray(indices, dtype=np.int64)


def _knn_cpu_symmetric(features: np.ndarray, k: int, ranks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Blocked exact self-search on the CPU. features (N, D) -> (N, k) float32, (N, k) int64.

    The rows are cut into B blocks of equal size; only the B(B+1)/2 blocks on and above the diagonal of the
    (N, N) similarity matrix are computed (torch matmul), each one feeding faiss's per-row min-heaps of its
    rows and, transposed, of its columns. Memory: two blocks (<= 128 MiB each) plus O(N k). With ``ranks`` > 1
    (torch.distributed), rank r computes every ranks-th block and the ranks' lists are merged.
    """
    x = torch.from_numpy(features)
    num_samples = x.shape[0]
    num_blocks = max(1, int(np.ceil(num_samples / np.sqrt(_BLOCK_ENTRIES))))
    block_size = int(np.ceil(num_samples / num_blocks))
    starts = list(range(0, num_samples, block_size))
    blocks = [(a, b) for position, a in enumerate(starts) for b in starts[position:]]
    if ranks > 1:
        blocks = blocks[distributed.rank() :: ranks]
    # A min-heap per row keeps the k largest similarities seen so far (faiss: k-selection in C++, OpenMP).
    heaps, best_sims, best_ids = ivf.row_heaps(num_samples, k)

    with torch.inference_mode():
        for a, b in blocks:
            rows_a = min(block_size, num_samples - a)
            rows_b = min(block_size, num_samples - b)
            block = (x[a : a + rows_a].float() @ x[b : b + rows_b].float().T).contiguous()  # (Ba, Bb)
            heaps.addn(rows_b, faiss.swig_ptr(block.numpy()), b, a, rows_a)
            if b != a:  # the same block seen from the rows of b
                block = block.T.contiguous()
                heaps.addn(rows_a, faiss.swig_ptr(block.numpy()), a, b, rows_b)
    heaps.reorder()
    if ranks > 1:
        return ivf.merge_top_k(_all_gather_lists(best_sims, best_ids, ranks), k)
    return best_sims, best_ids


def _knn_ivf(features: np.ndarray, k: int, method: KnnMethod, ranks: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverted-file self-search (:mod:`reid.cluster.ivf`), the lists made in its partition space; with ``ranks``
    > 1, rank 0's partition space and centroids are broadcast, each rank files its share of the features and
    joins its share of the list pairs (balanced by their products' sizes), and the lists are merged. Rows that
    saw fewer than k candidates (tiny probed lists) are searched exactly."""
    num_samples = features.shape[0]
    nlist = method.nlist or ivf.default_nlist(num_samples)
    nlist = min(nlist, num_samples)
    if ranks == 1:
        space = ivf.fit_partition_space(features, drop=method.drop, dim=method.dim, seed=method.seed)
        shortlist = ivf.Shortlist.make(space.width, method.train_dim, seed=method.seed)
        centroids = ivf.train_centroids(features, nlist, seed=method.seed, space=space, shortlist=shortlist)
        list_of, second_of = ivf.assign(features, centroids, space=space, shortlist=shortlist)
    else:
        space = centroids = None
        if distributed.is_main():
            space = ivf.fit_partition_space(features, drop=method.drop, dim=method.dim, seed=method.seed)
            centroids = ivf.train_centroids(features, nlist, seed=method.seed, space=space,
                                            shortlist=ivf.Shortlist.make(space.width, method.train_dim, method.seed))
        space, centroids = distributed.broadcast_object((space, centroids))
        shortlist = ivf.Shortlist.make(space.width, method.train_dim, seed=method.seed)
        bounds = np.linspace(0, num_samples, ranks + 1).astype(np.int64)
        rank = distributed.rank()
        shares: list = [None] * ranks
        mine = ivf.assign(features, centroids, rows=(int(bounds[rank]), int(bounds[rank + 1])), space=space,
                          shortlist=shortlist)
        dist.all_gather_object(shares, mine)
        list_of = np.concatenate([first for first, _ in shares])
        second_of = np.concatenate([second for _, second in shares])
    inverted = ivf.build_inverted_file(list_of, centroids, method.nprobe or DEFAULT_NPROBE,
                                       second_of=second_of)
    pairs = inverted.pairs
    if ranks > 1:
        pairs = pairs[_balanced_share(inverted.pair_costs(), ranks, distributed.rank())]
    sims, ids = ivf.join_lists(features, inverted, k, pairs=pairs)
    if ranks > 1:
        sims, ids = ivf.merge_top_k(_all_gather_lists(sims, ids, ranks), k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if short.size:  # a row whose probed lists hold fewer than k features: search it exactly
        x = torch.from_numpy(np.asarray(features, dtype=np.float32))
        exact = torch.from_numpy(np.asarray(features[short], dtype=np.float32)) @ x.T
        top = torch.topk(exact, k, dim=1)
        sims[short], ids[short] = top.values.numpy(), top.indices.numpy()
    return sims, ids


def _knn_projected(features: np.ndarray, k: int, method: KnnMethod, shard: bool,
                   use_gpu: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact search (:func:`knn_search`, sharded and on GPU as asked) on a seeded Gaussian sketch (N, dim) for
    ``candidates`` per row, then each row's candidates re-ranked by their inner products on the full features."""
    num_samples, full_dim = features.shape
    dim = method.dim or DEFAULT_PROJECTION_DIM
    candidates = min(num_samples, max(k, method.candidates or DEFAULT_CANDIDATES_PER_K * k))
    generator = torch.Generator().manual_seed(method.seed)
    projection = torch.randn(full_dim, dim, generator=generator) / np.sqrt(dim)
    sketch = np.empty((num_samples, dim), dtype=np.float32)
    chunk = max(1, _BLOCK_ENTRIES // full_dim)
    with torch.inference_mode():
        for start in range(0, num_samples, chunk):
            block = torch.from_numpy(np.asarray(features[start : start + chunk], dtype=np.float32))
            sketch[start : start + chunk] = (block @ projection).numpy()
    _, candidate_ids = knn_search(sketch, candidates, use_gpu=use_gpu, shard=shard)
    del sketch
    sims = np.empty(candidate_ids.shape, dtype=np.float32)
    rows = max(1, 2**23 // (candidates * full_dim))
    for start in range(0, num_samples, rows):  # gathered (rows, candidates, D) float32: <= 32 MiB
        ids = candidate_ids[start : start + rows]
        gathered = np.asarray(features[ids], dtype=np.float32)
        sims[start : start + rows] = np.einsum("nd,nkd->nk", np.asarray(features[start : start + rows],
                                                                        dtype=np.float32), gathered)
    order = np.lexsort((candidate_ids, -sims), axis=-1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(candidate_ids, order, axis=1)


def _balanced_share(costs: np.ndarray, ranks: int, rank: int) -> slice:
    """The contiguous range of items (in order) that rank ``rank`` of ``ranks`` takes so that each rank's
    summed cost is about equal."""
    cumulative = np.cumsum(costs, dtype=np.float64)
    total = cumulative[-1] if cumulative.size else 0.0
    bounds = np.searchsorted(cumulative, total * np.arange(1, ranks) / ranks, side="left")
    bounds = np.concatenate([[0], bounds, [costs.size]])
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def _all_gather_lists(sims: np.ndarray, ids: np.ndarray, ranks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every rank's (N, k) candidate lists, in rank order."""
    all_sims = [torch.empty(sims.shape, dtype=torch.float32) for _ in range(ranks)]
    all_ids = [torch.empty(ids.shape, dtype=torch.int64) for _ in range(ranks)]
    dist.all_gather(all_sims, torch.from_numpy(np.ascontiguousarray(sims)))
    dist.all_gather(all_ids, torch.from_numpy(np.ascontiguousarray(ids)))
    return [(s.numpy(), i.numpy()) for s, i in zip(all_sims, all_ids)]


def _knn_faiss_gpu(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Exact self-search with a faiss GPU ``IndexFlatIP``, queried in chunks. (N, D) -> (N, k), (N, k)."""
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlatIP(features.shape[1]))
    index.add(features)
    # faiss GPU k-selection is limited to k <= 2048; chunk queries to bound the (chunk, N) distance buffer.
    chunk = max(1, _BLOCK_ENTRIES // features.shape[0])
    similarities = np.empty((features.shape[0], k), dtype=np.float32)
    indices = np.empty((features.shape[0], k), dtype=np.int64)
    for start in range(0, features.shape[0], chunk):
        stop = min(start + chunk, features.shape[0])
        similarities[start:stop], indices[start:stop] = index.search(features[start:stop], k)
    return similarities, indices
