"""reid/models: shapes per architecture, last stride, BNNeck, GeM, pretrained loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid.errors import CheckpointError, ConfigError
from reid.models import GeneralizedMeanPooling, build_backbone, build_model


@pytest.mark.parametrize("arch, channels, last_stride, map_hw", [
    ("resnet18", 512, 2, (2, 1)),
    ("resnet18", 512, 1, (4, 2)),
    ("resnet34", 512, 1, (4, 2)),
    ("resnet50", 2048, 1, (4, 2)),
    ("mobilenet_v2", 1280, 2, (2, 1)),
])
def test_backbone_feature_map_shapes(arch: str, channels: int, last_stride: int, map_hw: tuple[int, int]) -> None:
    backbone, out_channels = build_backbone(arch=arch, last_stride=last_stride, pretrained="none")
    assert out_channels == channels
    with torch.no_grad():
        fmap = backbone.eval()(torch.zeros(1, 3, 64, 32))
    assert tuple(fmap.shape) == (1, channels, *map_hw)


def test_train_mode_returns_loss_inputs_and_eval_mode_the_embedding() -> None:
    torch.manual_seed(0)
    model = build_model(arch="resnet18", pretrained="none", num_classes=7, embedding_dim=32)
    images = torch.randn(4, 3, 64, 32)
    out = model.train()(images)
    assert set(out) == {"before", "after", "logits"}
    assert out["before"].shape == (4, 32) and out["logits"].shape == (4, 7)
    model.eval()
    after = model(images)
    # eval-mode BNNeck uses running statistics: after = (x - running_mean) / sqrt(running_var + eps) * weight
    model.neck_feat = "before"
    before = model(images)
    bn = model.bnneck
    expected = (before - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(after, expected, atol=1e-5)
    assert not bn.bias.requires_grad  # BNNeck: bias frozen


def test_gem_pooling_matches_formula_and_reduces_to_average_at_p1() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gem = GeneralizedMeanPooling(p=3.0)
    assert gem(x).item() == pytest.approx(((1 + 8 + 27 + 64) / 4) ** (1 / 3), rel=1e-6)
    assert GeneralizedMeanPooling(p=1.0)(x).item() == pytest.approx(2.5)
    assert gem.p.requires_grad


def test_classifier_can_be_removed_for_stage_two() -> None:
    model = build_model(arch="resnet18", pretrained="none", num_classes=5)
    model.reset_classifier(0)
    assert "logits" not in model.train()(torch.randn(2, 3, 64, 32))


def test_shared_imagenet_mobilenet_weights_load_from_a_path(mobilenet_weights: Path) -> None:
    state = torch.load(mobilenet_weights, weights_only=True)
    backbone, _ = build_backbone(arch="mobilenet_v2", pretrained=str(mobilenet_weights))
    key = "features.0.0.weight"
    assert torch.equal(backbone.state_dict()[key], state[key])


def test_weights_of_another_architecture_are_a_one_line_error(mobilenet_weights: Path) -> None:
    with pytest.raises(CheckpointError, match="different architecture"):
        build_backbone(arch="resnet18", pretrained=str(mobilenet_weights))


def test_missing_weights_path_and_unknown_arch() -> None:
    with pytest.raises(CheckpointError, match="pretrained weights not found: /nonexistent.pth"):
        build_backbone(arch="resnet18", pretrained="/nonexistent.pth")
    with pytest.raises(ConfigError, match="unknown architecture 'vgg16'"):
        build_backbone(arch="vgg16", pretrained="none")
