"""GDSLoss under torch.distributed (gloo, 2 CPU processes): global statistics pooled over ranks.

Pairs are formed within each rank's local batch only, so the expected values are those of one process whose pair
set is the union of the two local pair sets, computed here by a plain float64 reference. With
``mining="overlap"`` the hard pairs of both ranks are pooled the same way.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from workers import free_port, run_workers

from reid.losses import GDSLoss

WORLD_SIZE = 2
LOCAL_BATCH = 8
SETTINGS = dict(momentum=0.7, lambda_sigma=0.5, lambda_h=1.0, kappa=1.0, normalize=True, hard=True)
# per step: global labels, rank 0 holds the first 8 and rank 1 the last 8. Label 0 appears on both ranks in
# step 0 (no cross-rank pair is formed); in step 1 rank 1 has no positive pair of its own.
GLOBAL_LABELS = [
    [0, 0, 1, 1, 2, 2, 3, 3] + [4, 4, 5, 5, 0, 0, 6, 7],
    [0, 0, 1, 1, 2, 2, 3, 3] + [0, 1, 2, 3, 4, 5, 6, 7],
    [1, 1, 1, 1, 2, 2, 2, 2] + [3, 3, 3, 4, 4, 4, 5, 5],
]


def _global_features() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randn(WORLD_SIZE * LOCAL_BATCH, 5, generator=generator) for _ in GLOBAL_LABELS]


def _worker(rank: int, port: int, out_dir: str, mining: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        module = GDSLoss(**SETTINGS, mining=mining)
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        records = []
        for features, labels in zip(_global_features(), GLOBAL_LABELS):
            local_features = features[local].clone().requires_grad_(True)
            loss, terms = module(local_features, torch.tensor(labels[local]))
            (grad,) = torch.autograd.grad(loss, local_features)
            records.append(
                {
                    "loss": loss.item(),
                    "grad": grad,
                    "buffers": {name: value.clone() for name, value in module.state_dict().items()},
                    "terms": terms,
                }
            )
        torch.save(records, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _mean_sigma(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = sum(values) / len(values)
    return mean, torch.sqrt(torch.clamp(sum((value - mean) ** 2 for value in values) / len(values), min=1e-12))


def _reference_steps(mining: str) -> list[dict]:
    """GDS.md over the union of the per-rank pair sets, float64; gradient w.r.t. the global batch."""
    stored = {"pos": None, "neg": None}
    beta = SETTINGS["momentum"]
    steps = []
    for features, labels in zip(_global_features(), GLOBAL_LABELS):
        features = features.double().requires_grad_(True)
        rows = [row / torch.sqrt((row * row).sum()) for row in features]
        distances = {"pos": [], "neg": []}
        for rank in range(WORLD_SIZE):
            indices = range(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            for i, j in itertools.combinations(indices, 2):
                side = "pos" if labels[i] == labels[j] else "neg"
                distances[side].append(torch.sqrt(((rows[i] - rows[j]) ** 2).sum()))
        used = {}
        for side, values in distances.items():
            mean = sum(values) / len(values)
            var = sum((value - mean) ** 2 for value in values) / len(values)
            if stored[side] is not None:
                mean = beta * stored[side][0] + (1 - beta) * mean
                var = beta * stored[side][1] + (1 - beta) * var
            stored[side] = (mean.item(), var.item())
            used[side] = (mean, var)
        (mu_pos, var_pos), (mu_neg, var_neg) = used["pos"], used["neg"]
        l_gds = torch.log1p(torch.exp(mu_pos - mu_neg)) + SETTINGS["lambda_sigma"] * (var_pos + var_neg)
        sigma_pos, sigma_neg = var_pos.sqrt(), var_neg.sqrt()
        hard_counts = None
        if mining == "overlap":  # kappa = 1; thresholds from this step's global statistics; empty side: global
            hard_pos = [value for value in distances["pos"] if value.item() > (mu_neg - sigma_neg).item()]
            hard_neg = [value for value in distances["neg"] if value.item() < (mu_pos + sigma_pos).item()]
            hard_counts = (len(hard_pos), len(hard_neg))
            if hard_pos:
                mu_pos, sigma_pos = _mean_sigma(hard_pos)
            if hard_neg:
                mu_neg, sigma_neg = _mean_sigma(hard_neg)
        l_h = torch.log1p(torch.exp((mu_pos + sigma_pos) - (mu_neg - sigma_neg)))
        loss = l_gds + SETTINGS["lambda_h"] * l_h
        (grad,) = torch.autograd.grad(loss, features)
        steps.append(
            {
                "loss": loss.item(),
                "grad": grad,
                "stats": [*stored["pos"], *stored["neg"]],
                "counts": (len(distances["pos"]), len(distances["neg"])),
                "hard_counts": hard_counts,
            }
        )
    return steps


@pytest.mark.parametrize("mining", ["none", "overlap"])
def test_two_ranks_share_global_statistics_equal_to_the_pooled_pair_sets(tmp_path, mining):
    run_workers(_worker, WORLD_SIZE, (free_port(), str(tmp_path), mining), timeout=60)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    for step, expected in enumerate(_reference_steps(mining)):
        rank0, rank1 = ranks[0][step], ranks[1][step]
        # every rank holds the same global statistics and the same loss
        assert rank0["loss"] == rank1["loss"], f"step {step}"
        for name, value in rank0["buffers"].items():
            assert torch.equal(value, rank1["buffers"][name]), (
                f"step {step}: buffer {name} differs between ranks"
            )
        # ... and they are those of the pooled pair sets
        buffers = rank0["buffers"]
        stats = [
            buffers["mu_pos"].item(),
            buffers["var_pos"].item(),
            buffers["mu_neg"].item(),
            buffers["var_neg"].item(),
        ]
        assert stats == pytest.approx(expected["stats"], abs=1e-6), f"step {step}"
        assert rank0["loss"] == pytest.approx(expected["loss"], abs=1e-5), f"step {step}"
        assert (rank0["terms"]["num_pos_pairs"], rank0["terms"]["num_neg_pairs"]) == expected["counts"]
        if mining == "overlap":  # pooled hard-pair counts, the same on both ranks
            for record in (rank0, rank1):
                counts = (record["terms"]["num_hard_pos_pairs"], record["terms"]["num_hard_neg_pairs"])
                assert counts == expected["hard_counts"], f"step {step}"
        # gradient convention: rank r gets world_size * dL/df_r, so DDP's average over ranks is dL/dtheta
        for rank, record in enumerate((rank0, rank1)):
            local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            torch.testing.assert_close(
                record["grad"].double(),
                WORLD_SIZE * expected["grad"][local],
                atol=1e-5,
                rtol=0,
                msg=f"step {step}",
            )


def _weight_worker(rank: int, port: int, out_dir: str) -> None:
    from reid.engine.adapt import gds_weight

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        features = torch.ones(2, 3, requires_grad=True)
        # gradients: main 3 x (rank + 1) per entry, GDS-H 1 x (2 - rank) per entry: different norms per rank
        main = (features * 3.0 * (rank + 1)).sum()
        loss_gds = (features * (2.0 - rank)).sum()
        fixed = gds_weight(main, loss_gds, features, 1.0, "fixed", 0.1)
        ruled = gds_weight(main, loss_gds, features, 1.0, "fraction", 0.1)
        torch.save({"fixed": fixed, "fraction": ruled}, Path(out_dir) / f"weight{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gradient_fraction_weight_is_the_same_on_every_rank(tmp_path):
    run_workers(_weight_worker, WORLD_SIZE, (free_port(), str(tmp_path)), timeout=60)
    ranks = [torch.load(tmp_path / f"weight{r}.pt") for r in range(WORLD_SIZE)]
    # per-rank norms (6 entries): main 3 sqrt(6) x (1, 2), GDS-H sqrt(6) x (2, 1); root mean squares over ranks:
    # main 3 sqrt(6) sqrt(2.5), GDS-H sqrt(6) sqrt(2.5): the weight is 0.1 x 3 = 0.3 on both ranks
    for r in range(WORLD_SIZE):
        assert ranks[r]["fraction"][0] == pytest.approx(0.3)
        assert ranks[r]["fraction"][1] == pytest.approx(0.1)
    # the fixed rule keeps weight 1 and reports each rank's own fraction: 2 / 3 and 1 / 6
    assert ranks[0]["fixed"] == pytest.approx((1.0, 2 / 3)) and ranks[1]["fixed"] == pytest.approx((1.0, 1 / 6))
