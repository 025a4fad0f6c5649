"""torchvision backbones as re-ID feature extractors.

``build_backbone(arch="resnet50", last_stride=1, pretrained="imagenet")`` returns a module mapping
``(B, 3, H, W)`` images to a ``(B, C, H', W')`` feature map, and ``C``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from reid.errors import CheckpointError, ConfigError
from reid.names import ARCHITECTURES

log = logging.getLogger(__name__)

ARCHS = ARCHITECTURES  # the table lives in reid/names.py (config validation reads it too)
_IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "mobilenet_v2": "MobileNet_V2_Weights",
}


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its average pool and fc layer."""

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MobileNetTrunk(nn.Module):
    """torchvision MobileNetV2 ``features`` (keys ``features.*`` as in the torchvision state dict)."""

    def __init__(self, mobilenet: torchvision.models.MobileNetV2):
        super().__init__()
        self.features = mobilenet.features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def _set_last_stride(trunk: ResNetTrunk, stride: int) -> None:
    block = trunk.layer4[0]
    # Bottleneck strides in conv2 (torchvision "ResNet v1.5"), BasicBlock in conv1.
    conv = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    weights = getattr(torchvision.models, _IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:  # network errors come in many types (URLError, OSError, ...)
        raise CheckpointError(
            f"cannot download ImageNet weights for {arch} ({type(error).__name__}: {error}); "
            f"set model.pretrained to a local torchvision state dict (.pth) or to 'none'") from None


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise CheckpointError(f"pretrained weights not found: {path} (model.pretrained expects imagenet, none or a .pth path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read pretrained weights {path}: {type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> tuple[list[str], list[str]]:
    """Load a torchvision-format state dict into ``trunk``, ignoring classifier keys.

    Returns (missing, unexpected) key lists; raises CheckpointError when no key matches or shapes differ.
    """
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    own = trunk.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise CheckpointError(f"{source}: shape mismatch for {mismatched[0]} "
                              f"({tuple(state[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)}): "
                              "weights of a different architecture?")
    if not set(state) & set(own):
        raise CheckpointError(f"{source}: none of its {len(state)} keys match the backbone: weights of a different architecture?")
    result = trunk.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        log.warning("%s: %d missing keys (e.g. %s), %d unexpected keys (e.g. %s)", source,
                    len(result.missing_keys), result.missing_keys[:3], len(result.unexpected_keys),
                    result.unexpected_keys[:3])
    return list(result.missing_keys), list(result.unexpected_keys)


def build_backbone(arch: str = "resnet50", last_stride: int = 1, pretrained: str = "imagenet") -> tuple[nn.Module, int]:
    """Build a feature-map extractor.

    Args:
        arch: resnet18 | resnet34 | resnet50 | resnet101 | mobilenet_v2.
        last_stride: stride of the last stage (ResNets; 1 doubles the final map to 16x8 at 256x128).
            MobileNetV2 keeps its strides.
        pretrained: "imagenet" (torchvision IMAGENET1K_V1, downloaded), "none", or a path to a torchvision-format
            state dict loaded with ``weights_only=True``.

    Returns:
        (module mapping (B, 3, H, W) -> (B, C, H/16|H/32, ...), C)
    """
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}, expected one of {', '.join(ARCHS)}")
    if last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride: expected 1 or 2, got {last_stride}")
    if arch == "mobilenet_v2":
        trunk: nn.Module = MobileNetTrunk(torchvision.models.mobilenet_v2(weights=None))
        channels = 1280
    else:
        resnet = getattr(torchvision.models, arch)(weights=None)
        trunk = ResNetTrunk(resnet)
        _set_last_stride(trunk, last_stride)
        channels = resnet.fc.in_features
    if pretrained == "imagenet":
        load_pretrained(trunk, _imagenet_state_dict(arch), f"ImageNet {arch}")
    elif pretrained and pretrained != "none":
        load_pretrained(trunk, _file_state_dict(pretrained), pretrained)
    return trunk, channels
