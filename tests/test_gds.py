"""Tests for reid/losses/gds.py against docs/GDS.md, replayed with an independent plain implementation."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from reid.losses import GDSLoss

# ----------------------------------------------------------------------------------------------------------------
# Reference: GDS.md written out literally (itertools pairs, per-pair norms, sums in python), float64 autograd.


class ReferenceGDS:
    """GDS / GDS-H with momentum statistics; stored statistics are python floats (i.e. detached)."""

    def __init__(self, momentum, lambda_sigma, lambda_h, kappa, normalize, hard):
        self.momentum, self.lambda_sigma, self.lambda_h = momentum, lambda_sigma, lambda_h
        self.kappa, self.normalize, self.hard = kappa, normalize, hard
        self.stored = {"pos": None, "neg": None}  # (mean, var) floats, None before the first update

    def step(self, features: torch.Tensor, labels: list[int]) -> tuple[torch.Tensor, dict]:
        rows = [row / torch.sqrt((row * row).sum()) if self.normalize else row for row in features]
        distances = {"pos": [], "neg": []}
        for i, j in itertools.combinations(range(len(labels)), 2):
            side = "pos" if labels[i] == labels[j] else "neg"
            distances[side].append(torch.sqrt(((rows[i] - rows[j]) ** 2).sum()))
        used = {}
        for side, values in distances.items():
            if values:
                mean = sum(values) / len(values)
                var = sum((value - mean) ** 2 for value in values) / len(values)
                if self.stored[side] is not None:
                    stored_mean, stored_var = self.stored[side]
                    mean = self.momentum * stored_mean + (1 - self.momentum) * mean
                    var = self.momentum * stored_var + (1 - self.momentum) * var
                self.stored[side] = (mean.item(), var.item())
                used[side] = (mean, var)
            elif self.stored[side] is not None:
                used[side] = tuple(torch.tensor(value, dtype=torch.float64) for value in self.stored[side])
        if len(used) < 2:  # a side never seen: the loss is zero this step
            return features.sum() * 0.0, distances

        def softplus(x):
            return torch.log(1 + torch.exp(x))

        (mu_pos, var_pos), (mu_neg, var_neg) = used["pos"], used["neg"]
        sigma_pos = torch.sqrt(torch.clamp(var_pos, min=1e-12))
        sigma_neg = torch.sqrt(torch.clamp(var_neg, min=1e-12))
        l_gds = softplus(mu_pos - mu_neg) + self.lambda_sigma * (var_pos + var_neg)
        l_h = softplus((mu_pos + self.kappa * sigma_pos) - (mu_neg - self.kappa * sigma_neg))
        return (l_gds + self.lambda_h * l_h if self.hard else l_gds), distances


# labels of the replayed batches (B = 8): no positive pair first (never initialised: loss 0), then ordinary P x K
# batches, a batch with no negative pair, another without positives, unordered labels.
REPLAY_LABELS = [
    [0, 1, 2, 3, 4, 5, 6, 7],
    [0, 0, 1, 1, 2, 2, 3, 3],
    [4, 4, 4, 4, 4, 4, 4, 4],
    [0, 1, 2, 3, 4, 5, 6, 7],
    [0, 0, 0, 1, 1, 1, 2, 2],
    [5, 5, 3, 3, 5, 3, 9, 9],
]
REPLAY_SETTINGS = [
    dict(momentum=0.9, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0, normalize=True, hard=True),
    dict(momentum=0.5, lambda_sigma=0.5, lambda_h=0.7, kappa=2.0, normalize=False, hard=True),
    dict(momentum=0.8, lambda_sigma=2.0, lambda_h=1.0, kappa=1.0, normalize=True, hard=False),
]


def _batches(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=generator) for _ in REPLAY_LABELS]


def _as_float(value):
    return float("nan") if value is None else value


@pytest.mark.parametrize("settings", REPLAY_SETTINGS, ids=["gds-h", "raw-features", "plain-gds"])
def test_replay_matches_reference_loss_gradient_and_buffers(settings):
    module = GDSLoss(**settings)
    reference = ReferenceGDS(**settings)
    for step, (features, labels) in enumerate(zip(_batches(), REPLAY_LABELS)):
        features = features.clone().requires_grad_(True)
        loss = module(features, torch.tensor(labels))
        (grad,) = torch.autograd.grad(loss, features)

        reference_features = features.detach().double().requires_grad_(True)
        reference_loss, reference_distances = reference.step(reference_features, labels)
        (reference_grad,) = torch.autograd.grad(reference_loss, reference_features, allow_unused=False)

        message = f"step {step}, labels {labels}"
        assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-5), message
        torch.testing.assert_close(grad.double(), reference_grad, atol=1e-5, rtol=0, msg=message)
        for side in ("pos", "neg"):
            expected_mean, expected_var = reference.stored[side] or (None, None)
            assert getattr(module, f"mu_{side}").item() == pytest.approx(
                _as_float(expected_mean), abs=1e-6, nan_ok=True
            )
            assert getattr(module, f"var_{side}").item() == pytest.approx(
                _as_float(expected_var), abs=1e-6, nan_ok=True
            )
        assert module.initialized.tolist() == [
            reference.stored["pos"] is not None,
            reference.stored["neg"] is not None,
        ]
        # logging side channels
        assert module.last_terms["total"] == pytest.approx(loss.item(), abs=1e-6)
        assert module.last_terms["num_pos_pairs"] == len(reference_distances["pos"])
        assert module.last_terms["num_neg_pairs"] == len(reference_distances["neg"])
        expected_pos = torch.tensor(
            [value.item() for value in reference_distances["pos"]], dtype=torch.float32
        )
        torch.testing.assert_close(module.last_pos_dist, expected_pos, atol=1e-5, rtol=0)
        assert module.last_neg_dist.numel() == len(reference_distances["neg"])


def test_first_batch_without_positive_pairs_gives_zero_loss_but_records_negatives():
    module = GDSLoss()
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), requires_grad=True)
    loss = module(features, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert module.initialized.tolist() == [False, True]
    assert math.isnan(module.mu_pos.item()) and not math.isnan(module.mu_neg.item())
    assert math.isnan(module.last_terms["batch_mu_pos"]) and module.last_terms["num_pos_pairs"] == 0


# ----------------------------------------------------------------------------------------------------------------
# Hand-computed case, normalize=False, lambda_sigma = lambda_h = kappa = 1, momentum 0.9.
#
# Step 1: A = (0, 0), B = (6, 0) label 0; C = (3, 4), D = (3, -4) label 1.
#   positive pairs: AB = 6, CD = 8            -> mu+ = 7, var+ = ((6-7)^2 + (8-7)^2) / 2 = 1, sigma+ = 1
#   negative pairs: AC = AD = BC = BD = 5     -> mu- = 5, var- = 0, sigma- = sqrt(1e-12) = 1e-6
#   L_GDS = softplus(7 - 5) + (1 + 0) = ln(1 + e^2) + 1                               = 3.126928...
#   L_H   = softplus((7 + 1) - (5 - 1e-6)) = ln(1 + e^(3 + 1e-6))                      = 3.048588...
# Step 2: the same points halved: positives 3, 4 (mu 3.5, var 0.25), negatives 2.5 x 4 (mu 2.5, var 0).
#   mu+ = 0.9 * 7 + 0.1 * 3.5 = 6.65,  var+ = 0.9 * 1 + 0.1 * 0.25 = 0.925,  mu- = 0.9 * 5 + 0.1 * 2.5 = 4.75, var- = 0
#   L_GDS = ln(1 + e^1.9) + 0.925,  L_H = ln(1 + e^(6.65 + sqrt(0.925) - 4.75 + 1e-6))
HAND_POINTS = torch.tensor([[0.0, 0.0], [6.0, 0.0], [3.0, 4.0], [3.0, -4.0]])
HAND_LABELS = torch.tensor([0, 0, 1, 1])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hand_computed_two_steps():
    module = GDSLoss(momentum=0.9, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0, normalize=False, hard=True)

    loss = module(HAND_POINTS, HAND_LABELS)
    expected_gds, expected_h = _softplus(2.0) + 1.0, _softplus(3.0 + 1e-6)
    assert module.last_terms["l_gds"] == pytest.approx(expected_gds, abs=1e-5)
    assert module.last_terms["l_h"] == pytest.approx(expected_h, abs=1e-5)
    assert loss.item() == pytest.approx(expected_gds + expected_h, abs=1e-5)
    assert [
        module.mu_pos.item(),
        module.var_pos.item(),
        module.mu_neg.item(),
        module.var_neg.item(),
    ] == pytest.approx([7.0, 1.0, 5.0, 0.0], abs=1e-5)

    loss = module(HAND_POINTS / 2, HAND_LABELS)
    assert module.last_terms["batch_mu_pos"] == pytest.approx(3.5, abs=1e-6)
    assert module.last_terms["batch_var_pos"] == pytest.approx(0.25, abs=1e-6)
    assert [
        module.mu_pos.item(),
        module.var_pos.item(),
        module.mu_neg.item(),
        module.var_neg.item(),
    ] == pytest.approx([6.65, 0.925, 4.75, 0.0], abs=1e-5)
    expected_gds = _softplus(1.9) + 0.925
    expected_h = _softplus(6.65 + math.sqrt(0.925) - 4.75 + 1e-6)
    assert loss.item() == pytest.approx(expected_gds + expected_h, abs=1e-5)


def test_plain_gds_is_gds_h_without_the_hard_term():
    hard = GDSLoss(momentum=0.9, lambda_h=0.7, hard=True)
    plain = GDSLoss(momentum=0.9, lambda_h=0.7, hard=False)
    for features, labels in zip(_batches(seed=2)[1:3], [[0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 0, 1, 1, 1, 2, 2]]):
        loss_hard = hard(features, torch.tensor(labels))
        loss_plain = plain(features, torch.tensor(labels))
        assert loss_plain.item() == pytest.approx(plain.last_terms["l_gds"], abs=1e-6)
        assert loss_hard.item() - loss_plain.item() == pytest.approx(0.7 * hard.last_terms["l_h"], abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# State, modes, gradients


def test_state_dict_round_trip_restores_buffers_and_continues_identically():
    batches = _batches(seed=3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    original = GDSLoss(momentum=0.9)
    original(batches[0], torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]))  # negatives only
    original(batches[1], labels)
    assert set(original.state_dict()) == {"mu_pos", "var_pos", "mu_neg", "var_neg", "initialized"}

    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = GDSLoss(momentum=0.9)
    restored.load_state_dict(torch.load(buffer))
    for name, value in original.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert restored(batches[2], labels).item() == original(batches[2], labels).item()
    assert (
        restored.mu_pos.item() == original.mu_pos.item()
        and restored.var_neg.item() == original.var_neg.item()
    )


def test_eval_mode_computes_the_same_loss_without_writing_buffers():
    batches = _batches(seed=4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    module = GDSLoss(momentum=0.9)
    module(batches[0], labels)
    before = {name: value.clone() for name, value in module.state_dict().items()}
    module.eval()
    eval_loss = module(batches[1], labels)
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name
    module.train()
    assert module(batches[1], labels).item() == pytest.approx(eval_loss.item(), abs=1e-7)
    assert module.mu_pos.item() != before["mu_pos"].item()


def test_gradient_matches_finite_differences():
    # float64 module; eval mode so that the repeated forward passes of gradcheck do not move the buffers
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    module = GDSLoss(momentum=0.6, lambda_sigma=0.5, lambda_h=1.5, kappa=1.0).double()
    generator = torch.Generator().manual_seed(6)
    module(torch.randn(6, 4, generator=generator, dtype=torch.float64), labels)
    module.eval()
    features = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: module(x, labels), (features,), eps=1e-6, atol=1e-6)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        GDSLoss(momentum=1.5)
    with pytest.raises(ValueError, match="kappa"):
        GDSLoss(kappa=-1.0)
    with pytest.raises(ValueError, match=r"features \(B, D\) and labels \(B,\)"):
        GDSLoss()(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
