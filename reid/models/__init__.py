from reid.models.backbones import build_backbone
from reid.models.reid_net import GeneralizedMeanPooling, ReidNet, build_model, model_from

__all__ = ["build_backbone", "build_model", "model_from", "ReidNet", "GeneralizedMeanPooling"]
