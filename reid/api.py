"""Python API: embed person images with a trained checkpoint, in the spirit of torchreid's ``FeatureExtractor``.

Example::

    >>> from reid import FeatureExtractor
    >>> extractor = FeatureExtractor("outputs/demo/checkpoints/final.pt", device="cpu")
    >>> features = extractor(["query/0001_c1s1_000151_00.jpg", PIL.Image.open("crop.png")])
    >>> features.shape, features.dtype          # (N, D) float32 CPU tensor, every row of unit L2 norm
    (torch.Size([2, 2048]), torch.float32)
    >>> distances = torch.cdist(features, features)   # Euclidean distances of normalised features, in [0, 2]

The image size and the network (architecture, pooling, embedding size, BNNeck side) come from the config the
checkpoint carries (every checkpoint written by ``reid-train`` does); a bare state dict needs ``config=`` (the
training YAML). Preprocessing and embedding are evaluation's: :func:`reid.data.transforms.build_transforms`
(test) and :func:`reid.evaluation.features.extract_features` (eval mode, L2-normalised).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reid.config import Config, ModelConfig, config_from_dict, load_config, resolve_paths
from reid.data.loaders import read_image
from reid.data.transforms import build_transforms
from reid.engine.checkpoint import load_checkpoint, load_model_weights
from reid.errors import CheckpointError, ReidError
from reid.evaluation.features import extract_features
from reid.models import ReidNet, model_from

ImageInput = str | os.PathLike | Image.Image


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild and feed a trained network: its model config and the input size in pixels."""

    model: ModelConfig
    height: int
    width: int


def model_spec(state: dict, config: str | os.PathLike | Config | None = None, source: str = "checkpoint") -> ModelSpec:
    """The network and image size of a checkpoint: from ``config`` when given, else from its stored config.

    Only ``data.height``, ``data.width`` and the ``model`` section are read from a stored config, so checkpoints
    of older or newer versions (other keys) still load.

    Raises:
        CheckpointError: no ``config`` and the checkpoint carries none (e.g. a bare state dict).
        ConfigError: the config file or the stored values are invalid.
    """
    if config is not None:
        cfg = config if isinstance(config, Config) else resolve_paths(load_config(config))
        return ModelSpec(cfg.model, cfg.data.height, cfg.data.width)
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{source}: carries no config (a bare state dict?): pass the training config "
                              "(config= / --config) to say which network and image size it needs")
    data, model = stored.get("data") or {}, stored.get("model") or {}
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {"data": {k: data[k] for k in ("height", "width") if k in data},
              "model": {k: v for k, v in model.items() if k in model_keys}}
    cfg = config_from_dict(values, source=f"{source} (stored config)")
    return ModelSpec(cfg.model, cfg.data.height, cfg.data.width)


def build_from_checkpoint(checkpoint: str | os.PathLike, config: str | os.PathLike | Config | None = None
                          ) -> tuple[ReidNet, ModelSpec]:
    """Rebuild the trained network of ``checkpoint`` on the CPU, in eval mode, and its :class:`ModelSpec`.

    Example: ``model, spec = build_from_checkpoint("outputs/demo/checkpoints/final.pt")``.
    """
    state = load_checkpoint(checkpoint)
    spec = model_spec(state, config, source=str(checkpoint))
    m = spec.model
    model = model_from(m, pretrained="none")
    load_model_weights(model, state, str(checkpoint), skip_classifier=True)
    return model.eval(), spec


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReidError(f"device: '{device}' requested but CUDA is not available (use 'auto' or 'cpu')")
    return device


class _Images(Dataset):
    """Paths or PIL images -> ``(image tensor, 0, 0, index)``, the item layout of the test loaders."""

    def __init__(self, images: Sequence[ImageInput], transform: Callable) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple:
        image = self.images[index]
        image = image.convert("RGB") if isinstance(image, Image.Image) else read_image(image)
        return self.transform(image), 0, 0, index


class FeatureExtractor:
    """Embed images with a trained checkpoint: ``extractor(images)`` -> (N, D) float32 CPU tensor, L2-normalised.

    Args:
        checkpoint: a checkpoint written by ``reid-train`` (or a bare state dict, with ``config``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        config: the training config (YAML path or :class:`~reid.config.Config`); overrides the checkpoint's
            stored config, needed only for checkpoints without one.
        batch_size: images per forward pass.
        workers: DataLoader processes decoding images (0: in this process).
        flip: average each embedding with that of the mirrored image (evaluation's ``--flip``).

    Inputs are image paths and/or PIL images (any mode; converted to RGB), resized to the training size and
    normalised as in evaluation. Returns a torch tensor; call ``.numpy()`` for numpy.

    Raises:
        CheckpointError: missing or unreadable checkpoint, or one that does not fit its config.
        DatasetError: (at call) an image path that cannot be read.

    Example::

        >>> extractor = FeatureExtractor("final.pt")
        >>> extractor(["a.jpg", "b.jpg"]) @ extractor(["c.jpg"]).T    # cosine similarities, (2, 1)
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
                 config: str | os.PathLike | Config | None = None, batch_size: int = 64, workers: int = 0,
                 flip: bool = False) -> None:
        self.device = resolve_device(device)
        model, self.spec = build_from_checkpoint(checkpoint, config)
        self.model = model.to(self.device)
        self.batch_size, self.workers, self.flip = batch_size, workers, flip
        self.transform = build_transforms(self.spec.height, self.spec.width, is_train=False)

    @property
    def feature_dim(self) -> int:
        """D, the size of one embedding."""
        return self.model.feat_dim

    def __call__(self, images: Sequence[ImageInput] | ImageInput,
                 progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Embed ``images`` (one or a sequence) -> (N, D) float32 CPU tensor, rows L2-normalised, input order.

        ``progress(n)`` is called after each batch of ``n`` images (e.g. ``tqdm.update``).
        """
        if isinstance(images, str | os.PathLike | Image.Image):
            images = [images]
        images = list(images)
        if not images:
            return torch.empty(0, self.feature_dim)
        loader = DataLoader(_Images(images, self.transform), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        batches = loader if progress is None else _reporting(loader, progress)
        features, _, _ = extract_features(self.model, batches, self.device, flip=self.flip)
        return features


def _reporting(batches: Iterable, progress: Callable[[int], None]) -> Iterator:
    for batch in batches:
        yield batch
        progress(len(batch[0]))
