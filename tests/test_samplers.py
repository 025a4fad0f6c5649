"""Tests for reid/data/samplers.py: P x K batches, torchreid length, reproducibility, identity sharding."""

from __future__ import annotations

from collections import Counter

import pytest

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
