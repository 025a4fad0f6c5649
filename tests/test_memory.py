"""ClusterMemory (reid/losses/memory.py): the InfoNCE over all centroids, its gradient, the sequential momentum
update, the per-cluster means, the input checks, and the update under torch.distributed (gloo, 2 CPU processes).

Expected values are written out by hand (small D = 2 examples) or computed by an independent float64 reference.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from workers import free_port, run_workers

from reid.losses import ClusterMemory


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


# ------------------------------------------------------------------------------------------ the loss
def test_loss_of_one_image_by_hand() -> None:
    # M = rows (1, 0), (0, 1), (-1, 0); f = (3, 4) -> e = (0.6, 0.8); T = 0.5
    # logits = e @ M.T / T = (0.6, 0.8, -0.6) / 0.5 = (1.2, 1.6, -1.2); target 0
    # loss = -1.2 + log(e^1.2 + e^1.6 + e^-1.2)
    memory = ClusterMemory(temperature=0.5, momentum=0.5)
    memory.reset(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    loss, stats = memory(torch.tensor([[3.0, 4.0]]), torch.tensor([0]))
    expected = -1.2 + math.log(math.exp(1.2) + math.exp(1.6) + math.exp(-1.2))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats == {"accuracy": 0.0}  # argmax is cluster 1 (logit 1.6)


def test_loss_of_a_batch_by_hand_is_the_mean_over_images() -> None:
    # reset normalises: (2, 0) -> (1, 0), (0, 5) -> (0, 1); T = 1
    # image a: f = (1, 0), label 0: logits (1, 0)  -> -1 + log(e^1 + e^0)
    # image b: f = (0, -2) -> e = (0, -1), label 1: logits (0, -1) -> 1 + log(e^0 + e^-1)
    memory = ClusterMemory(temperature=1.0, momentum=0.1)
    memory.reset(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))
    loss, stats = memory(torch.tensor([[1.0, 0.0], [0.0, -2.0]]), torch.tensor([0, 1]))
    first = -1 + math.log(math.e + 1)
    second = 1 + math.log(1 + math.exp(-1))
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert stats["accuracy"] == 0.5


def test_loss_equals_cross_entropy_on_independently_computed_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    centroids = torch.randn(7, 3, generator=generator)
    features = torch.randn(10, 3, generator=generator) * 4
    labels = torch.randint(0, 7, (10,), generator=generator)
    memory = ClusterMemory(temperature=0.05, momentum=0.2)
    memory.reset(centroids)
    loss, _ = memory(features, labels)

    rows = features / features.norm(dim=1, keepdim=True)
    centres = centroids / centroids.norm(dim=1, keepdim=True)
    logits = torch.stack([torch.stack([(row * centre).sum() for centre in centres]) for row in rows]) / 0.05
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-6)


def _reference_loss(features: torch.Tensor, centroids: torch.Tensor, labels: list[int], temperature: float):
    """The formula, written out in float64 with no library normalisation or cross-entropy."""
    total = 0.0
    centres = [c / torch.sqrt((c * c).sum()) for c in centroids]
    for f, y in zip(features, labels):
        e = f / torch.sqrt((f * f).sum())
        logits = torch.stack([(e * c).sum() / temperature for c in centres])
        total = total - logits[y] + torch.log(torch.exp(logits).sum())
    return total / len(labels)


def test_gradient_wrt_features_matches_float64_autograd_and_the_hand_derived_formula() -> None:
    generator = torch.Generator().manual_seed(1)
    centroids = torch.randn(5, 3, generator=generator)
    features = torch.randn(6, 3, generator=generator) * 2
    labels = [0, 3, 3, 1, 4, 2]
    temperature = 0.1
    memory = ClusterMemory(temperature=temperature, momentum=0.3)
    memory.reset(centroids)
    x = features.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(memory(x, torch.tensor(labels))[0], x)

    reference_x = features.double().requires_grad_(True)
    (reference,) = torch.autograd.grad(_reference_loss(reference_x, centroids.double(), labels, temperature),
                                       reference_x)
    torch.testing.assert_close(grad.double(), reference, atol=1e-6, rtol=1e-5)

    # by hand: dL/de_i = (softmax_i - onehot_i) @ M / (T N); through e = f / |f|: (I - e e^T) / |f| dL/de_i
    f = features.double()
    m = F.normalize(centroids.double(), dim=1)
    e = f / f.norm(dim=1, keepdim=True)
    p = torch.softmax(e @ m.T / temperature, dim=1)
    d_e = (p - F.one_hot(torch.tensor(labels), 5).double()) @ m / (temperature * len(labels))
    hand = torch.stack([(torch.eye(3, dtype=torch.float64) - torch.outer(ei, ei)) @ gi / fi.norm()
                        for ei, gi, fi in zip(e, d_e, f)])
    torch.testing.assert_close(grad.double(), hand, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------ the update
def test_two_images_of_one_cluster_update_its_centroid_sequentially_in_batch_order() -> None:
    # M0 = (1, 0), m = 0.5; images of cluster 0: a = (3, 4) -> (0.6, 0.8), then b = (0, 2) -> (0, 1)
    # after a: 0.5 (1, 0) + 0.5 (0.6, 0.8) = (0.8, 0.4) -> (2, 1) / sqrt(5)
    # after b: 0.5 (2, 1) / sqrt(5) + 0.5 (0, 1) = (1 / sqrt(5), 1 / (2 sqrt(5)) + 1 / 2) -> normalised
    # reversed (b then a): (0.5, 0.5) -> (1, 1) / sqrt(2); then 0.5 (1, 1) / sqrt(2) + 0.5 (0.6, 0.8) -> normalised
    initial = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]])
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, -7.0]])  # the third image: cluster 2
    memory = ClusterMemory(temperature=0.5, momentum=0.5)
    memory.reset(initial)
    memory(features, torch.tensor([0, 0, 2]))

    s5 = math.sqrt(5)
    in_order = unit(1 / s5, 1 / (2 * s5) + 0.5)
    s2 = math.sqrt(2)
    reversed_order = unit(0.5 / s2 + 0.3, 0.5 / s2 + 0.4)
    # cluster 2: 0.5 (-0.6, 0.8) + 0.5 (0, -1) = (-0.3, -0.1) -> normalised
    third = unit(-0.3, -0.1)
    torch.testing.assert_close(memory.centroids, torch.tensor([in_order, [0.0, 1.0], third]), atol=1e-6, rtol=0)
    assert abs(in_order[0] - reversed_order[0]) > 0.05  # the order matters, and the test can see it

    other = ClusterMemory(temperature=0.5, momentum=0.5)
    other.reset(initial)
    other(features[[1, 0, 2]], torch.tensor([0, 0, 2]))
    torch.testing.assert_close(other.centroids[0], torch.tensor(reversed_order), atol=1e-6, rtol=0)
    assert not torch.allclose(other.centroids[0], memory.centroids[0], atol=1e-3)


def test_other_centroids_are_unchanged_rows_stay_unit_norm_and_no_gradient_reaches_the_memory() -> None:
    generator = torch.Generator().manual_seed(2)
    memory = ClusterMemory(temperature=0.05, momentum=0.1)
    memory.reset(torch.randn(6, 4, generator=generator))
    before = memory.centroids.clone()
    features = torch.randn(8, 4, generator=generator, requires_grad=True)
    labels = torch.tensor([1, 1, 4, 1, 4, 4, 1, 4])
    loss, _ = memory(features, labels)
    loss.backward()

    untouched = [0, 2, 3, 5]
    assert torch.equal(memory.centroids[untouched], before[untouched])
    assert not torch.allclose(memory.centroids[[1, 4]], before[[1, 4]])
    torch.testing.assert_close(memory.centroids.norm(dim=1), torch.ones(6), atol=1e-6, rtol=0)
    assert not memory.centroids.requires_grad and memory.centroids.grad_fn is None
    assert memory.centroids.grad is None and list(memory.parameters()) == []
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert "centroids" in dict(memory.named_buffers())  # still a buffer after the update (moves with .to())


def test_momentum_zero_replaces_the_centroid_by_the_newest_image() -> None:
    memory = ClusterMemory(temperature=1.0, momentum=0.0)
    memory.reset(torch.eye(2))
    memory(torch.tensor([[3.0, 4.0], [0.0, -2.0]]), torch.tensor([1, 1]))
    torch.testing.assert_close(memory.centroids, torch.tensor([[1.0, 0.0], [0.0, -1.0]]), atol=1e-7, rtol=0)


def test_forward_backward_twice_and_two_losses_backward_together_raise_no_in_place_error() -> None:
    torch.manual_seed(3)
    net = torch.nn.Linear(5, 4)
    memory = ClusterMemory(temperature=0.05, momentum=0.1)
    memory.reset(torch.randn(3, 4))
    inputs, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(2):  # forward, backward, forward, backward
        net.zero_grad()
        memory(net(inputs), labels)[0].backward()
        assert torch.isfinite(net.weight.grad).all()
    # the first loss's graph holds the centroids it used; the update after it must not write into them
    first, _ = memory(net(inputs), labels)
    second, _ = memory(net(inputs), labels)
    (first + second).backward()
    assert first.item() != second.item()


# ------------------------------------------------------------------------------------------ centroids_from
def test_centroids_from_are_per_cluster_means_ignoring_outliers() -> None:
    features = torch.tensor([[1.0, 2.0], [100.0, 100.0], [3.0, 0.0], [3.0, 6.0], [-1.0, 1.0], [5.0, 2.0]])
    labels = torch.tensor([0, -1, 1, 0, 1, 1])
    # cluster 0: ((1, 2) + (3, 6)) / 2 = (2, 4); cluster 1: ((3, 0) + (-1, 1) + (5, 2)) / 3 = (7/3, 1)
    centroids = ClusterMemory.centroids_from(features, labels)
    torch.testing.assert_close(centroids, torch.tensor([[2.0, 4.0], [7 / 3, 1.0]]), atol=1e-6, rtol=0)
    # not normalised here; reset normalises
    memory = ClusterMemory()
    memory.reset(centroids)
    torch.testing.assert_close(memory.centroids[0], torch.tensor(unit(2.0, 4.0)), atol=1e-6, rtol=0)
    # only outliers: no cluster
    assert ClusterMemory.centroids_from(features, torch.full((6,), -1)).shape == (0, 2)


# ------------------------------------------------------------------------------------------ errors
def test_forward_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        ClusterMemory()(torch.randn(2, 3), torch.tensor([0, 0]))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [5, 1]])
def test_labels_outside_the_clusters_raise(labels: list[int]) -> None:
    memory = ClusterMemory()
    memory.reset(torch.randn(3, 2))
    before = memory.centroids.clone()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        memory(torch.randn(2, 2), torch.tensor(labels))
    assert torch.equal(memory.centroids, before)  # nothing updated


@pytest.mark.parametrize("temperature, momentum", [(0.0, 0.1), (-0.05, 0.1), (0.05, -0.1), (0.05, 1.0),
                                                   (0.05, 1.5)])
def test_bad_temperature_or_momentum_raise(temperature: float, momentum: float) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0 and momentum in"):
        ClusterMemory(temperature=temperature, momentum=momentum)


# ------------------------------------------------------------------------------------------ DDP
WORLD_SIZE = 2
LOCAL_BATCH = 4
SETTINGS = dict(temperature=0.1, momentum=0.3)
NUM_CLUSTERS, DIM = 5, 3
# per step: global labels, rank 0 holds the first 4 and rank 1 the last 4. Clusters 0 and 1 appear on both
# ranks, so the centroid depends on the order in which the two halves are applied.
GLOBAL_LABELS = [
    [0, 1, 0, 2] + [1, 0, 3, 1],
    [4, 4, 0, 1] + [0, 2, 2, 4],
]


def _ddp_data() -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(21)
    initial = torch.randn(NUM_CLUSTERS, DIM, generator=generator)
    return initial, [torch.randn(WORLD_SIZE * LOCAL_BATCH, DIM, generator=generator) for _ in GLOBAL_LABELS]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        initial, batches = _ddp_data()
        memory = ClusterMemory(**SETTINGS)
        memory.reset(initial)
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        records = []
        for features, labels in zip(batches, GLOBAL_LABELS):
            x = features[local].clone().requires_grad_(True)
            loss, _ = memory(x, torch.tensor(labels[local]))
            loss.backward()
            records.append({"loss": loss.item(), "centroids": memory.centroids.clone()})
        torch.save(records, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_the_memory_of_one_process_updating_with_the_global_batch_in_rank_order(tmp_path):
    run_workers(_ddp_worker, WORLD_SIZE, (free_port(), str(tmp_path)), timeout=60)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    # single process: the loss of each half under the memory as it stands, then one update with the whole batch
    initial, batches = _ddp_data()
    reference = ClusterMemory(**SETTINGS)
    reference.reset(initial)
    for step, (features, labels) in enumerate(zip(batches, GLOBAL_LABELS)):
        for rank in range(WORLD_SIZE):
            local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            half = ClusterMemory(**SETTINGS)
            half.centroids = reference.centroids.clone()
            expected_loss = half(features[local], torch.tensor(labels[local]))[0].item()
            assert ranks[rank][step]["loss"] == pytest.approx(expected_loss, abs=1e-6), f"step {step} rank {rank}"
        reversed_order = ClusterMemory(**SETTINGS)
        reversed_order.centroids = reference.centroids.clone()
        reversed_order(torch.cat([features[LOCAL_BATCH:], features[:LOCAL_BATCH]]),
                       torch.tensor(labels[LOCAL_BATCH:] + labels[:LOCAL_BATCH]))
        reference(features, torch.tensor(labels))

        rank0, rank1 = ranks[0][step]["centroids"], ranks[1][step]["centroids"]
        assert torch.equal(rank0, rank1), f"step {step}: the ranks' memories differ"
        torch.testing.assert_close(rank0, reference.centroids, atol=1e-6, rtol=0, msg=f"step {step}")
        # the rank order is what is checked: the other order gives another memory
        assert not torch.allclose(reversed_order.centroids, reference.centroids, atol=1e-4), f"step {step}"


# ------------------------------------------------------------------------ camera-aware proxies (CAP)
def test_camera_memory_proxies_are_per_cluster_and_camera_means_ordered_by_cluster_then_camera():
    from reid.losses import CameraMemory

    features = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([1, 0, 0, 1, -1])
    camids = torch.tensor([4, 2, 2, 3, 3])
    memory = CameraMemory()
    memory.initialise(features, labels, camids)
    # groups: (0, 2) <- rows 1, 2: mean (0, 2) -> (0, 1); (1, 3) <- row 3: (1, 1)/sqrt2; (1, 4) <- row 0: (1, 0)
    assert memory.proxy_labels.tolist() == [0, 1, 1] and memory.proxy_cameras.tolist() == [2, 3, 4]
    r = 2 ** -0.5
    torch.testing.assert_close(memory.proxies, torch.tensor([[0.0, 1.0], [r, r], [1.0, 0.0]]))


def test_camera_memory_loss_by_hand_and_only_the_own_proxy_moves():
    import math

    from reid.losses import CameraMemory

    # proxies (T = 1): p0 = (1, 0) [cluster 0, cam 1], p1 = (0, 1) [cluster 0, cam 2], p2 = (-1, 0) [cluster 1,
    # cam 1], p3 = (0, -1) [cluster 1, cam 2]. Image e = (1, 0), cluster 0, camera 1: logits (1, 0, -1, 0).
    memory = CameraMemory(temperature=1.0, momentum=0.5, inter_weight=0.5, num_hard_negatives=1)
    memory.initialise(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]),
                      torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 1, 2]))
    loss, stats = memory(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))
    # intra: over camera 1's proxies p0, p2: -log(e^1 / (e^1 + e^-1))
    intra = -1 + math.log(math.e + math.exp(-1))
    # inter: positives p0, p1; the 1 hardest negative is p3 (logit 0 > -1): softmax over {p0, p1, p3}
    log_z = math.log(math.e + 1 + 1)
    inter = -((1 - log_z) + (0 - log_z)) / 2
    assert stats["intra"] == pytest.approx(intra, abs=1e-6)
    assert stats["inter"] == pytest.approx(inter, abs=1e-6)
    assert loss.item() == pytest.approx(intra + 0.5 * inter, abs=1e-6)
    # the image's own proxy (0, cam 1) moved: normalise(0.5 p0 + 0.5 e) = (1, 0); now an off-axis image
    memory(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), torch.tensor([1]))
    r = 2 ** -0.5
    torch.testing.assert_close(memory.proxies, torch.tensor([[r, r], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_camera_memory_rejects_a_pair_without_a_proxy_and_round_trips_its_checkpoint_form():
    from reid.losses import CameraMemory

    memory = CameraMemory()
    with pytest.raises(RuntimeError, match="initialise"):
        memory(torch.ones(1, 2), torch.tensor([0]), torch.tensor([1]))
    memory.initialise(torch.eye(2), torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no proxy"):
        memory(torch.ones(1, 2), torch.tensor([0]), torch.tensor([2]))  # cluster 0 was never seen by camera 2
    other = CameraMemory()
    other.restore(memory.export())
    for name in ("proxies", "proxy_labels", "proxy_cameras"):
        assert torch.equal(getattr(other, name), getattr(memory, name))
