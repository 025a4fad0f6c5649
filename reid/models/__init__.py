from reid.models.backbones import build_backbone
from reid.models.reid_net import GeneralizedMeanPooling, ReidNet, build_model

__all__ = ["build_backbone", "build_model", "ReidNet", "GeneralizedMeanPooling"]
