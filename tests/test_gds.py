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

    def __init__(self, momentum, lambda_sigma, lambda_h, kappa, normalize, hard, mining="none"):
        self.momentum, self.lambda_sigma, self.lambda_h = momentum, lambda_sigma, lambda_h
        self.kappa, self.normalize, self.hard, self.mining = kappa, normalize, hard, mining
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
        if self.mining == "overlap":  # hard pairs inside the overlap of the global Gaussians; empty side: global
            pos_edge, neg_edge = (mu_neg - self.kappa * sigma_neg).item(), (mu_pos + self.kappa * sigma_pos).item()
            hard_pos = [value for value in distances["pos"] if value.item() > pos_edge]
            hard_neg = [value for value in distances["neg"] if value.item() < neg_edge]
            if hard_pos:
                mu_pos = sum(hard_pos) / len(hard_pos)
                sigma_pos = torch.sqrt(torch.clamp(sum((v - mu_pos) ** 2 for v in hard_pos) / len(hard_pos), min=1e-12))
            if hard_neg:
                mu_neg = sum(hard_neg) / len(hard_neg)
                sigma_neg = torch.sqrt(torch.clamp(sum((v - mu_neg) ** 2 for v in hard_neg) / len(hard_neg), min=1e-12))
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
    dict(momentum=0.9, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0, normalize=True, hard=True, mining="none"),
    dict(momentum=0.9, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0, normalize=True, hard=True, mining="overlap"),
    dict(momentum=0.5, lambda_sigma=0.5, lambda_h=0.7, kappa=0.5, normalize=False, hard=True, mining="overlap"),
]


def _batches(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=generator) for _ in REPLAY_LABELS]


def _as_float(value):
    return float("nan") if value is None else value


@pytest.mark.parametrize(
    "settings", REPLAY_SETTINGS, ids=["gds-h", "raw-features", "plain-gds", "mining-none", "overlap", "overlap-raw"]
)
def test_replay_matches_reference_loss_gradient_and_buffers(settings):
    module = GDSLoss(**settings)
    reference = ReferenceGDS(**settings)
    for step, (features, labels) in enumerate(zip(_batches(), REPLAY_LABELS)):
        features = features.clone().requires_grad_(True)
        loss, terms = module(features, torch.tensor(labels))
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
        # the stats for logging, and the distances kept for the histograms
        assert terms["total"] == pytest.approx(loss.item(), abs=1e-6)
        assert terms["num_pos_pairs"] == len(reference_distances["pos"])
        assert terms["num_neg_pairs"] == len(reference_distances["neg"])
        expected_pos = torch.tensor(
            [value.item() for value in reference_distances["pos"]], dtype=torch.float32
        )
        torch.testing.assert_close(module.last_pos_dist, expected_pos, atol=1e-5, rtol=0)
        assert module.last_neg_dist.numel() == len(reference_distances["neg"])


def test_first_batch_without_positive_pairs_gives_zero_loss_but_records_negatives():
    module = GDSLoss()
    features = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), requires_grad=True)
    loss, terms = module(features, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert module.initialized.tolist() == [False, True]
    assert math.isnan(module.mu_pos.item()) and not math.isnan(module.mu_neg.item())
    assert math.isnan(terms["batch_mu_pos"]) and terms["num_pos_pairs"] == 0


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

    loss, terms = module(HAND_POINTS, HAND_LABELS)
    expected_gds, expected_h = _softplus(2.0) + 1.0, _softplus(3.0 + 1e-6)
    assert terms["l_gds"] == pytest.approx(expected_gds, abs=1e-5)
    assert terms["l_h"] == pytest.approx(expected_h, abs=1e-5)
    assert loss.item() == pytest.approx(expected_gds + expected_h, abs=1e-5)
    assert [
        module.mu_pos.item(),
        module.var_pos.item(),
        module.mu_neg.item(),
        module.var_neg.item(),
    ] == pytest.approx([7.0, 1.0, 5.0, 0.0], abs=1e-5)

    loss, terms = module(HAND_POINTS / 2, HAND_LABELS)
    assert terms["batch_mu_pos"] == pytest.approx(3.5, abs=1e-6)
    assert terms["batch_var_pos"] == pytest.approx(0.25, abs=1e-6)
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
        loss_hard, hard_terms = hard(features, torch.tensor(labels))
        loss_plain, plain_terms = plain(features, torch.tensor(labels))
        assert loss_plain.item() == pytest.approx(plain_terms["l_gds"], abs=1e-6)
        assert loss_hard.item() - loss_plain.item() == pytest.approx(0.7 * hard_terms["l_h"], abs=1e-5)


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
    assert restored(batches[2], labels)[0].item() == original(batches[2], labels)[0].item()
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
    eval_loss, _ = module(batches[1], labels)
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name
    module.train()
    assert module(batches[1], labels)[0].item() == pytest.approx(eval_loss.item(), abs=1e-7)
    assert module.mu_pos.item() != before["mu_pos"].item()


@pytest.mark.parametrize(("mining", "labels"), [("none", [0, 0, 1, 1, 1, 2]), ("overlap", [0, 0, 0, 1, 1, 1, 2, 2])])
def test_gradient_matches_finite_differences(mining, labels):
    # float64 module; eval mode so that the repeated forward passes of gradcheck do not move the buffers
    labels = torch.tensor(labels)
    module = GDSLoss(momentum=0.6, lambda_sigma=0.5, lambda_h=1.5, kappa=1.0, mining=mining).double()
    generator = torch.Generator().manual_seed(6)
    module(torch.randn(len(labels), 4, generator=generator, dtype=torch.float64), labels)
    module.eval()
    features = torch.randn(len(labels), 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: module(x, labels)[0], (features,), eps=1e-6, atol=1e-6)
    if mining == "overlap":  # several hard pairs on each side, and pairs left out on each side (5 of 7, 18 of 21)
        _, terms = module(features, labels)
        assert 1 < terms["num_hard_pos_pairs"] < terms["num_pos_pairs"]
        assert 1 < terms["num_hard_neg_pairs"] < terms["num_neg_pairs"]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        GDSLoss(momentum=1.5)
    with pytest.raises(ValueError, match="kappa"):
        GDSLoss(kappa=-1.0)
    with pytest.raises(ValueError, match="mining"):
        GDSLoss(mining="hardest")
    with pytest.raises(ValueError, match=r"features \(B, D\) and labels \(B,\)"):
        GDSLoss()(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------------
# mining="overlap", by hand. 1-D raw features (normalize=False), kappa = lambda_sigma = lambda_h = 1, momentum 1 so
# the global statistics stay exactly at the values loaded into the buffers (and L_GDS gives no gradient):
#   mu+ = 2, var+ = 0.25 (sigma+ = 0.5),   mu- = 4, var- = 1 (sigma- = 1)
#   hard positive:  d+ > mu- - sigma- = 3          hard negative:  d- < mu+ + sigma+ = 2.5
#   L_GDS = softplus(2 - 4) + (0.25 + 1) = 0.126928 + 1.25                                   = 1.376928
#   mining none: L_H = softplus((2 + 0.5) - (4 - 1)) = softplus(-0.5)                        = 0.474077


def _overlap_module(mining: str = "overlap") -> GDSLoss:
    module = GDSLoss(momentum=1.0, lambda_sigma=1.0, lambda_h=1.0, kappa=1.0, normalize=False, hard=True,
                     mining=mining)
    module.load_state_dict({"mu_pos": torch.tensor(2.0), "var_pos": torch.tensor(0.25), "mu_neg": torch.tensor(4.0),
                            "var_neg": torch.tensor(1.0), "initialized": torch.tensor([True, True])})
    return module


def _points(*values: float) -> torch.Tensor:
    return torch.tensor([[value] for value in values], requires_grad=True)


def test_overlap_mining_hand_computed_hard_pairs_loss_and_gradient():
    # a = 0, b = 1, e = 3.5 label 0;  c = 1.5, d = 7 label 1
    #   positives ab = 1, ae = 3.5, be = 2.5, cd = 5.5      -> hard (> 3): ae = 3.5, cd = 5.5
    #       m_hp = 4.5, v_hp = (1 + 1) / 2 = 1, s_hp = 1
    #   negatives ac = 1.5, ad = 7, bc = 0.5, bd = 6, ec = 2, ed = 3.5   -> hard (< 2.5): ac, bc, ec = 1.5, 0.5, 2
    #       m_hn = 4/3, v_hn = ((1/6)^2 + (5/6)^2 + (2/3)^2) / 3 = (42/36) / 3 = 7/18, s_hn = 0.623610
    #   z = (4.5 + 1) - (4/3 - 0.623610) = 4.790276,  L_H = softplus(z) = 4.798552
    # gradient (only L_H moves; sigmoid(z) = 0.991758):
    #   d (x = 7) is in cd (hard, d cd/dx_d = +1) and ad, bd, ed (not hard):
    #       dz/dcd = 1/2 + (5.5 - 4.5) / (2 * 1) = 1       -> grad_d = 0.991758
    #   e (x = 3.5) is in ae (hard pos, +1), ec (hard neg, +1), be, ed (not hard):
    #       dz/dae = 1/2 + (3.5 - 4.5) / 2 = 0;  dz/dec = -1/3 + (2 - 4/3) / (3 * 0.623610) = 0.023018
    #       -> grad_e = 0.991758 * 0.023018 = 0.022828
    features, labels = _points(0.0, 1.0, 3.5, 1.5, 7.0), torch.tensor([0, 0, 0, 1, 1])
    module = _overlap_module()
    loss, terms = module(features, labels)
    assert (terms["num_hard_pos_pairs"], terms["num_hard_neg_pairs"]) == (2, 3)
    assert [terms["hard_mu_pos"], terms["hard_var_pos"], terms["hard_mu_neg"], terms["hard_var_neg"]] == pytest.approx(
        [4.5, 1.0, 4 / 3, 7 / 18], abs=1e-6)
    assert terms["l_gds"] == pytest.approx(1.376928, abs=1e-5)
    assert terms["l_h"] == pytest.approx(4.798552, abs=1e-5)
    assert loss.item() == pytest.approx(1.376928 + 4.798552, abs=1e-5)
    (grad,) = torch.autograd.grad(loss, features)
    assert grad[4, 0].item() == pytest.approx(0.991758, abs=1e-5)
    assert grad[2, 0].item() == pytest.approx(0.022828, abs=1e-5)
    # the buffers hold the global statistics only (momentum 1: unchanged); mining does not touch them
    assert [module.mu_pos.item(), module.var_pos.item(), module.mu_neg.item(), module.var_neg.item()] == [
        2.0, 0.25, 4.0, 1.0]

    plain = _overlap_module("none")
    plain_loss, plain_terms = plain(features, labels)
    assert plain_terms["l_h"] == pytest.approx(0.474077, abs=1e-5)
    assert "num_hard_pos_pairs" not in plain_terms and "hard_mu_pos" not in plain_terms
    assert torch.equal(torch.autograd.grad(plain_loss, features)[0], torch.zeros_like(features))


def test_overlap_mining_empty_side_falls_back_to_the_global_statistics():
    # rule: a side without a hard pair uses its global (mu, sigma) in L_H, i.e. today's L_H for that side
    # no hard positive: a = 0, b = 1 label 0; c = 2, d = 4 label 1
    #   positives ab = 1, cd = 2 (none > 3); negatives ac = 2, ad = 4, bc = 1, bd = 3 -> hard (< 2.5): 2, 1
    #   m_hn = 1.5, s_hn = 0.5:  L_H = softplus((2 + 0.5) - (1.5 - 0.5)) = softplus(1.5) = 1.701413
    module = _overlap_module()
    _, terms = module(_points(0.0, 1.0, 2.0, 4.0), torch.tensor([0, 0, 1, 1]))
    assert (terms["num_hard_pos_pairs"], terms["num_hard_neg_pairs"]) == (0, 2)
    assert math.isnan(terms["hard_mu_pos"])
    assert terms["l_h"] == pytest.approx(1.701413, abs=1e-5)

    # no hard negative: a = 0, b = 4 label 0; c = 10, d = 11 label 1
    #   positives ab = 4 (hard), cd = 1; negatives 10, 11, 6, 7 (none < 2.5)
    #   m_hp = 4, v_hp = 0 -> s_hp = sqrt(1e-12) = 1e-6:  L_H = softplus((4 + 1e-6) - (4 - 1)) = 1.313262
    module = _overlap_module()
    _, terms = module(_points(0.0, 4.0, 10.0, 11.0), torch.tensor([0, 0, 1, 1]))
    assert (terms["num_hard_pos_pairs"], terms["num_hard_neg_pairs"]) == (1, 0)
    assert terms["l_h"] == pytest.approx(1.313262, abs=1e-5)

    # neither side: a = 0, b = 1 label 0; c = 10, d = 11 label 1 -> exactly the mining="none" loss
    features, labels = _points(0.0, 1.0, 10.0, 11.0), torch.tensor([0, 0, 1, 1])
    mined, plain = _overlap_module(), _overlap_module("none")
    (mined_loss, mined_terms), (plain_loss, _) = mined(features, labels), plain(features, labels)
    assert (mined_terms["num_hard_pos_pairs"], mined_terms["num_hard_neg_pairs"]) == (0, 0)
    assert mined_loss.item() == plain_loss.item()
    assert mined_terms["l_h"] == pytest.approx(_softplus(-0.5), abs=1e-6)

    # a side never seen: the loss is zero as in mining="none", no hard pair is mined
    fresh = GDSLoss(mining="overlap")
    fresh_loss, fresh_terms = fresh(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    assert fresh_loss.item() == 0.0
    assert fresh_terms["num_hard_neg_pairs"] == 0 and math.isnan(fresh_terms["hard_mu_neg"])


def test_mining_none_is_bit_identical_to_the_default_and_todays_formula():
    # the default module (no mining argument) and mining="none": same losses, gradients and buffers, bit for bit;
    # and today's formula written out directly on the global statistics the module used
    default, explicit = GDSLoss(momentum=0.8, kappa=1.5), GDSLoss(momentum=0.8, kappa=1.5, mining="none")
    for features, labels in zip(_batches(seed=7), REPLAY_LABELS):
        features = features.clone().requires_grad_(True)
        loss_default, default_terms = default(features, torch.tensor(labels))
        loss_explicit, terms = explicit(features, torch.tensor(labels))
        assert torch.equal(loss_default, loss_explicit)
        if loss_default.requires_grad:
            assert torch.equal(torch.autograd.grad(loss_default, features)[0],
                               torch.autograd.grad(loss_explicit, features)[0])
        assert default_terms.keys() == terms.keys()
        if not math.isnan(terms["mu_pos"]) and not math.isnan(terms["mu_neg"]):
            expected_h = _softplus((terms["mu_pos"] + 1.5 * math.sqrt(max(terms["var_pos"], 1e-12)))
                                   - (terms["mu_neg"] - 1.5 * math.sqrt(max(terms["var_neg"], 1e-12))))
            assert terms["l_h"] == pytest.approx(expected_h, abs=1e-5)
    for name, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[name]), name


def test_config_keys_for_mining_and_warm_up_are_validated():
    from reid.config import load_config
    from reid.errors import ConfigError

    cfg = load_config(None, [])
    assert (cfg.gds.mining, cfg.gds.start_round) == ("none", 0)
    cfg = load_config(None, ["gds.mining=overlap", "gds.start_round=2"])
    assert (cfg.gds.mining, cfg.gds.start_round) == ("overlap", 2)
    with pytest.raises(ConfigError, match=r"gds.start_round: expected a value >= 0, got -1"):
        load_config(None, ["gds.start_round=-1"])
    with pytest.raises(ConfigError, match=r"gds.mining: expected one of 'none', 'overlap'"):
        load_config(None, ["gds.mining=hardest"])


def test_pair_distances_confident_keeps_only_positive_pairs_of_two_confident_images() -> None:
    """Labels (0, 0, 0, 1), confident (T, T, F, T): positives (0,1) kept, (0,2) and (1,2) dropped; the 3
    negatives (0,3), (1,3), (2,3) all kept. Points on a line: distances are coordinate differences."""
    from reid.losses.gds import pair_distances

    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 0, 1])
    pos, neg = pair_distances(x, labels, torch.tensor([True, True, False, True]))
    torch.testing.assert_close(pos, torch.tensor([1.0]))
    torch.testing.assert_close(neg, torch.tensor([7.0, 6.0, 4.0]))
    all_pos, all_neg = pair_distances(x, labels)
    torch.testing.assert_close(all_pos, torch.tensor([1.0, 3.0, 2.0]))
    torch.testing.assert_close(all_neg, neg)


def test_gds_loss_with_every_image_confident_equals_the_plain_loss() -> None:
    torch.manual_seed(0)
    features, labels = torch.randn(12, 8), torch.arange(6).repeat_interleave(2)
    plain, masked = GDSLoss(), GDSLoss()
    (plain_loss, plain_terms), (masked_loss, _) = (plain(features, labels),
                                                   masked(features, labels, torch.ones(12, dtype=torch.bool)))
    torch.testing.assert_close(plain_loss, masked_loss)
    _, fewer_terms = GDSLoss()(features, labels, torch.arange(12) < 6)
    assert fewer_terms["num_pos_pairs"] == 3 and plain_terms["num_pos_pairs"] == 6
