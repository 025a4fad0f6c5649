"""Approximate k-NN self-search for large N: an inverted file (IVF) joined with itself list pair by list pair.

Every feature is filed under its nearest of ``nlist`` centroids (spherical k-means, faiss, trained on a seeded
sample), and each list is searched against itself and its ``nprobe - 1`` most related lists. The work is the same as a
faiss ``IndexIVFFlat`` searched with every feature as a query, but it is organised for a *self*-join:

- the features are reordered list by list, so the members of every list are one contiguous block, and the
  search of list ``a`` against list ``b`` is one matrix product of two blocks (BLAS), fed to faiss's per-row
  heaps for ``a``'s rows and, transposed, for ``b``'s rows — each pair of lists is computed once;
- ``b`` is joined with ``a`` when it is among ``a``'s most related lists, or the other way round (so the
  joining is symmetric); related: most often named as second-nearest list by the other's features, centroid
  similarity breaking ties (:func:`build_inverted_file`).

**The partition space.** The lists are not made on the features themselves but on a :class:`PartitionSpace`:
the features centred on their mean (without it the mean direction draws the noisiest features into one huge
list), optionally with their ``drop`` leading principal components removed, optionally sketched to ``dim``
dimensions by a seeded Gaussian projection, and re-normalised. Where the leading components are nuisances every
identity shares (camera, pose: the benchmark's synthetic features), k-means on the raw features splits along
them and the lists cut across identities (43 % of an image's identity shared its list); without them the lists
follow the identities (99.8 % at 30,000). On real CUHK03 features the leading components carry identity, and
removing them splits identities instead: hence ``drop`` defaults to 0 and is a per-dataset choice
(``cluster.knn_drop``; docs/BENCHMARKS.md). Only the filing uses that space: every similarity is computed on
the full features.

A faiss ``IndexIVFFlat`` scans each query's lists one query at a time (memory-bound: every vector is streamed
again for every query that probes it); on this project's 2-core machines it was slower than the exact blocked
search at 20,000 × 2048 with 32 of 565 lists probed (docs/BENCHMARKS.md). The list-pair join keeps the IVF's
arithmetic (about ``nprobe / nlist`` of the exact search's) at matrix-product speed.

The result is exact for every pair it computes; what it can miss are neighbours filed in lists that neither
list probes (``recall`` in :mod:`benchmarks.clustering`). Deterministic for a given ``seed`` and thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

# Entries of one float32 similarity block while assigning features to centroids: 2**25 = 128 MiB.
_BLOCK_ENTRIES = 2**25
# Features k-means is trained on, per centroid (faiss warns below 39, its own cap is 256: k-means is a large share of the time).
_TRAIN_POINTS_PER_LIST = 40
_KMEANS_ITERATIONS = 10
# Centroids shortlisted per feature by the sketched assignment (cluster.knn_train_dim), then re-ranked exactly.
_SHORTLIST_CANDIDATES = 8
# The partition space (docs/BENCHMARKS.md, "Clustering at scale"): features its mean and principal components are
# estimated from, components removed by default (at most D / 8), sketch dimensions by default.
_PCA_SAMPLE = 20_000
# 0: on real CUHK03 features (docs/BENCHMARKS.md) removing them split identities (same-identity pairs sharing a
# list 0.23 -> 0.06 with 64 removed); on the benchmark's synthetic features, whose leading directions are camera
# and pose, removing 64 is what makes the lists follow identities. A per-dataset choice: cluster.knn_drop.
DEFAULT_DROP = 0
DEFAULT_PARTITION_DIM = 0  # no sketch: at 100,000 x 2048 a 512-d sketch split identities (ARI 0.967 vs 0.993)
_SUBSPACE_ITERATIONS = 8


def default_nlist(num_samples: int) -> int:
    """Lists for N features: 4·sqrt(N) (faiss's rule of thumb is 4-16·sqrt(N)), at least 1, at most N / 39."""
    return int(max(1, min(round(4 * np.sqrt(num_samples)), num_samples // 39)))


@dataclass
class InvertedFile:
    """Features filed by nearest centroid, and which lists are joined.

    Attributes:
        order: (N,) int64, the features list by list: ``order[offsets[a]:offsets[a + 1]]`` are the rows of list a.
        offsets: (nlist + 1,) int64.
        pairs: (P, 2) int64 list pairs ``(a, b)``, ``a <= b``, to compute (every probed pair once).
    """

    order: np.ndarray
    offsets: np.ndarray
    pairs: np.ndarray

    def pair_costs(self) -> np.ndarray:
        """(P,) similarities computed per pair, ``|a| x |b|``."""
        sizes = np.diff(self.offsets)
        return sizes[self.pairs[:, 0]] * sizes[self.pairs[:, 1]]


@dataclass
class PartitionSpace:
    """Where features are filed: ``normalise(((x - mean) - ((x - mean) @ basis) @ basis.T) @ projection)``.

    Attributes:
        mean: (D,) float32 mean feature.
        basis: (D, m) float32 orthonormal leading principal components, removed.
        projection: (D, d) float32 seeded Gaussian sketch, or (D, 0) for none (d = D).
    """

    mean: np.ndarray
    basis: np.ndarray
    projection: np.ndarray

    @property
    def width(self) -> int:
        """d, the dimensions of the partition space."""
        return int(self.projection.shape[1] or self.mean.shape[0])

    def transform(self, features: np.ndarray, rows: tuple[int, int] | None = None) -> np.ndarray:
        """``features[rows[0]:rows[1]]`` (default all) in the partition space: (n, d) float32 unit rows."""
        start, stop = rows if rows is not None else (0, features.shape[0])
        mean, basis = torch.from_numpy(self.mean), torch.from_numpy(self.basis)
        sketch = torch.from_numpy(self.projection) if self.projection.shape[1] else None
        through = basis.T @ sketch if sketch is not None else basis.T  # (m, d): the removed part, sketched
        width = sketch.shape[1] if sketch is not None else features.shape[1]
        out = np.empty((stop - start, width), dtype=np.float32)
        chunk = max(1, _BLOCK_ENTRIES // features.shape[1])
        with torch.inference_mode():
            for a in range(start, stop, chunk):
                b = min(a + chunk, stop)
                centred = torch.from_numpy(np.asarray(features[a:b], dtype=np.float32)) - mean
                kept = (centred @ sketch if sketch is not None else centred) - (centred @ basis) @ through
                out[a - start : b - start] = torch.nn.functional.normalize(kept, dim=1).numpy()
        return out


def fit_partition_space(features: np.ndarray, drop: int = -1, dim: int = 0, seed: int = 0) -> PartitionSpace:
    """The mean and the ``drop`` leading principal components of a seeded sample of ``_PCA_SAMPLE`` features,
    and a seeded Gaussian sketch to ``dim`` dimensions.

    Args:
        features: (N, D) float32 or float16.
        drop: principal components to remove; -1: ``DEFAULT_DROP``; at most D / 8 either way.
        dim: sketch dimensions; 0 or ``dim >= D``: none (the full features, ``DEFAULT_PARTITION_DIM``).
        seed: of the sample and the sketch.
    """
    num_samples, full_dim = features.shape
    drop = min(DEFAULT_DROP if drop < 0 else drop, full_dim // 8)
    dim = dim or DEFAULT_PARTITION_DIM or full_dim
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(num_samples, size=min(num_samples, _PCA_SAMPLE), replace=False))
    x = torch.from_numpy(np.asarray(features[sample], dtype=np.float32))
    mean = x.mean(dim=0)
    centred = x - mean
    generator = torch.Generator().manual_seed(seed)
    basis = leading_eigenvectors((centred.T @ centred).double(), drop, generator) if drop else torch.zeros(full_dim, 0)
    if dim < full_dim:
        projection = torch.randn(full_dim, dim, generator=generator, dtype=torch.float64) / np.sqrt(dim)
    else:
        projection = torch.zeros(full_dim, 0, dtype=torch.float64)
    return PartitionSpace(mean=mean.numpy(), basis=np.ascontiguousarray(basis.float().numpy()),
                          projection=projection.float().numpy())


def leading_eigenvectors(matrix: torch.Tensor, count: int, generator: torch.Generator,
                        iterations: int = _SUBSPACE_ITERATIONS) -> torch.Tensor:
    """The ``count`` leading eigenvectors (D, count) of a symmetric positive semi-definite (D, D) matrix, by
    subspace iteration with ``count + 16`` seeded vectors and a Rayleigh-Ritz step: a few (D, D) x (D, count)
    products instead of a full eigendecomposition (11 s at D = 2048 on 2 cores)."""
    size = matrix.shape[0]
    width = min(size, count + 16)
    q = torch.linalg.qr(torch.randn(size, width, generator=generator, dtype=matrix.dtype)).Q
    for _ in range(iterations):
        q = torch.linalg.qr(matrix @ q).Q
    _, vectors = torch.linalg.eigh(q.T @ matrix @ q)  # ascending
    return (q @ vectors[:, width - count :]).contiguous()


def train_centroids(features: np.ndarray, nlist: int, seed: int = 0, space: PartitionSpace | None = None,
                    shortlist: Shortlist | None = None) -> np.ndarray:
    """Spherical k-means (faiss) on a seeded sample of ``nlist`` x 40 features (taken into ``space`` when given),
    10 iterations. (N, D) -> (nlist, d) float32 unit rows.

    With ``shortlist``, the Lloyd iterations run in its sketch (``train_dim`` dimensions: the cost of k-means,
    sample x nlist x d per iteration, falls by d / train_dim), and the centroids are then lifted to the full
    space: each the normalised mean of the sample features that the shortlisted assignment (:func:`assign`)
    files under it, taken twice (once from the sketch's own assignment, once from the lifted centroids'). A
    centroid with no member keeps a sample feature of its own."""
    num_samples = features.shape[0]
    if not 1 <= nlist <= num_samples:
        raise ValueError(f"nlist must be in [1, N={num_samples}], got nlist={nlist}")
    rng = np.random.default_rng(seed)
    size = min(num_samples, nlist * _TRAIN_POINTS_PER_LIST)
    sample = np.sort(rng.choice(num_samples, size=size, replace=False))
    if space is None:
        train = np.ascontiguousarray(features[sample], dtype=np.float32)
    else:  # gathered and transformed block by block: no (sample, D) copy of the features besides the result
        train = np.empty((size, space.width), dtype=np.float32)
        chunk = max(1, _BLOCK_ENTRIES // features.shape[1])
        for a in range(0, size, chunk):
            train[a : a + chunk] = space.transform(features[sample[a : a + chunk]])
    fitted = train if shortlist is None else shortlist.sketch(train)
    kmeans = faiss.Kmeans(fitted.shape[1], nlist, niter=_KMEANS_ITERATIONS, spherical=True, seed=seed,
                          max_points_per_centroid=_TRAIN_POINTS_PER_LIST, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # the sample is sized above; no warning for small N
    kmeans.train(fitted)
    if shortlist is None:
        return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    _, members = kmeans.index.search(fitted, 1)
    centroids = _member_means(train, members[:, 0], nlist, rng)
    members, _ = assign(train, centroids, shortlist=shortlist)
    return _member_means(train, members, nlist, rng)


def _member_means(x: np.ndarray, members: np.ndarray, nlist: int, rng: np.random.Generator) -> np.ndarray:
    """(nlist, d) normalised mean of the rows of ``x`` filed under each list, summed in float64 block by block;
    a list without rows takes a random row of ``x``."""
    sums = torch.zeros(nlist, x.shape[1], dtype=torch.float64)
    index = torch.from_numpy(members)
    chunk = max(1, _BLOCK_ENTRIES // x.shape[1])
    for a in range(0, x.shape[0], chunk):
        sums.index_add_(0, index[a : a + chunk], torch.from_numpy(np.asarray(x[a : a + chunk])).double())
    empty = np.flatnonzero(~np.bincount(members, minlength=nlist).astype(bool))
    if empty.size:
        picked = rng.choice(x.shape[0], size=empty.size, replace=x.shape[0] < empty.size)
        sums[empty] = torch.from_numpy(np.asarray(x[picked])).double()
    return np.ascontiguousarray(torch.nn.functional.normalize(sums, dim=1).float().numpy())


@dataclass
class Shortlist:
    """A cheaper assignment for many lists: the centroids nearest in a seeded Gaussian sketch of the partition
    space to ``train_dim`` dimensions are shortlisted, ``candidates`` per feature, and re-ranked by their exact
    inner products. Wrong only where a feature's true nearest centroids fall out of its sketched shortlist.

    Attributes:
        projection: (d, train_dim) float32.
        candidates: centroids re-ranked per feature.
    """

    projection: np.ndarray
    candidates: int = _SHORTLIST_CANDIDATES

    @classmethod
    def make(cls, dim: int, train_dim: int, seed: int = 0, candidates: int = 0) -> Shortlist | None:
        """The shortlist for ``dim``-d partition-space features, or None where ``train_dim`` is 0 or
        ``>= dim`` (the full-width assignment)."""
        if not 0 < train_dim < dim:
            return None
        generator = torch.Generator().manual_seed(seed + 1)  # not the partition space's sketch
        projection = torch.randn(dim, train_dim, generator=generator) / np.sqrt(train_dim)
        return cls(projection=projection.numpy(), candidates=max(2, candidates or _SHORTLIST_CANDIDATES))

    def sketch(self, x: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, train_dim) float32 unit rows."""
        with torch.inference_mode():
            y = torch.from_numpy(np.asarray(x, dtype=np.float32)) @ torch.from_numpy(self.projection)
            return torch.nn.functional.normalize(y, dim=1).numpy()


def assign(features: np.ndarray, centroids: np.ndarray, rows: tuple[int, int] | None = None,
           space: PartitionSpace | None = None, shortlist: Shortlist | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and second-nearest centroid (inner product; ties to the lower index) of
    ``features[rows[0]:rows[1]]``, each chunk first taken into ``space`` when given (so the whole
    partition-space copy is never held); with ``shortlist``, among each feature's shortlisted centroids.
    -> two int64 arrays (the second equals the first with one centroid)."""
    start, stop = rows if rows is not None else (0, features.shape[0])
    if shortlist is not None and shortlist.candidates < centroids.shape[0]:
        return _assign_shortlisted(features, centroids, start, stop, space, shortlist)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    chunk = max(1, _BLOCK_ENTRIES // max(1, centroids.shape[0], features.shape[1]))
    nearest = np.empty((stop - start, 2), dtype=np.int64)
    with torch.inference_mode():
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            block = space.transform(features, rows=(a, b)) if space is not None else features[a:b]
            similarities = torch.from_numpy(np.asarray(block, dtype=np.float32)) @ c.T
            top = torch.topk(similarities, min(2, c.shape[0]), dim=1).indices
            nearest[a - start : b - start] = top[:, [0, -1]].numpy()
    return nearest[:, 0], nearest[:, 1]


def _assign_shortlisted(features: np.ndarray, centroids: np.ndarray, start: int, stop: int,
                        space: PartitionSpace | None, shortlist: Shortlist) -> tuple[np.ndarray, np.ndarray]:
    """:func:`assign` among each feature's ``shortlist.candidates`` nearest centroids in the sketch, re-ranked
    by their exact inner products (each row's candidates gathered: (rows, candidates, d) per block)."""
    m = shortlist.candidates
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    sketched = torch.from_numpy(shortlist.sketch(centroids))
    chunk = max(1, min(_BLOCK_ENTRIES // max(1, centroids.shape[0], features.shape[1]),
                       2**24 // (m * c.shape[1])))  # the gathered candidates: <= 64 MiB
    nearest = np.empty((stop - start, 2), dtype=np.int64)
    with torch.inference_mode():
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            block = space.transform(features, rows=(a, b)) if space is not None else features[a:b]
            block = torch.from_numpy(np.asarray(block, dtype=np.float32))
            near = torch.topk(torch.from_numpy(shortlist.sketch(block.numpy())) @ sketched.T, m, dim=1).indices
            near = torch.sort(near, dim=1).values  # candidates in index order, as the full assignment sees them
            exact = torch.einsum("nd,nkd->nk", block, c[near])
            nearest[a - start : b - start] = torch.gather(near, 1, torch.topk(exact, 2, dim=1).indices).numpy()
    return nearest[:, 0], nearest[:, 1]


def build_inverted_file(list_of: np.ndarray, centroids: np.ndarray, nprobe: int,
                        second_of: np.ndarray | None = None) -> InvertedFile:
    """File each feature under its list, and pick the list pairs to join: each list with itself and its
    ``nprobe - 1`` most related lists, the relation made symmetric.

    Related lists: without ``second_of``, by centroid similarity. With it (each feature's second-nearest list),
    by how many features of either list have the other as their second choice — the lists an identity split by
    a k-means boundary straddles — centroid similarity breaking ties. With many identities per list a split
    identity moves the two centroids only a little towards each other, so centroid similarity alone misses
    many of those pairs (docs/BENCHMARKS.md)."""
    nlist = centroids.shape[0]
    nprobe = int(min(max(1, nprobe), nlist))
    order = np.argsort(list_of, kind="stable")
    offsets = np.searchsorted(list_of[order], np.arange(nlist + 1)).astype(np.int64)
    a, b = _related_lists(list_of, second_of, centroids, nprobe - 1)
    a, b = np.r_[np.arange(nlist), a], np.r_[np.arange(nlist), b]  # a list always joins itself
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    sizes = np.diff(offsets)
    pairs = pairs[(sizes[pairs[:, 0]] > 0) & (sizes[pairs[:, 1]] > 0)]
    return InvertedFile(order=order.astype(np.int64), offsets=offsets, pairs=pairs.astype(np.int64))


def _related_lists(list_of: np.ndarray, second_of: np.ndarray | None, centroids: np.ndarray,
                   count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each list's ``count`` most related other lists, as (list, partner) index arrays: ranked by the number of
    second choices the two share (both directions), then by centroid similarity, then by index. Sparse: only
    lists that share second choices are scored, and only lists with fewer than ``count`` of those are compared
    with every centroid (blocked), so no (nlist, nlist) matrix is held (3.2 GB at 20,000 lists)."""
    nlist = centroids.shape[0]
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if second_of is not None:
        split = list_of != second_of
        keys = np.r_[list_of[split] * nlist + second_of[split], second_of[split] * nlist + list_of[split]]
        keys, shared = np.unique(keys, return_counts=True)
        src, dst = keys // nlist, keys % nlist
        score = shared + _pair_cosines(centroids, src, dst) / 2
        ranked = np.lexsort((dst, -score, src))
        src, dst = src[ranked], dst[ranked]
        rank = np.arange(src.size) - np.searchsorted(src, src)
        keep = rank < count
        src, dst = src[keep], dst[keep]
    else:
        src = dst = np.zeros(0, np.int64)
    have = np.bincount(src, minlength=nlist)
    short = np.flatnonzero(have < count)
    extra_src, extra_dst = [], []
    chunk = max(1, _BLOCK_ENTRIES // max(1, nlist))
    c = torch.from_numpy(centroids)
    taken = set(zip(src.tolist(), dst.tolist())) if short.size else set()
    with torch.inference_mode():
        for lo in range(0, short.size, chunk):
            rows = short[lo : lo + chunk]
            sims = (c[torch.from_numpy(rows)] @ c.T).double() / 2
            sims[torch.arange(rows.size), torch.from_numpy(rows)] = -np.inf
            width = min(nlist, 2 * count + 1)
            top = torch.topk(sims, width, dim=1)
            values, ids = top.values.numpy(), top.indices.numpy()
            for row, list_values, list_ids in zip(rows, values, ids):
                ranked = np.lexsort((list_ids, -list_values))
                need = count - have[row]
                for partner in list_ids[ranked]:
                    if need == 0:
                        break
                    if partner != row and (row, partner) not in taken:
                        extra_src.append(row)
                        extra_dst.append(partner)
                        need -= 1
    return np.r_[src, np.array(extra_src, np.int64)], np.r_[dst, np.array(extra_dst, np.int64)]


def _pair_cosines(centroids: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(P,) float64 inner products of the centroid pairs (src, dst), gathered block by block (two (P, d) gathers
    at once would be 2 x 11 GB for the ~1.4 M pairs of 20,000 lists at 1M features)."""
    out = np.empty(src.size, dtype=np.float64)
    chunk = max(1, _BLOCK_ENTRIES // (4 * max(1, centroids.shape[1])))
    for a in range(0, src.size, chunk):
        out[a : a + chunk] = np.einsum("nd,nd->n", centroids[src[a : a + chunk]], centroids[dst[a : a + chunk]])
    return out


def join_lists(features: np.ndarray, ivf: InvertedFile, k: int,
               pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` over the computed pairs, for every feature. Returns (N, k) float32, (N, k) int64 in *feature*
    order (not sorted within rows; -inf / -1 where a row saw fewer than k candidates).

    Args:
        features: (N, D) float32 or float16 (its reordered copy keeps the dtype: half the memory; the products
            are computed in float32), unit rows.
        ivf: :func:`build_inverted_file`'s result.
        pairs: the subset of ``ivf.pairs`` to compute (a rank's share); default all.
    """
    pairs = ivf.pairs if pairs is None else pairs
    num_samples = features.shape[0]
    dtype = np.float16 if features.dtype == np.float16 else np.float32
    ordered = torch.from_numpy(np.ascontiguousarray(features[ivf.order], dtype=dtype))
    heaps, best_sims, best_ids = row_heaps(num_samples, k)
    offsets = ivf.offsets
    # pairs are sorted by a: list a is multiplied once with all its partners gathered side by side
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    with torch.inference_mode():
        for first, last in zip(starts, np.r_[starts[1:], len(pairs)]):
            a = int(pairs[first, 0])
            partners = pairs[first:last, 1]
            rows_a = int(offsets[a + 1] - offsets[a])
            sizes = offsets[partners + 1] - offsets[partners]
            columns = torch.from_numpy(np.concatenate([np.arange(offsets[b], offsets[b + 1]) for b in partners]))
            block = (ordered[offsets[a] : offsets[a + 1]].float() @ ordered[columns].float().T).contiguous()
            ids = columns.numpy()
            heaps.addn_with_ids(int(block.shape[1]), faiss.swig_ptr(block.numpy()), faiss.swig_ptr(ids), 0,
                                int(offsets[a]), rows_a)
            transposed = block.T.contiguous().numpy()  # (sum of partner sizes, rows_a): each partner's rows
            start = 0
            for b, size in zip(partners, sizes):
                if b != a:
                    heaps.addn(rows_a, faiss.swig_ptr(transposed[start : start + size]), int(offsets[a]),
                               int(offsets[b]), int(size))
                start += size
    # heap rows and ids are positions in the reordered features: back to feature order and feature ids
    sims = np.empty_like(best_sims)
    ids = np.empty_like(best_ids)
    sims[ivf.order] = best_sims
    found = best_ids >= 0
    ids[ivf.order] = np.where(found, ivf.order[np.where(found, best_ids, 0)], -1)
    return sims, ids


def row_heaps(num_rows: int, k: int) -> tuple[faiss.float_minheap_array_t, np.ndarray, np.ndarray]:
    """faiss min-heaps keeping, per row, the k largest similarities fed to them (k-selection in C++, OpenMP),
    and the (num_rows, k) float32 / int64 arrays they live in (-inf / -1 until filled; keep them alive)."""
    best_sims = np.full((num_rows, k), -np.inf, dtype=np.float32)
    best_ids = np.full((num_rows, k), -1, dtype=np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k = num_rows, k
    heaps.val, heaps.ids = faiss.swig_ptr(best_sims), faiss.swig_ptr(best_ids)
    heaps.heapify()
    return heaps, best_sims, best_ids


def merge_top_k(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of several (N, k_i) candidate lists of the same rows (disjoint candidates), by decreasing
    similarity, equal similarities by increasing id; missing entries (-1) last."""
    sims = np.concatenate([s for s, _ in results], axis=1)
    ids = np.concatenate([i for _, i in results], axis=1)
    sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -sims), axis=-1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)
