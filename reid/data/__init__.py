"""Datasets, transforms, P x K samplers and data loaders."""

from __future__ import annotations

from reid.data.datasets import DATASET_NAMES, ReidDataset, build_dataset
from reid.data.loaders import ImageDataset, build_test_loader, build_train_loader, read_image, validate_images
from reid.data.samplers import DistributedRandomIdentitySampler, RandomIdentitySampler
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = [
    "DATASET_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DistributedRandomIdentitySampler",
    "ImageDataset",
    "RandomIdentitySampler",
    "ReidDataset",
    "build_dataset",
    "build_test_loader",
    "build_train_loader",
    "build_transforms",
    "read_image",
    "validate_images",
]
