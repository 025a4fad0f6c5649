"""Image transforms for re-ID training and testing (torchvision transforms v1, PIL in, tensor out).

Train: ``Resize((h, w))`` -> ``RandomHorizontalFlip`` -> ``Pad`` + ``RandomCrop((h, w))`` -> ``ToTensor`` ->
``Normalize`` -> ``RandomErasing``. Test: ``Resize((h, w))`` -> ``ToTensor`` -> ``Normalize``.

Random erasing (Zhong et al., AAAI 2020) is torchvision's ``RandomErasing(p, scale=(0.02, 0.4),
ratio=(0.3, 3.3), value=0)`` placed after ``Normalize``: a 0 in normalised space is the mean colour, so the
erased rectangle is filled with the ImageNet mean pixel, as in the re-ID reference implementations.

The random transforms draw from torch's CPU generator; :class:`reid.data.loaders.ImageDataset` gives them a
private, seeded stream so augmentation is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    height: int,
    width: int,
    is_train: bool,
    flip_prob: float = 0.5,
    pad: int = 10,
    random_erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """The train or test transform: PIL RGB image -> ``(3, height, width)`` float32 tensor, normalised.

    Args:
        height, width: output size in pixels (e.g. 256, 128).
        is_train: add flip, pad + random crop and random erasing.
        flip_prob: probability of a horizontal flip (train only; 0 disables it).
        pad: zero padding in pixels on each side before the random crop back to ``(height, width)``
            (train only; 0 disables pad and crop).
        random_erasing_prob: probability of erasing one rectangle (train only; 0 disables it).
        mean, std: per-channel normalisation of the ``[0, 1]`` tensor.

    Example::

        >>> transform = build_transforms(256, 128, is_train=False)
        >>> transform(read_image("0002_c1s1_000451_03.jpg")).shape
        torch.Size([3, 256, 128])
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    for prob_name, prob in (("flip_prob", flip_prob), ("random_erasing_prob", random_erasing_prob)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{prob_name} must be in [0, 1], got {prob}")

    steps: list = [T.Resize((height, width))]
    if is_train and flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(p=flip_prob))
    if is_train and pad > 0:
        steps += [T.Pad(pad), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if is_train and random_erasing_prob > 0:
        steps.append(T.RandomErasing(p=random_erasing_prob, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0))
    return T.Compose(steps)
