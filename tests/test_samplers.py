"""Tests for reid/data/samplers.py: P x K batches, torchreid length, reproducibility, identity sharding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reid.data.loaders import build_train_loader
from reid.data.samplers import DistributedRandomIdentitySampler, RandomIdentitySampler

# 10 identities with 1..9 and 13 images; pid 100 + i, so relabelled pids are not assumed.
IMAGES_PER_PID = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13]
DATA = [
    (f"{100 + i}_{j}.jpg", 100 + i, j % 3) for i, count in enumerate(IMAGES_PER_PID) for j in range(count)
]
PID_OF = [pid for _, pid, _ in DATA]


def _batches(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def test_every_batch_is_p_identities_times_k_images() -> None:
    sampler = RandomIdentitySampler(DATA, batch_size=12, num_instances=4, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) % 12 == 0 and len(indices) >= 12
        for batch in _batches(indices, 12):
            counts = Counter(PID_OF[index] for index in batch)
            assert len(counts) == 3
            assert set(counts.values()) == {4}
            # each identity's K images are consecutive
            assert [PID_OF[index] for index in batch[::4]] == [PID_OF[index] for index in batch[3::4]]


def test_length_is_the_torchreid_estimate() -> None:
    # max(n, 4) rounded down to a multiple of 4: 4,4,4,4,4,4,4,8,8,12
    assert len(RandomIdentitySampler(DATA, batch_size=8, num_instances=4)) == 56
    # K = 3: 3,3,3,3,3,6,6,6,9,12
    assert len(RandomIdentitySampler(DATA, batch_size=6, num_instances=3)) == 54
    sampler = RandomIdentitySampler(DATA, batch_size=8, num_instances=4)
    assert all(len(list(sampler)) <= 56 for _ in range(5))


def test_small_identities_are_sampled_with_replacement_and_others_without() -> None:
    sampler = RandomIdentitySampler(DATA, batch_size=8, num_instances=4, seed=3)
    for _ in range(5):
        indices = list(sampler)
        uses = Counter(indices)
        for index, count in uses.items():
            if IMAGES_PER_PID[PID_OF[index] - 100] >= 4:
                assert count == 1  # a chunk of a large identity never repeats an image in one epoch
        # the identity with one image fills its chunk with four copies of it
        if 0 in uses:
            assert uses[0] == 4


def test_same_seed_and_epoch_give_the_same_order() -> None:
    first = RandomIdentitySampler(DATA, batch_size=8, num_instances=4, seed=7)
    second = RandomIdentitySampler(DATA, batch_size=8, num_instances=4, seed=7)
    assert list(first) == list(second)
    assert list(RandomIdentitySampler(DATA, 8, 4, seed=8)) != list(RandomIdentitySampler(DATA, 8, 4, seed=7))


def test_epochs_advance_by_themselves_and_set_epoch_reproduces_a_resumed_epoch() -> None:
    running = RandomIdentitySampler(DATA, batch_size=8, num_instances=4, seed=1)
    epochs = [list(running) for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    resumed = RandomIdentitySampler(DATA, batch_size=8, num_instances=4, seed=1)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    resumed.set_epoch(0)
    assert list(resumed) == epochs[0]


def test_every_identity_appears_each_epoch_when_all_have_k_images() -> None:
    data = [(f"{pid}_{j}.jpg", pid, 0) for pid in range(8) for j in range(4)]
    indices = list(RandomIdentitySampler(data, batch_size=8, num_instances=4, seed=0))
    assert sorted(indices) == list(range(32))


def test_batch_size_not_multiple_of_num_instances_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"batch_size \(10\) must be a multiple of num_instances \(4\)"):
        RandomIdentitySampler(DATA, batch_size=10, num_instances=4)


def test_fewer_identities_than_p_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"only 10 identities in the data, fewer than the 16 identities per batch"
    ):
        RandomIdentitySampler(DATA, batch_size=64, num_instances=4)


def test_distributed_ranks_split_each_global_batch_into_disjoint_identity_shards() -> None:
    global_order = list(RandomIdentitySampler(DATA, batch_size=16, num_instances=4, seed=5))
    ranks = [DistributedRandomIdentitySampler(DATA, 16, 4, num_replicas=2, rank=r, seed=5) for r in range(2)]
    local = [list(sampler) for sampler in ranks]
    assert len(local[0]) == len(local[1]) == len(global_order) // 2
    assert len(ranks[0]) == len(ranks[1]) == len(RandomIdentitySampler(DATA, 16, 4)) // 2
    for step, global_batch in enumerate(_batches(global_order, 16)):
        rank0, rank1 = local[0][step * 8 : (step + 1) * 8], local[1][step * 8 : (step + 1) * 8]
        assert rank0 + rank1 == global_batch
        pids0, pids1 = Counter(PID_OF[i] for i in rank0), Counter(PID_OF[i] for i in rank1)
        assert set(pids0.values()) == set(pids1.values()) == {4} and len(pids0) == len(pids1) == 2
        assert not set(pids0) & set(pids1)


def test_distributed_ranks_follow_set_epoch_together() -> None:
    ranks = [DistributedRandomIdentitySampler(DATA, 8, 4, num_replicas=2, rank=r, seed=0) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    reference = RandomIdentitySampler(DATA, 8, 4, seed=0)
    reference.set_epoch(3)
    merged = []
    for step_0, step_1 in zip(_batches(list(ranks[0]), 4), _batches(list(ranks[1]), 4)):
        merged += step_0 + step_1
    assert merged == list(reference)


def test_distributed_p_not_multiple_of_world_size_and_bad_rank_are_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"identities per batch P \(3 .*must be a multiple of num_replicas \(2\)"
    ):
        DistributedRandomIdentitySampler(DATA, 12, 4, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match=r"rank \(2\) must be in \[0, num_replicas=2\)"):
        DistributedRandomIdentitySampler(DATA, 16, 4, num_replicas=2, rank=2)


# ---- camera-balanced P x K ------------------------------------------------------------------------------------

CAM_OF = [camid for _, _, camid in DATA]


def _chunks_by_pid(indices: list[int], num_instances: int, pid_of: list[int]) -> dict[int, list[list[int]]]:
    """Each identity's chunks in the order they are yielded (which is the identity's own chunk order)."""
    chunks: dict[int, list[list[int]]] = {}
    for start in range(0, len(indices), num_instances):
        chunk = indices[start : start + num_instances]
        assert len({pid_of[index] for index in chunk}) == 1
        chunks.setdefault(pid_of[chunk[0]], []).append(chunk)
    return chunks


def _items(cameras_per_pid: list[dict[int, int]]) -> list[tuple[str, int, int]]:
    """Items for pids 0, 1, ... with ``{camid: number of images}`` each."""
    return [
        (f"{pid}_c{camid}_{j}.jpg", pid, camid)
        for pid, cameras in enumerate(cameras_per_pid)
        for camid, count in cameras.items()
        for j in range(count)
    ]


def test_camera_balanced_two_cameras_of_four_give_two_plus_two_in_every_chunk() -> None:
    data = _items([{1: 4, 2: 4}])
    pid_of, cam_of = [pid for _, pid, _ in data], [camid for _, _, camid in data]
    sampler = RandomIdentitySampler(data, batch_size=4, num_instances=4, seed=0, camera_balanced=True)
    for _ in range(10):
        indices = list(sampler)
        assert sorted(indices) == list(range(8))  # 2 chunks, every image once
        for chunk in _chunks_by_pid(indices, 4, pid_of)[0]:
            assert Counter(cam_of[index] for index in chunk) == {1: 2, 2: 2}


def test_camera_balanced_shuffles_the_order_of_the_cameras_and_within_them() -> None:
    data = _items([{1: 4, 2: 4}])
    cam_of = [camid for _, _, camid in data]
    sampler = RandomIdentitySampler(data, batch_size=4, num_instances=4, seed=0, camera_balanced=True)
    orders = [list(sampler) for _ in range(20)]
    assert {cam_of[order[0]] for order in orders} == {1, 2}  # either camera may lead
    assert len({order[0] for order in orders}) > 2  # and any of its images
    for order in orders:  # round-robin: the cameras alternate all the way
        assert all(cam_of[a] != cam_of[b] for a, b in zip(order, order[1:]))


def test_camera_balanced_first_chunk_covers_all_three_cameras() -> None:
    # cams {1: 6, 2: 1, 3: 1}, K = 4: order is one image of each camera, then the five other cam-1 images
    data = _items([{1: 6, 2: 1, 3: 1}])
    pid_of, cam_of = [pid for _, pid, _ in data], [camid for _, _, camid in data]
    sampler = RandomIdentitySampler(data, batch_size=4, num_instances=4, seed=0, camera_balanced=True)
    for _ in range(10):
        first, second = _chunks_by_pid(list(sampler), 4, pid_of)[0]
        assert Counter(cam_of[index] for index in first) == {1: 2, 2: 1, 3: 1}
        assert Counter(cam_of[index] for index in second) == {1: 4}
        assert sorted(first + second) == list(range(8))


def test_camera_balanced_small_identity_chunk_covers_both_cameras() -> None:
    # two images, cams 1 and 2, K = 4: the round-robin order (a, b) repeated -> each image twice
    data = _items([{1: 1, 2: 1}, {1: 2, 2: 1}])
    pid_of, cam_of = [pid for _, pid, _ in data], [camid for _, _, camid in data]
    sampler = RandomIdentitySampler(data, batch_size=4, num_instances=4, seed=0, camera_balanced=True)
    for _ in range(10):
        chunks = _chunks_by_pid(list(sampler), 4, pid_of)
        assert len(chunks[0]) == len(chunks[1]) == 1
        assert Counter(chunks[0][0]) == {0: 2, 1: 2}
        assert chunks[0][0][0] != chunks[0][0][1]  # alternates: a, b, a, b
        # three images (cam 1: 2, cam 2: 1) -> order x, y, x' then x again: both cameras, all three images
        assert set(chunks[1][0]) == {2, 3, 4}
        assert {cam_of[index] for index in chunks[1][0][:2]} == {1, 2}


def test_camera_balanced_keeps_the_pk_structure_and_the_length() -> None:
    plain = RandomIdentitySampler(DATA, batch_size=12, num_instances=4, seed=0)
    sampler = RandomIdentitySampler(DATA, batch_size=12, num_instances=4, seed=0, camera_balanced=True)
    assert len(sampler) == len(plain) == 56  # 4,4,4,4,4,4,4,8,8,12
    for epoch in range(5):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) % 12 == 0 and len(indices) >= 12
        for batch in _batches(indices, 12):
            assert set(Counter(PID_OF[index] for index in batch).values()) == {4}
        uses = Counter(indices)
        assert all(count == 1 for index, count in uses.items() if IMAGES_PER_PID[PID_OF[index] - 100] >= 4)
        # a chunk covers min(K, cameras) cameras here: pid 100 has 1 camera, 101 two, the others three
        for pid, chunks in _chunks_by_pid(indices, 4, PID_OF).items():
            assert len({CAM_OF[index] for index in chunks[0]}) == min(IMAGES_PER_PID[pid - 100], 3)


def test_camera_balanced_is_deterministic_per_seed_and_epoch_and_differs_from_plain() -> None:
    first = RandomIdentitySampler(DATA, 8, 4, seed=7, camera_balanced=True)
    second = RandomIdentitySampler(DATA, 8, 4, seed=7, camera_balanced=True)
    epochs = [list(first) for _ in range(3)]
    assert epochs == [list(second) for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    second.set_epoch(1)
    assert list(second) == epochs[1]
    assert list(RandomIdentitySampler(DATA, 8, 4, seed=8, camera_balanced=True)) != epochs[0]
    assert list(RandomIdentitySampler(DATA, 8, 4, seed=7)) != epochs[0]
    # camera_balanced=False is the default path
    assert list(RandomIdentitySampler(DATA, 8, 4, seed=7, camera_balanced=False)) == list(
        RandomIdentitySampler(DATA, 8, 4, seed=7)
    )


def test_camera_balanced_with_a_single_camera_is_a_plain_shuffle() -> None:
    data = [(f"{pid}_{j}.jpg", pid, 0) for pid in range(8) for j in range(8)]
    pid_of = [pid for _, pid, _ in data]
    sampler = RandomIdentitySampler(data, batch_size=8, num_instances=4, seed=0, camera_balanced=True)
    orders = [list(sampler) for _ in range(3)]
    for indices in orders:
        assert sorted(indices) == list(range(64))
        for batch in _batches(indices, 8):
            assert set(Counter(pid_of[index] for index in batch).values()) == {4}
    assert orders[0] != orders[1]
    # identities with fewer than K images, one camera each: K draws of the identity's images
    small = [(f"{pid}_{j}.jpg", pid, 5) for pid in range(4) for j in range(pid + 1)]
    indices = list(RandomIdentitySampler(small, 8, 4, seed=0, camera_balanced=True))
    assert len(indices) == 16
    for pid, chunks in _chunks_by_pid(indices, 4, [pid for _, pid, _ in small]).items():
        assert {small[index][1] for index in chunks[0]} == {pid}
        assert len(set(chunks[0])) == pid + 1  # every image of the identity is used


def test_camera_balanced_distributed_ranks_concatenate_to_the_single_order() -> None:
    reference = RandomIdentitySampler(DATA, 16, 4, seed=5, camera_balanced=True)
    ranks = [
        DistributedRandomIdentitySampler(DATA, 16, 4, num_replicas=2, rank=r, seed=5, camera_balanced=True)
        for r in range(2)
    ]
    for epoch in (0, 3):
        reference.set_epoch(epoch)
        for sampler in ranks:
            sampler.set_epoch(epoch)
        merged = []
        for step_0, step_1 in zip(_batches(list(ranks[0]), 8), _batches(list(ranks[1]), 8)):
            merged += step_0 + step_1
        assert merged == list(reference)


def _round_of(position: int, camera_counts: list[int]) -> int:
    """Round-robin round holding ``position``: round r has one image of every camera with more than r images."""
    start, round_index = 0, 0
    while True:
        active = sum(count > round_index for count in camera_counts)
        if position < start + active:
            return round_index
        start, round_index = start + active, round_index + 1


def test_round_of_matches_a_hand_computed_order() -> None:
    # counts (3, 1, 2): rounds of 3, 2, 1 cameras -> positions 0-2 | 3-4 | 5
    assert [_round_of(p, [3, 1, 2]) for p in range(6)] == [0, 0, 0, 1, 1, 2]


def test_camera_balanced_chunks_span_as_many_cameras_as_the_rotation_allows() -> None:
    rng = np.random.default_rng(0)
    num_instances, num_cameras = 4, 8
    data = []
    for pid in range(60):
        cameras = rng.choice(num_cameras, size=rng.integers(1, num_cameras + 1), replace=False)
        for j in range(int(rng.integers(1, 21))):
            data.append((f"{pid}_{j}.jpg", pid, int(rng.choice(cameras))))
    pid_of, cam_of = [pid for _, pid, _ in data], [camid for _, _, camid in data]
    counts = {pid: Counter(cam_of[i] for i in range(len(data)) if pid_of[i] == pid) for pid in set(pid_of)}

    def first_chunk_spans(camera_balanced: bool) -> tuple[list[int], list[int]]:
        """(cameras spanned by each identity's first chunk, the most possible: min(K, its cameras))."""
        sampler = RandomIdentitySampler(data, 16, num_instances, seed=1, camera_balanced=camera_balanced)
        spans, best = [], []
        for _ in range(3):
            for pid, chunks in _chunks_by_pid(list(sampler), num_instances, pid_of).items():
                spans.append(len({cam_of[index] for index in chunks[0]}))
                best.append(min(num_instances, len(counts[pid])))
                if camera_balanced:
                    # the first chunk spans min(K, cameras of the identity), exactly
                    assert spans[-1] == best[-1]
                    # chunk j (positions jK .. jK+K-1 of the round-robin order) spans at least
                    # min(K, cameras still in the rotation at its last position)
                    if sum(counts[pid].values()) >= num_instances:
                        for j, chunk in enumerate(chunks):
                            last_round = _round_of((j + 1) * num_instances - 1, list(counts[pid].values()))
                            in_rotation = sum(count > last_round for count in counts[pid].values())
                            distinct = len({cam_of[index] for index in chunk})
                            assert distinct >= min(num_instances, in_rotation)
        return spans, best

    (balanced, balanced_best), (plain, plain_best) = first_chunk_spans(True), first_chunk_spans(False)
    assert np.mean(balanced) == np.mean(balanced_best)  # the maximum, on average as for every chunk
    assert np.mean(plain) < np.mean(plain_best)  # a plain shuffle falls short: the test can tell them apart


def test_build_train_loader_passes_camera_balanced_to_the_sampler() -> None:
    loader = build_train_loader(
        DATA, 32, 16, batch_size=8, num_instances=4, workers=0, seed=2, camera_balanced=True
    )
    assert loader.sampler.camera_balanced
    assert list(loader.sampler) == list(RandomIdentitySampler(DATA, 8, 4, seed=2, camera_balanced=True))
    assert not build_train_loader(DATA, 32, 16, 8, 4, workers=0, seed=2).sampler.camera_balanced
    ranks = [
        build_train_loader(DATA, 32, 16, 16, 4, 0, 2, num_replicas=2, rank=r, camera_balanced=True).sampler
        for r in range(2)
    ]
    assert all(isinstance(s, DistributedRandomIdentitySampler) and s.camera_balanced for s in ranks)
