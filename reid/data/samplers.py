"""P x K identity samplers: every batch holds P identities with K images each (for the batch-hard triplet).

Semantics of torchreid / open-reid ``RandomIdentitySampler``, made reproducible: each epoch, the indices of
every identity are shuffled (an identity with fewer than K images is sampled with replacement up to K) and cut
into chunks of K (a last partial chunk is dropped); then batches are formed by drawing P identities, without
replacement, among those that still have chunks, until fewer than P remain. The order depends only on
``(seed, epoch)``.

With ``camera_balanced=True`` the K images of a chunk are spread over the identity's cameras: each epoch, the
indices of every identity are shuffled within each camera, the cameras are put in a random order, and the
indices are taken round-robin, one per camera in that order, cameras with fewer images dropping out of the
rotation once used up. Any K consecutive images of that order span at least ``min(K, cameras still in the
rotation at the last of them)`` cameras, so the first chunk of an identity spans exactly ``min(K, its cameras)``.
An identity with fewer than K images repeats its round-robin order up to K (instead of drawing with
replacement), so its chunk covers all its cameras and all its images. The number of chunks per identity, and
hence ``len()``, is the same as without balancing; one camera per identity gives a plain shuffle.

The distributed sampler builds the same global order on every rank and gives rank r the identities
``[r*P/W, (r+1)*P/W)`` of each global batch, so the W local batches of one step are disjoint identity shards.

Example::

    sampler = RandomIdentitySampler(dataset.train, batch_size=64, num_instances=4, seed=0)
    for epoch in range(start_epoch, num_epochs):
        sampler.set_epoch(epoch)          # optional when epochs run in order from 0; needed when resuming
        for index in sampler: ...
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def _index_by_pid(data_source: Sequence[tuple]) -> dict[int, list[int]]:
    """Dataset indices of each pid, pids in sorted order."""
    index_by_pid: dict[int, list[int]] = defaultdict(list)
    for index, (_, pid, _) in enumerate(data_source):
        index_by_pid[int(pid)].append(index)
    return {pid: index_by_pid[pid] for pid in sorted(index_by_pid)}


def _index_by_pid_and_camera(data_source: Sequence[tuple]) -> dict[int, list[list[int]]]:
    """Dataset indices of each pid grouped by camera (cameras in sorted camid order), pids in sorted order."""
    index_by_pid_cam: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, (_, pid, camid) in enumerate(data_source):
        index_by_pid_cam[int(pid)][int(camid)].append(index)
    return {
        pid: [index_by_pid_cam[pid][camid] for camid in sorted(index_by_pid_cam[pid])]
        for pid in sorted(index_by_pid_cam)
    }


def _camera_interleaved(
    indices_by_camera: list[list[int]], num_instances: int, rng: np.random.Generator
) -> list[int]:
    """One identity's epoch order with cameras interleaved (shuffle within cameras, shuffle the cameras,
    round-robin); repeated up to ``num_instances`` when shorter."""
    queues = [rng.permutation(indices).tolist() for indices in indices_by_camera]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    order = [
        queue[position]
        for position in range(max(map(len, queues)))
        for queue in queues
        if position < len(queue)
    ]
    if len(order) < num_instances:
        order = (order * -(-num_instances // len(order)))[:num_instances]
    return order


def _check_pk(num_pids: int, batch_size: int, num_instances: int) -> int:
    """P = batch_size / num_instances, after checking the arguments fit the data."""
    if num_instances < 1 or batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and num_instances ({num_instances}) must be positive")
    if batch_size % num_instances != 0:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of num_instances ({num_instances})")
    num_pids_per_batch = batch_size // num_instances
    if num_pids < num_pids_per_batch:
        raise ValueError(
            f"only {num_pids} identities in the data, fewer than the {num_pids_per_batch} identities per batch "
            f"(batch_size {batch_size} / num_instances {num_instances})"
        )
    return num_pids_per_batch


def _estimated_length(index_by_pid: dict[int, list[int]], num_instances: int) -> int:
    """torchreid's estimate of the indices per epoch: every identity's full chunks of K (at least one)."""
    length = 0
    for indices in index_by_pid.values():
        num = max(len(indices), num_instances)
        length += num - num % num_instances
    return length


def _pk_batches(
    index_by_pid: dict[int, list[int]],
    num_pids_per_batch: int,
    num_instances: int,
    rng: np.random.Generator,
    index_by_pid_cam: dict[int, list[list[int]]] | None = None,
) -> list[list[list[int]]]:
    """One epoch of batches; each batch is a list of P chunks, each chunk K indices of one identity.

    With ``index_by_pid_cam`` (the same identities, indices grouped by camera) every identity's order is
    camera-interleaved (see :func:`_camera_interleaved`); without it, a plain shuffle.
    """
    chunks_by_pid: dict[int, list[list[int]]] = {}
    for pid, indices in index_by_pid.items():
        if index_by_pid_cam is not None:
            shuffled = _camera_interleaved(index_by_pid_cam[pid], num_instances, rng)
        elif len(indices) < num_instances:
            shuffled = rng.choice(indices, size=num_instances, replace=True).tolist()
        else:
            shuffled = rng.permutation(indices).tolist()
        num_chunks = len(shuffled) // num_instances
        chunks_by_pid[pid] = [
            shuffled[i * num_instances : (i + 1) * num_instances] for i in range(num_chunks)
        ]

    available = list(chunks_by_pid)
    batches = []
    while len(available) >= num_pids_per_batch:
        picks = rng.choice(len(available), size=num_pids_per_batch, replace=False)
        selected = [available[i] for i in picks]
        batches.append([chunks_by_pid[pid].pop(0) for pid in selected])
        exhausted = {pid for pid in selected if not chunks_by_pid[pid]}
        if exhausted:
            available = [pid for pid in available if pid not in exhausted]
    return batches


class RandomIdentitySampler(Sampler[int]):
    """Yields dataset indices so that every ``batch_size`` consecutive ones are P identities x K images.

    Args:
        data_source: ``(path, pid, camid)`` items (the camids are used only with ``camera_balanced``).
        batch_size: images per batch, P x K.
        num_instances: K, images per identity in a batch.
        seed: the order of epoch e is a function of ``(seed, e)`` only.
        camera_balanced: draw each identity's K images from as many of its cameras as possible (see the module
            docstring); False (the default) keeps the plain shuffle.

    Each ``__iter__`` uses the current epoch and then advances it by one, so consecutive epochs differ even
    without :meth:`set_epoch`; call ``set_epoch(e)`` to pin it (e.g. when resuming at epoch e).
    ``len()`` is torchreid's estimate (every identity's full K-chunks); an epoch may yield fewer indices,
    always a multiple of ``batch_size``.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``num_instances``, or the data holds fewer than P
            identities.
    """

    def __init__(
        self,
        data_source: Sequence[tuple],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        camera_balanced: bool = False,
    ) -> None:
        self.index_by_pid = _index_by_pid(data_source)
        self.camera_balanced = camera_balanced
        self.index_by_pid_cam = _index_by_pid_and_camera(data_source) if camera_balanced else None
        self.num_pids_per_batch = _check_pk(len(self.index_by_pid), batch_size, num_instances)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.seed = seed
        self.epoch = 0
        self.length = _estimated_length(self.index_by_pid, num_instances)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` at the next ``__iter__``."""
        self.epoch = epoch

    def _epoch_batches(self) -> list[list[list[int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        return _pk_batches(
            self.index_by_pid, self.num_pids_per_batch, self.num_instances, rng, self.index_by_pid_cam
        )

    def __iter__(self) -> Iterator[int]:
        return iter([index for batch in self._epoch_batches() for chunk in batch for index in chunk])

    def __len__(self) -> int:
        return self.length


class DistributedRandomIdentitySampler(RandomIdentitySampler):
    """The P x K sampler sharded over ``num_replicas`` ranks by identity.

    Every rank computes the same global epoch order (same ``seed``); of each global batch of P identities,
    rank r takes identities ``[r*P/W, (r+1)*P/W)``, so each rank yields local batches of ``(P/W) x K`` indices,
    disjoint in identity from the other ranks' batches of the same step. All ranks yield the same number of
    indices.

    Args:
        data_source: ``(path, pid, camid)`` items, identical on every rank.
        batch_size: the GLOBAL batch size P x K; the local one is ``batch_size // num_replicas``.
        num_instances: K.
        num_replicas: W, the world size.
        rank: this process's rank in ``[0, W)``.
        seed: same on every rank.
        camera_balanced: as :class:`RandomIdentitySampler`; same on every rank.

    Raises:
        ValueError: as :class:`RandomIdentitySampler`, or P is not a multiple of W, or rank is out of range.
    """

    def __init__(
        self,
        data_source: Sequence[tuple],
        batch_size: int,
        num_instances: int,
        num_replicas: int,
        rank: int,
        seed: int = 0,
        camera_balanced: bool = False,
    ) -> None:
        super().__init__(data_source, batch_size, num_instances, seed, camera_balanced)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank ({rank}) must be in [0, num_replicas={num_replicas})")
        if self.num_pids_per_batch % num_replicas != 0:
            raise ValueError(
                f"identities per batch P ({self.num_pids_per_batch} = batch_size {batch_size} / num_instances "
                f"{num_instances}) must be a multiple of num_replicas ({num_replicas})"
            )
        self.num_replicas = num_replicas
        self.rank = rank
        self.local_batch_size = batch_size // num_replicas

    def __iter__(self) -> Iterator[int]:
        pids_per_rank = self.num_pids_per_batch // self.num_replicas
        first, last = self.rank * pids_per_rank, (self.rank + 1) * pids_per_rank
        return iter(
            [index for batch in self._epoch_batches() for chunk in batch[first:last] for index in chunk]
        )

    def __len__(self) -> int:
        return self.length // self.num_replicas
