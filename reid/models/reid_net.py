"""Re-ID network: backbone -> pooling (avg | GeM) -> optional embedding -> BNNeck -> optional classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid.models.backbones import build_backbone
from reid.models.camera_bn import camera_groups, per_camera_batch_norm


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenovic et al. 2018) with a learnable exponent p: (B, C, H, W) -> (B, C)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class ReidNet(nn.Module):
    """Backbone + BNNeck (Luo et al. 2019).

    Train mode returns a dict keyed as the config names the embeddings (``model.neck_feat``,
    ``adapt.loss_feature``, ``gds.feature``): ``"before"`` (B, D) the pooled (and projected) feature before the
    BNNeck; ``"after"`` (B, D) the BNNeck's output; ``"logits"`` (B, C) when a classifier is attached (computed
    from ``"after"``). So ``outputs[cfg.adapt.loss_feature]`` is the embedding the stage-2 losses see.
    Eval mode returns the retrieval embedding (B, D): after the BNNeck (``neck_feat="after"``, the usual choice
    for ID-trained models) or before it (``"before"``).
    """

    def __init__(self, backbone: nn.Module, in_dim: int, num_classes: int = 0, pooling: str = "avg",
                 gem_p: float = 3.0, embedding_dim: int = 0, neck_feat: str = "after"):
        super().__init__()
        self.backbone = backbone
        self.pool = GeneralizedMeanPooling(gem_p) if pooling == "gem" else None
        self.embedding = None
        self.feat_dim = in_dim
        if embedding_dim:
            self.embedding = nn.Linear(in_dim, embedding_dim, bias=False)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            self.feat_dim = embedding_dim
        self.bnneck = nn.BatchNorm1d(self.feat_dim)
        self.bnneck.bias.requires_grad_(False)  # BNNeck: no shift, so the BN output stays centred for the classifier
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        self.neck_feat = neck_feat
        self.classifier = None
        if num_classes:
            self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Attach a fresh classifier with ``num_classes`` outputs (0 removes it)."""
        if num_classes == 0:
            self.classifier = None
            return
        self.classifier = nn.Linear(self.feat_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor,
                camids: torch.Tensor | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """``camids`` (train mode only): camera-based BN (Zhuang et al., ECCV 2020): every BN layer normalises each
        camera's images with their own batch statistics, in one forward (:mod:`reid.models.camera_bn`)."""
        if camids is not None and self.training and len(camera_groups(camids)) > 1:
            with per_camera_batch_norm(self, camids, images.device):
                return self._forward(images)
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        fmap = self.backbone(images)
        features = self.pool(fmap) if self.pool is not None else F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        if self.embedding is not None:
            features = self.embedding(features)
        after_neck = self.bnneck(features)
        if not self.training:
            return after_neck if self.neck_feat == "after" else features
        out = {"before": features, "after": after_neck}
        if self.classifier is not None:
            out["logits"] = self.classifier(after_neck)
        return out


def build_model(arch: str = "resnet50", pretrained: str = "imagenet", last_stride: int = 1, num_classes: int = 0,
                pooling: str = "avg", gem_p: float = 3.0, embedding_dim: int = 0, neck_feat: str = "after") -> ReidNet:
    """Build a :class:`ReidNet`. Example: ``build_model(arch="resnet50", num_classes=751)``."""
    backbone, channels = build_backbone(arch=arch, last_stride=last_stride, pretrained=pretrained)
    model = ReidNet(backbone, channels, num_classes=num_classes, pooling=pooling, gem_p=gem_p,
                    embedding_dim=embedding_dim, neck_feat=neck_feat)
    # channels_last: 2-4x faster convolutions on CPU (oneDNN) and tensor cores on GPU; feed NHWC images too
    return model.to(memory_format=torch.channels_last)


def model_from(m, *, num_classes: int = 0, pretrained: str | None = None) -> ReidNet:
    """:func:`build_model` from the config's ``model`` section (a :class:`reid.config.ModelConfig`), the one
    adapter every caller uses. ``pretrained`` overrides ``model.pretrained`` (``"none"`` before loading a
    checkpoint). Example: ``model_from(cfg.model, num_classes=source.num_train_pids)``."""
    return build_model(arch=m.arch, pretrained=m.pretrained if pretrained is None else pretrained,
                       last_stride=m.last_stride, num_classes=num_classes, pooling=m.pooling, gem_p=m.gem_p,
                       embedding_dim=m.embedding_dim, neck_feat=m.neck_feat)
