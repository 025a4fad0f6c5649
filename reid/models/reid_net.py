"""Re-ID network: backbone -> pooling (avg | GeM) -> optional embedding -> BNNeck -> optional classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid.models.backbones import build_backbone


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
        """``camids`` (train mode only): camera-based BN (Zhuang et al., ECCV 2020): each camera's images are
        normalised with their own batch statistics, one forward per camera group, outputs in batch order."""
        if camids is not None and self.training:
            return camera_split_forward(self._forward, images, camids)
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


def camera_split_forward(forward, images: torch.Tensor, camids: torch.Tensor) -> dict[str, torch.Tensor]:
    """``forward`` (returning a dict of per-image tensors) run on each camera's images separately, so every BN
    layer normalises a camera with that camera's batch statistics; the outputs are put back in batch order.

    A camera with a single image in the batch cannot be normalised alone (a BN layer after pooling needs two
    values per channel): such images form one group together, or join the first group if only one is left.
    """
    cams = torch.as_tensor(camids).to(images.device)
    values, inverse, counts = torch.unique(cams, return_inverse=True, return_counts=True)
    groups = [torch.nonzero(inverse == i).squeeze(1) for i in range(len(values)) if counts[i] >= 2]
    singles = torch.nonzero(counts[inverse] == 1).squeeze(1)
    if len(singles) == 1 and groups:
        groups[0] = torch.cat([groups[0], singles])
    elif len(singles):
        groups.append(singles)
    if len(groups) == 1:
        return forward(images)
    outputs: dict[str, torch.Tensor] = {}
    for index in groups:
        for key, value in forward(images[index]).items():
            if key not in outputs:
                outputs[key] = value.new_zeros((images.shape[0], *value.shape[1:]))
            outputs[key] = outputs[key].index_copy(0, index, value)
    return outputs


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
