"""Tests for reid/losses/triplet.py and reid/losses/cross_entropy.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reid.losses import CrossEntropyLabelSmooth, TripletLoss, batch_hard_distances, pairwise_euclidean

# ----------------------------------------------------------------------------------------------------------------
# pairwise_euclidean


def test_pairwise_euclidean_matches_hand_computed_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    expected = torch.tensor([[0.0, 10.0, 3.0], [5.0, 5.0, 4.0]])
    torch.testing.assert_close(pairwise_euclidean(x, y), expected, atol=1e-5, rtol=0)


def test_pairwise_euclidean_matches_direct_norm_of_differences():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    direct = (x[:, None, :] - y[None, :, :]).norm(dim=2)
    torch.testing.assert_close(pairwise_euclidean(x, y), direct, atol=1e-10, rtol=0)


def test_pairwise_euclidean_gradient_is_finite_on_the_diagonal():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    pairwise_euclidean(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_pairwise_euclidean_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"\(B, D\) and \(M, D\)"):
        pairwise_euclidean(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------------------------------------------
# CrossEntropyLabelSmooth


def test_label_smoothing_cross_entropy_hand_computed():
    # logits (0, 0, ln 2) -> softmax (1/4, 1/4, 1/2). Target 2, eps 0.3, C 3 -> smoothed target (0.1, 0.1, 0.8).
    # loss = -(0.1 ln 1/4 + 0.1 ln 1/4 + 0.8 ln 1/2) = 0.2 ln 4 + 0.8 ln 2 = 1.2 ln 2.
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)]])
    loss, _ = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.3)(logits, torch.tensor([2]))
    assert loss.item() == pytest.approx(1.2 * math.log(2.0), abs=1e-6)


def test_label_smoothing_cross_entropy_is_averaged_over_the_batch():
    # second sample: logits (ln 2, 0, 0) -> softmax (1/2, 1/4, 1/4), target 0 -> again 1.2 ln 2; a third sample
    # with uniform logits gives -ln(1/3) = ln 3 whatever the target.
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [math.log(2.0), 0.0, 0.0], [5.0, 5.0, 5.0]])
    loss, _ = CrossEntropyLabelSmooth(num_classes=3, epsilon=0.3)(logits, torch.tensor([2, 0, 1]))
    assert loss.item() == pytest.approx((2 * 1.2 * math.log(2.0) + math.log(3.0)) / 3, abs=1e-6)


def test_label_smoothing_cross_entropy_stats_hold_the_batch_accuracy_as_a_python_float():
    # top logits: class 2 (target 2, right), class 0 (target 1, wrong), class 1 (target 1, right)
    logits = torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    _, stats = CrossEntropyLabelSmooth(num_classes=3)(logits, torch.tensor([2, 1, 1]))
    assert stats == {"accuracy": pytest.approx(2 / 3)} and isinstance(stats["accuracy"], float)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_label_smoothing_cross_entropy_equals_torch_label_smoothing(epsilon):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 11, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (6,), generator=generator)
    ours, _ = CrossEntropyLabelSmooth(num_classes=11, epsilon=epsilon)(logits, targets)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    reference = F.cross_entropy(logits, targets, label_smoothing=epsilon)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-12, rtol=0)


def test_label_smoothing_cross_entropy_rejects_wrong_number_of_classes():
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        CrossEntropyLabelSmooth(num_classes=5)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLabelSmooth(num_classes=5, epsilon=1.0)


# ----------------------------------------------------------------------------------------------------------------
# TripletLoss
#
# Four 2-D points: a0 = (0, 0), a1 = (2, 0) with label 0; b0 = (1, 1), b1 = (1, -2) with label 1.
#   d(a0, a1) = 2, d(b0, b1) = 3, d(a0, b0) = d(a1, b0) = sqrt 2, d(a0, b1) = d(a1, b1) = sqrt 5.
#   anchor a0: d_ap = 2, d_an = sqrt 2;   a1: the same;   b0: d_ap = 3, d_an = sqrt 2;   b1: d_ap = 3, d_an = sqrt 5.
FOUR_POINTS = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -2.0]])
FOUR_LABELS = torch.tensor([0, 0, 1, 1])
SQRT2, SQRT5 = math.sqrt(2.0), math.sqrt(5.0)


def test_batch_hard_triplet_hand_computed_with_margin():
    # every anchor violates the margin: mean of (2.3 - sqrt2) * 2, 3.3 - sqrt2, 3.3 - sqrt5
    #   = (11.2 - 3 sqrt2 - sqrt5) / 4
    loss, stats = TripletLoss(margin=0.3)(FOUR_POINTS, FOUR_LABELS)
    assert loss.item() == pytest.approx((11.2 - 3 * SQRT2 - SQRT5) / 4, abs=1e-5)
    d_ap, d_an = batch_hard_distances(FOUR_POINTS, FOUR_LABELS)
    torch.testing.assert_close(d_ap, torch.tensor([2.0, 2.0, 3.0, 3.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(d_an, torch.tensor([SQRT2, SQRT2, SQRT2, SQRT5]), atol=1e-5, rtol=0)
    assert stats == {"precision": 0.0} and isinstance(stats["precision"], float)  # python floats, for logging


def test_batch_hard_triplet_hand_computed_soft_margin():
    differences = [2 - SQRT2, 2 - SQRT2, 3 - SQRT2, 3 - SQRT5]
    expected = sum(math.log1p(math.exp(value)) for value in differences) / 4
    loss, _ = TripletLoss(margin=0.0)(FOUR_POINTS, FOUR_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_batch_hard_triplet_matches_loop_reference_value_and_gradient():
    # random points (no distance ties), hardest pairs picked by plain python loops, gradient by autograd
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = [0, 0, 1, 1, 1, 2, 2, 3]  # label 3 has no positive: that anchor is excluded
    loss, stats = TripletLoss(margin=0.5)(points, torch.tensor(labels))
    (grad,) = torch.autograd.grad(loss, points)

    reference_points = points.detach().clone().requires_grad_(True)
    terms = []
    for i, label in enumerate(labels):
        positives = [j for j, other in enumerate(labels) if other == label and j != i]
        negatives = [j for j, other in enumerate(labels) if other != label]
        if not positives:
            continue
        d_ap = max((reference_points[i] - reference_points[j]).norm() for j in positives)
        d_an = min((reference_points[i] - reference_points[j]).norm() for j in negatives)
        terms.append(torch.relu(d_ap - d_an + 0.5))
    reference = torch.stack(terms).mean()
    (reference_grad,) = torch.autograd.grad(reference, reference_points)
    assert batch_hard_distances(points, torch.tensor(labels))[0].numel() == 7
    torch.testing.assert_close(loss, reference, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, reference_grad, atol=1e-10, rtol=0)


def test_batch_hard_triplet_precision_counts_anchors_with_negative_farther_than_positive():
    # two tight, far-apart clusters: every anchor has d_an > d_ap, loss 0 with margin 0.3
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    loss, stats = TripletLoss(margin=0.3)(points, FOUR_LABELS)
    assert loss.item() == 0.0
    assert stats["precision"] == 1.0


def test_batch_hard_triplet_normalize_feature_uses_unit_vectors():
    # scaling a row does not change its direction: normalised loss is scale-invariant per sample
    scaled = FOUR_POINTS[1:] * torch.tensor([[3.0], [0.5], [7.0]])
    points = torch.cat([torch.tensor([[1.0, 1.0]]), scaled])
    criterion = TripletLoss(margin=0.3, normalize_feature=True)
    loss_scaled, _ = criterion(points, FOUR_LABELS)
    loss_unit, _ = criterion(F.normalize(points, dim=1), FOUR_LABELS)
    assert loss_scaled.item() == pytest.approx(loss_unit.item(), abs=1e-6)


def test_batch_hard_triplet_excludes_anchors_without_positive():
    # labels 0, 0, 1, 2: only a0 and a1 have a positive; they give (2.3 - sqrt2) each
    loss, _ = TripletLoss(margin=0.3)(FOUR_POINTS, torch.tensor([0, 0, 1, 2]))
    assert loss.item() == pytest.approx(2.3 - SQRT2, abs=1e-5)
    assert batch_hard_distances(FOUR_POINTS, torch.tensor([0, 0, 1, 2]))[0].numel() == 2


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_batch_hard_triplet_without_valid_anchor_is_zero_with_graph(labels):
    points = FOUR_POINTS.clone().requires_grad_(True)
    loss, stats = TripletLoss(margin=0.3)(points, torch.tensor(labels))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(points.grad, torch.zeros_like(points))
    assert batch_hard_distances(points, torch.tensor(labels))[0].numel() == 0 and stats["precision"] == 0.0


def test_triplet_rejects_negative_margin():
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)
