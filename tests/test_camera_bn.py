"""Camera-based BatchNorm (reid/evaluation/camera_bn.py, ReidNet.forward(images, camids)): per-camera BN
statistics at extraction, per-camera batch normalisation in training. Checked against independent computations:
BN statistics taken directly from the layer inputs, and a model copy whose BN layers are set from one batch with
momentum 1."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.reference import per_group_forwards
from reid.data.datasets import build_dataset
from reid.data.loaders import build_test_loader
from reid.evaluation.camera_bn import bn_layers, estimate_bn_statistics, extract_features_camera_bn
from reid.evaluation.features import extract_features
from reid.models import build_model

# The one-forward camera BN reduces in another order than a forward of the camera's images alone; in float32 the
# rounding is amplified by BN layers over a few images (5e-5 on the BNNeck output), so the training-time checks run
# in float64, where both agree to 1e-13.
ROUNDING = {"rtol": 1e-9, "atol": 1e-10}


def _small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch="resnet18", pretrained="none")
    model.eval()
    return model


def test_estimate_bn_statistics_equals_the_layer_inputs_mean_and_unbiased_variance(mini_market: Path) -> None:
    """One batch holding every image: each BN layer's running mean / var become the per-channel mean / unbiased
    variance of that layer's own input, captured here with forward hooks on a second pass in train mode."""
    items = build_dataset("market-format", mini_market).query[:12]
    loader = build_test_loader(items, 64, 32, batch_size=64, workers=0)
    model = _small_model()
    before = copy.deepcopy(model.state_dict())
    estimate_bn_statistics(model, loader)
    assert not model.training and all(layer.momentum == 0.1 for layer in bn_layers(model))

    inputs: dict[int, torch.Tensor] = {}
    probe = copy.deepcopy(model)
    hooks = [layer.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0].detach()))
             for i, layer in enumerate(bn_layers(probe))]
    probe.train()
    with torch.no_grad():
        probe(next(iter(loader))[0])
    for hook in hooks:
        hook.remove()
    changed = 0
    for i, layer in enumerate(bn_layers(model)):
        x = inputs[i].double()
        dims = [0] if x.ndim == 2 else [0, 2, 3]
        count = x.numel() // x.shape[1]
        mean = x.mean(dim=dims)
        var = ((x - mean.view(1, -1, *[1] * (x.ndim - 2))) ** 2).sum(dim=dims) / (count - 1)
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-4, atol=1e-5)
        name = [n for n, m in model.named_modules() if m is layer][0]
        changed += not torch.allclose(before[f"{name}.running_mean"], layer.running_mean)
    assert changed == len(bn_layers(model))  # every layer moved off the initial statistics


def test_extract_features_camera_bn_matches_per_camera_model_copies_and_restores_the_model(mini_market: Path) -> None:
    """Independent reference: for each camera, a copy of the model whose BN layers take that camera's images as
    one batch with momentum 1 (running stats = that batch's), then plain eval-mode extraction. One batch holds
    each camera here, so the cumulative average of the function under test is that batch's statistics."""
    dataset = build_dataset("market-format", mini_market)
    items = dataset.query[:10] + dataset.gallery[:14]
    camids = np.array([c for _, _, c in items])
    assert len(np.unique(camids)) >= 2
    model = _small_model(1)
    state = copy.deepcopy(model.state_dict())
    features, pids, cams = extract_features_camera_bn(model, items, height=64, width=32, batch_size=64)
    for key, value in model.state_dict().items():  # the model's own statistics are back
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert np.array_equal(cams, camids) and np.array_equal(pids, [p for _, p, _ in items])

    expected = torch.empty_like(features)
    for camera in np.unique(camids):
        index = np.flatnonzero(camids == camera)
        subset = [items[i] for i in index]
        reference = copy.deepcopy(model)
        for layer in bn_layers(reference):
            layer.momentum = 1.0
        reference.train()
        images = next(iter(build_test_loader(subset, 64, 32, batch_size=64, workers=0)))[0]
        if len(subset) >= 2:
            with torch.no_grad():
                reference(images)
        part, _, _ = extract_features(reference, build_test_loader(subset, 64, 32, batch_size=64, workers=0))
        expected[torch.from_numpy(index)] = part
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    plain, _, _ = extract_features(model, build_test_loader(items, 64, 32, batch_size=64, workers=0))
    assert (features - plain).abs().max() > 1e-2  # the per-camera statistics did change the embeddings
    assert torch.allclose(features.norm(dim=1), torch.ones(len(items)))


def test_camera_split_forward_normalises_each_camera_with_its_own_batch_statistics() -> None:
    """In train mode, ``model(images, camids)``: camera 0's outputs equal a forward of camera 0's images alone and do
    not depend on camera 1's images; the gradient reaches the weights; one camera = the ordinary forward."""
    torch.manual_seed(0)
    model = build_model(arch="resnet18", pretrained="none", num_classes=5).train().double()
    images = torch.randn(8, 3, 64, 32, dtype=torch.float64)
    camids = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    out = model(images, camids=camids)
    first = torch.nonzero(camids == 0).squeeze(1)
    alone = model(images[first])
    for key in ("before", "after", "logits"):
        torch.testing.assert_close(out[key][first], alone[key], **ROUNDING)
    other = images.clone()
    other[camids == 1] = torch.randn(4, 3, 64, 32, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(model(other, camids=camids)["before"][first], out["before"][first],
                               **ROUNDING)
    plain = model(images)
    assert (plain["before"][first] - out["before"][first]).abs().max() > 1e-3  # the split mattered
    out["logits"].sum().backward()
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0
    same = torch.zeros(8, dtype=torch.long)
    torch.testing.assert_close(model(images, camids=same)["before"], model(images)["before"])
    model.eval()  # eval mode ignores camids: the running statistics apply
    torch.testing.assert_close(model(images, camids=camids), model(images))


@pytest.mark.parametrize("size", [1])
def test_a_camera_with_one_image_keeps_the_models_statistics(mini_market: Path, size: int) -> None:
    dataset = build_dataset("market-format", mini_market)
    by_camera: dict[int, list] = {}
    for item in dataset.gallery:
        by_camera.setdefault(item[2], []).append(item)
    cams = sorted(by_camera)
    items = by_camera[cams[0]][:size] + by_camera[cams[1]][:5]
    model = _small_model(2)
    features, _, _ = extract_features_camera_bn(model, items, height=64, width=32)
    plain, _, _ = extract_features(model, build_test_loader(items[:size], 64, 32, 64, 0))
    torch.testing.assert_close(features[:size], plain)


def test_camera_split_forward_pools_cameras_with_one_image_in_the_batch() -> None:
    """Cameras 2 and 3 hold one image each: they are normalised together; a lone single joins the first group."""
    torch.manual_seed(0)
    model = build_model(arch="resnet18", pretrained="none").train().double()
    images = torch.randn(6, 3, 64, 32, dtype=torch.float64)
    out = model(images, camids=torch.tensor([0, 0, 2, 1, 1, 3]))["before"]
    torch.testing.assert_close(out[[2, 5]], model(images[[2, 5]])["before"], **ROUNDING)
    torch.testing.assert_close(out[[0, 1]], model(images[[0, 1]])["before"], **ROUNDING)
    out = model(images[:5], camids=torch.tensor([0, 0, 2, 1, 1]))["before"]
    torch.testing.assert_close(out[[0, 1, 2]], model(images[[0, 1, 2]])["before"], **ROUNDING)


def test_one_forward_camera_bn_equals_per_group_forwards_in_outputs_gradients_and_running_statistics() -> None:
    """The single-forward camera BN against per-group forwards on a copy of the model: the same outputs, the same
    weight gradients, and the same running statistics (one momentum update per group, in group order)."""
    from reid.models.camera_bn import camera_groups

    torch.manual_seed(0)
    model = build_model(arch="resnet18", pretrained="none", num_classes=5).train().double()
    reference = copy.deepcopy(model)
    images = torch.randn(12, 3, 64, 32, dtype=torch.float64)
    camids = torch.tensor([3, 1, 3, 1, 5, 3, 1, 7, 3, 1, 5, 5])  # camera 7 alone: joins the first group
    groups = camera_groups(camids)
    assert [g.tolist() for g in groups] == [[1, 3, 6, 9, 7], [0, 2, 5, 8], [4, 10, 11]]
    out = model(images, camids=camids)
    expected = per_group_forwards(reference, images, groups)
    for key in ("before", "after", "logits"):
        torch.testing.assert_close(out[key], expected[key], **ROUNDING)
    out["logits"].square().sum().backward()
    expected["logits"].square().sum().backward()
    for (name, param), (_, ref_param) in zip(model.named_parameters(), reference.named_parameters()):
        if param.grad is not None or ref_param.grad is not None:
            torch.testing.assert_close(param.grad, ref_param.grad, **ROUNDING, msg=name)
    buffers = dict(reference.named_buffers())
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], **ROUNDING, msg=name)
    bn = model.backbone.bn1 if hasattr(model.backbone, "bn1") else next(
        m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 3  # one update per group
    # the layers' own forward is back: a plain forward afterwards is the ordinary BatchNorm
    assert all("forward" not in vars(m) for m in model.modules())


def test_grouped_batch_norm_keeps_float32_statistics_for_half_precision_activations() -> None:
    """Under autocast the BN inputs are half precision: group statistics over 4 x 2,048 x 16 values per channel
    (beyond float16's range as a count) stay in float32; the output matches the float32 computation to the
    input's own rounding and the gradient is finite."""
    from reid.models.camera_bn import grouped_batch_norm

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    x = torch.randn(64, 8, 64, 32) * 2 + 1
    group = torch.arange(64) % 4
    reference = grouped_batch_norm(bn, x, group, 4)
    half = x.to(torch.bfloat16).requires_grad_()
    out = grouped_batch_norm(bn, half, group, 4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.02, atol=0.05)
    out.float().square().sum().backward()
    assert half.grad.dtype == torch.bfloat16 and bool(torch.isfinite(half.grad).all())
