"""What stays fixed for one synthetic person across images (:class:`Identity`), and how it is sampled.

Each identity is a combination of parts (upper clothing colour and pattern, lower garment, skin, hair, build,
shoes, bag, hat) drawn from a small colour palette, so many people share a colour and only the combination
tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from reid.synthetic.style import RGB

PALETTE: dict[str, RGB] = {
    "black": (32, 32, 34),
    "white": (232, 232, 228),
    "grey": (128, 128, 130),
    "red": (185, 35, 40),
    "navy": (35, 45, 105),
    "blue": (95, 145, 210),
    "green": (45, 125, 65),
    "yellow": (225, 195, 50),
    "brown": (115, 78, 48),
    "pink": (225, 140, 170),
    "purple": (110, 55, 135),
    "orange": (230, 120, 35),
}
_COLOUR_NAMES = tuple(PALETTE)
# Dark and neutral clothes are common, as in real footage: many people share an upper colour.
_UPPER_WEIGHTS = np.array([3, 2.5, 2, 1, 1.5, 1, 1, 0.7, 1, 0.7, 0.6, 0.6])
_LOWER_WEIGHTS = np.array([4, 1, 2, 0.3, 2.5, 2.5, 0.4, 0.2, 1.5, 0.3, 0.2, 0.1])
_SKIN_TONES: tuple[RGB, ...] = (
    (245, 208, 180),
    (225, 180, 140),
    (190, 140, 100),
    (140, 95, 65),
    (95, 65, 45),
)
_HAIR_COLOURS: tuple[RGB, ...] = ((25, 20, 18), (70, 45, 30), (130, 90, 50), (200, 170, 110), (150, 150, 150))
UPPER_PATTERNS = ("solid", "stripes", "split", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAG_TYPES = ("none", "left", "right", "backpack")


@dataclass(frozen=True)
class Identity:
    """What stays fixed for one person across images.

    Colours are RGB 0-255; sizes are fractions of the body height.
    """

    upper: RGB
    upper_second: RGB
    upper_pattern: str
    short_sleeves: bool
    lower: RGB
    lower_type: str
    skin: RGB
    hair: RGB
    long_hair: bool
    width: float  # torso width factor, ~0.8 (slim) to 1.2 (broad)
    leg_ratio: float  # leg length / body height
    shoes: RGB
    bag: str
    bag_colour: RGB
    hat: RGB | None


def _pick(rng: np.random.Generator, weights: np.ndarray | None = None, exclude: str = "") -> str:
    p = np.ones(len(_COLOUR_NAMES)) if weights is None else weights.astype(float).copy()
    if exclude:
        p[_COLOUR_NAMES.index(exclude)] = 0.0
    return str(rng.choice(_COLOUR_NAMES, p=p / p.sum()))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Sample one person's appearance. The same sampler serves every domain; the seed makes people differ."""
    upper = _pick(rng, _UPPER_WEIGHTS)
    lower_type = str(rng.choice(LOWER_TYPES, p=[0.65, 0.2, 0.15]))
    return Identity(
        upper=PALETTE[upper],
        upper_second=PALETTE[_pick(rng, exclude=upper)],
        upper_pattern=str(rng.choice(UPPER_PATTERNS, p=[0.4, 0.15, 0.15, 0.1, 0.2])),
        short_sleeves=bool(rng.random() < 0.4),
        lower=PALETTE[_pick(rng, _LOWER_WEIGHTS)],
        lower_type=lower_type,
        skin=_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))],
        hair=_HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))],
        long_hair=bool(rng.random() < (0.6 if lower_type == "skirt" else 0.25)),
        width=float(rng.uniform(0.8, 1.2)),
        leg_ratio=float(rng.uniform(0.44, 0.52)),
        shoes=PALETTE[str(rng.choice(["black", "white", "grey", "brown", "red", "blue"]))],
        bag=str(rng.choice(BAG_TYPES, p=[0.45, 0.15, 0.15, 0.25])),
        bag_colour=PALETTE[_pick(rng)],
        hat=PALETTE[_pick(rng)] if rng.random() < 0.2 else None,
    )


def jitter_identity(person: Identity, rng: np.random.Generator, amount: float = 14.0) -> Identity:
    """The same person with every colour moved by up to ``amount`` per channel (fabric, white balance)."""

    def shift(colour: RGB) -> RGB:
        return tuple(int(v) for v in np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 255))

    colours = ("upper", "upper_second", "lower", "skin", "hair", "shoes", "bag_colour")
    changes = {field: shift(getattr(person, field)) for field in colours}
    if person.hat is not None:
        changes["hat"] = shift(person.hat)
    return replace(person, **changes)
