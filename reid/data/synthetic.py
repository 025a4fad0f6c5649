"""Two synthetic pedestrian domains, ``synth-a`` and ``synth-b``, written in Market-1501 layout.

They are the built-in default data: small, made in seconds, with no download. Each identity is a sampled
combination of parts (upper clothing colour and pattern, lower garment, skin, hair, build, shoes, bag, hat)
drawn from a small colour palette, so many people share a colour and only the combination tells them apart.
Every image adds viewpoint, scale/crop jitter, stride, occlusion, lighting, a per-camera colour cast and a
per-camera background. The domains differ in camera count, colour cast, saturation, backgrounds, sharpness and
resolution, so a model trained on one loses accuracy on the other.

Example::

    root = ensure_synthetic("synth-a", "data/synthetic/synth-a", num_train_ids=200, num_test_ids=100)
    # root/bounding_box_train/0001_c3s1_000002_01.jpg ...

Output is deterministic: each image has its own RNG seeded from (seed, domain, identity, image index), so the
bytes do not depend on generation order.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from reid.errors import ConfigError, DatasetError

__all__ = [
    "DOMAINS",
    "DomainStyle",
    "Identity",
    "ImageSpec",
    "ensure_synthetic",
    "generate_domain",
    "plan_domain",
    "render_contact_sheet",
    "render_image",
    "sample_identity",
    "split_counts",
]

GENERATOR_VERSION = 2  # 2: milder synth-b camera gains / cast (v1's gap left pseudo-labels ~10% precise)
IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
JPEG_QUALITY = 90
SUPERSAMPLE = 2  # draw at 2x, then box-downsample: cheap anti-aliasing
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
COMPLETE_MARKER = ".complete"  # written last: its absence means a half-written folder
OWNER_MARKER = ".synthetic"  # written first: lets us wipe a folder we made, and only such a folder
FILE_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s\d_\d{6}_\d{2}\.jpg$")

RGB = tuple[int, int, int]
# Seed-sequence tags: keep the RNG streams of identities, images, cameras and distractors apart.
_TAG_IDENTITY, _TAG_IMAGE, _TAG_CAMERA, _TAG_DISTRACTOR, _TAG_JUNK = 11, 12, 13, 14, 15


@dataclass(frozen=True)
class DomainStyle:
    """How one synthetic domain looks: cameras, colour, backgrounds and image quality.

    Args:
        index: enters every seed, so two domains hold different people.
        num_cameras: camera ids are 1..num_cameras.
        colour_cast: (3,) RGB gains for the whole domain.
        camera_cast_jitter: each camera multiplies the cast by 1 + U(-j, j) per channel.
        saturation: 1 keeps colours, 0 makes grey.
        camera_gains: brightness gain per camera (length num_cameras).
        camera_contrasts: contrast gain around mid-grey per camera (length num_cameras).
        scene: "urban" (wall + pavement) or "outdoor" (foliage + grass/dirt).
        wall_colours, ground_colours: each camera picks one of each.
        blur_radius: Gaussian blur radius in output pixels (0: sharp).
        render_height: height the image is rendered at before upscaling to 128 (128: no resolution loss).
        noise_std: per-pixel Gaussian noise, in 0-255 units.
        occlusion_prob: probability that an image gets an occluder.
    """

    index: int
    num_cameras: int
    colour_cast: tuple[float, float, float]
    camera_cast_jitter: float
    saturation: float
    camera_gains: tuple[float, ...]
    camera_contrasts: tuple[float, ...]
    scene: str
    wall_colours: tuple[RGB, ...]
    ground_colours: tuple[RGB, ...]
    blur_radius: float
    render_height: int
    noise_std: float
    occlusion_prob: float


DOMAINS: dict[str, DomainStyle] = {
    "synth-a": DomainStyle(
        index=1,
        num_cameras=6,
        colour_cast=(1.0, 1.0, 1.0),
        camera_cast_jitter=0.04,
        saturation=1.0,
        camera_gains=(1.0, 0.93, 1.06, 0.97, 0.9, 1.03),
        camera_contrasts=(1.0, 0.95, 1.03, 0.93, 1.0, 0.97),
        scene="urban",
        wall_colours=((200, 200, 198), (176, 178, 182), (214, 208, 198), (160, 162, 160), (190, 186, 180)),
        ground_colours=((150, 150, 150), (128, 126, 124), (170, 168, 164), (140, 140, 146)),
        blur_radius=0.0,
        render_height=128,
        noise_std=4.0,
        occlusion_prob=0.25,
    ),
    "synth-b": DomainStyle(
        index=2,
        num_cameras=8,
        colour_cast=(1.1, 1.02, 0.8),
        camera_cast_jitter=0.05,
        saturation=0.75,
        camera_gains=(0.94, 1.08, 0.9, 1.0, 1.1, 0.92, 1.04, 0.88),
        camera_contrasts=(0.9, 1.05, 0.95, 0.88, 1.0, 1.08, 0.92, 0.97),
        scene="outdoor",
        wall_colours=((70, 110, 50), (95, 120, 60), (110, 95, 60), (60, 90, 55), (120, 110, 80)),
        ground_colours=((120, 95, 60), (90, 120, 60), (140, 115, 80), (100, 85, 55)),
        blur_radius=0.6,
        render_height=64,
        noise_std=6.0,
        occlusion_prob=0.3,
    ),
}


@dataclass(frozen=True)
class ImageSpec:
    """One image to write. ``pid`` is -1 for junk, 0 for a distractor; ``key`` seeds its RNG."""

    split: str
    pid: int
    camid: int
    frame: int
    key: tuple[int, ...]

    @property
    def file_name(self) -> str:
        pid = "-1" if self.pid < 0 else f"{self.pid:04d}"
        return f"{pid}_c{self.camid}s1_{self.frame:06d}_01.jpg"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _domain_style(name: str) -> DomainStyle:
    if name not in DOMAINS:
        close = difflib.get_close_matches(name, DOMAINS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(DOMAINS)})"
        raise ConfigError(f"unknown synthetic domain '{name}'{hint}")
    return DOMAINS[name]


# ------------------------------------------------------------------------------------------------ people
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


def _draw_upper_pattern(
    draw: ImageDraw.ImageDraw, person: Identity, view: str, box: tuple[float, float, float, float]
) -> None:
    x0, y0, x1, y1 = box
    second = person.upper_second
    if person.upper_pattern == "stripes":
        band = (y1 - y0) / 7
        for i in range(1, 7, 2):
            draw.rectangle((x0, y0 + i * band, x1, y0 + (i + 1) * band), fill=second)
    elif person.upper_pattern == "checks":
        cell = (x1 - x0) / 4
        for row in range(int((y1 - y0) / cell) + 1):
            for col in range(4):
                if (row + col) % 2:
                    draw.rectangle(
                        (
                            x0 + col * cell,
                            y0 + row * cell,
                            x0 + (col + 1) * cell,
                            min(y0 + (row + 1) * cell, y1),
                        ),
                        fill=second,
                    )
    elif person.upper_pattern == "split":  # the person's left half is the second colour
        mid = (x0 + x1) / 2
        if view == "front":
            draw.rectangle((mid, y0, x1, y1), fill=second)
        elif view == "back":
            draw.rectangle((x0, y0, mid, y1), fill=second)
        elif view == "right":  # profile walking right: the person's left side faces the camera
            draw.rectangle(box, fill=second)
    elif person.upper_pattern == "logo" and view == "front":
        size = (x1 - x0) * 0.4
        cx, cy = (x0 + x1) / 2, y0 + (y1 - y0) * 0.35
        draw.rectangle((cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), fill=second)


def draw_person(
    draw: ImageDraw.ImageDraw,
    person: Identity,
    view: str,
    centre_x: float,
    top: float,
    height: float,
    stride: float,
) -> None:
    """Draw ``person`` standing in a box of ``height`` px with its top at ``top``.

    Args:
        view: "front", "back", "left" or "right" (profile walking towards that side).
        stride: -1..1, how far apart the feet are (walking phase).
    """
    h, cx = height, centre_x
    side = view in ("left", "right")
    facing = 1.0 if view == "right" else -1.0
    head_r = 0.062 * h
    head_cy = top + head_r
    shoulder_y = top + 2 * head_r + 0.012 * h
    foot_y = top + h - 0.03 * h
    hip_y = top + h - person.leg_ratio * h
    half_w = (0.1 if side else 0.15) * h * person.width
    limb = max(2.0, 0.055 * h * person.width)
    torso = (cx - half_w, shoulder_y + 0.02 * h, cx + half_w, hip_y)

    if person.long_hair and view == "front":  # hair falling behind the shoulders
        draw.rectangle(
            (cx - 1.1 * head_r, head_cy, cx + 1.1 * head_r, shoulder_y + 0.1 * h), fill=person.hair
        )
    if person.bag == "backpack" and side:
        back_x = cx - facing * half_w
        draw.rectangle(
            (
                min(back_x, back_x - facing * 0.07 * h),
                shoulder_y + 0.03 * h,
                max(back_x, back_x - facing * 0.07 * h),
                hip_y - 0.03 * h,
            ),
            fill=person.bag_colour,
        )

    # legs: (hip x, foot x) per leg; the lower garment covers hip..knee (shorts) or hip..foot (trousers)
    if side:
        reach = np.sin(0.45 * stride) * person.leg_ratio * h
        legs = [(cx, cx + reach), (cx, cx - reach)]
    else:
        spread = 0.45 * half_w
        legs = [
            (cx - spread, cx - spread - 0.02 * h * stride),
            (cx + spread, cx + spread + 0.02 * h * stride),
        ]
    for hip_x, foot_x in legs:
        draw.line(
            (hip_x, hip_y, foot_x, foot_y),
            fill=person.skin if person.lower_type != "trousers" else person.lower,
            width=int(limb),
        )
        if person.lower_type == "shorts":
            draw.line(
                (hip_x, hip_y, hip_x + 0.45 * (foot_x - hip_x), hip_y + 0.45 * (foot_y - hip_y)),
                fill=person.lower,
                width=int(limb * 1.15),
            )
        shoe_front = 0.05 * h * facing if side else 0.0
        draw.ellipse(
            (
                foot_x - limb * 0.7 + min(0, shoe_front),
                foot_y - 0.02 * h,
                foot_x + limb * 0.7 + max(0, shoe_front),
                foot_y + 0.025 * h,
            ),
            fill=person.shoes,
        )
    if person.lower_type == "skirt":
        flare = half_w * (1.35 if not side else 1.6)
        skirt_bottom = hip_y + 0.45 * person.leg_ratio * h
        draw.polygon(
            [
                (cx - half_w, hip_y - 1),
                (cx + half_w, hip_y - 1),
                (cx + flare, skirt_bottom),
                (cx - flare, skirt_bottom),
            ],
            fill=person.lower,
        )
    else:
        draw.rectangle((cx - half_w, hip_y - 1, cx + half_w, hip_y + 0.06 * h), fill=person.lower)

    # torso and its pattern
    draw.polygon(
        [
            (cx - 0.8 * half_w, shoulder_y),
            (cx + 0.8 * half_w, shoulder_y),
            (cx + half_w, torso[1]),
            (cx + half_w, hip_y),
            (cx - half_w, hip_y),
            (cx - half_w, torso[1]),
        ],
        fill=person.upper,
    )
    _draw_upper_pattern(draw, person, view, torso)
    if person.bag == "backpack":
        if view == "back":
            draw.rectangle(
                (cx - 0.75 * half_w, shoulder_y + 0.03 * h, cx + 0.75 * half_w, hip_y - 0.03 * h),
                fill=person.bag_colour,
            )
        elif view == "front":
            for x in (cx - 0.55 * half_w, cx + 0.55 * half_w):
                draw.line(
                    (x, shoulder_y, x, shoulder_y + 0.14 * h),
                    fill=person.bag_colour,
                    width=max(1, int(limb / 3)),
                )

    # arms
    arm_len = 0.36 * h
    sleeve = 0.35 if person.short_sleeves else 1.0
    if side:
        swing = -0.5 * stride
        arms = [(cx, cx + np.sin(swing) * arm_len)]
    else:
        arms = [
            (cx - half_w - limb / 2, cx - half_w - limb / 2 - 0.01 * h),
            (cx + half_w + limb / 2, cx + half_w + limb / 2 + 0.01 * h),
        ]
    for shoulder_x, hand_x in arms:
        hand_y = shoulder_y + 0.02 * h + np.sqrt(max(arm_len**2 - (hand_x - shoulder_x) ** 2, 1.0))
        top_y = shoulder_y + 0.02 * h
        draw.line((shoulder_x, top_y, hand_x, hand_y), fill=person.skin, width=int(limb))
        draw.line(
            (
                shoulder_x,
                top_y,
                shoulder_x + sleeve * (hand_x - shoulder_x),
                top_y + sleeve * (hand_y - top_y),
            ),
            fill=person.upper,
            width=int(limb * 1.1),
        )

    # shoulder bag: the person's own side, seen from the front mirrored; in profile only from its side
    bag_side = {"left": 1.0, "right": -1.0}.get(person.bag)
    if bag_side is not None:
        visible = not side or (view == "right") == (person.bag == "left")
        if visible:
            screen_side = bag_side if view == "front" else -bag_side
            bag_x = cx if side else cx + screen_side * (half_w + 0.05 * h)
            draw.rectangle(
                (bag_x - 0.05 * h, hip_y - 0.08 * h, bag_x + 0.05 * h, hip_y + 0.05 * h),
                fill=person.bag_colour,
            )
            if not side:
                draw.line(
                    (cx - screen_side * 0.8 * half_w, shoulder_y, bag_x, hip_y - 0.08 * h),
                    fill=person.bag_colour,
                    width=max(1, int(limb / 3)),
                )

    # head, hair, hat
    head = (cx - 0.85 * head_r, top, cx + 0.85 * head_r, top + 2 * head_r)
    draw.ellipse(head, fill=person.skin)
    if view == "back":
        draw.ellipse(head, fill=person.hair)
        if person.long_hair:
            draw.rectangle(
                (cx - 0.9 * head_r, head_cy, cx + 0.9 * head_r, shoulder_y + 0.1 * h), fill=person.hair
            )
    else:
        draw.pieslice((head[0] - 1, head[1] - 1, head[2] + 1, head[3]), 180, 360, fill=person.hair)
        if side:  # back of the head
            back = cx - facing * 0.85 * head_r
            draw.rectangle(
                (
                    min(back, cx),
                    head_cy - head_r * 0.2,
                    max(back, cx),
                    head_cy + head_r * (1.6 if person.long_hair else 0.5),
                ),
                fill=person.hair,
            )
    if person.hat is not None:
        draw.rectangle((head[0], top - 0.2 * head_r, head[2], head_cy - 0.3 * head_r), fill=person.hat)
        brim = (
            (head[0] - 0.3 * head_r, head[2] + 0.3 * head_r)
            if not side
            else (min(cx, cx + facing * 1.5 * head_r), max(cx, cx + facing * 1.5 * head_r))
        )
        draw.rectangle((brim[0], head_cy - 0.45 * head_r, brim[1], head_cy - 0.25 * head_r), fill=person.hat)


def draw_occluder(
    draw: ImageDraw.ImageDraw, width: int, height: int, ground: np.ndarray, rng: np.random.Generator
) -> None:
    """Cover up to ~30% of the canvas with a low wall, a pole or a car."""
    kind = rng.choice(["wall", "pole", "car"])
    if kind == "wall":  # a low block in a background-ish colour
        colour = tuple(int(c) for c in np.clip(ground.astype(float) * rng.uniform(0.7, 1.2), 0, 255))
        draw.rectangle((0, height * (1 - rng.uniform(0.1, 0.3)), width, height), fill=colour)
    elif kind == "pole":
        pole_w, x = width * rng.uniform(0.08, 0.2), rng.uniform(0, width)
        shade = int(rng.integers(40, 110))
        draw.rectangle((x - pole_w / 2, 0, x + pole_w / 2, height), fill=(shade, shade, shade + 8))
    else:
        body = PALETTE[str(rng.choice(["white", "black", "grey", "red", "navy"]))]
        car_top = height * (1 - rng.uniform(0.15, 0.28))
        x0 = rng.uniform(-0.8, 0.2) * width
        draw.rounded_rectangle((x0, car_top, x0 + width * 1.2, height + 10), radius=width * 0.1, fill=body)
        draw.rectangle(
            (x0 + width * 0.2, car_top + 3, x0 + width * 0.6, car_top + height * 0.06), fill=(60, 70, 80)
        )


# ----------------------------------------------------------------------------------------------- planning
def _assign_cameras(rng: np.random.Generator, num_images: int, num_cameras: int) -> list[int]:
    """Camera per image: at least 2 cameras, at least 2 images on each (one query + one gallery)."""
    max_cams = min(num_cameras, num_images // 2)
    chosen = np.sort(rng.choice(num_cameras, size=int(rng.integers(2, max_cams + 1)), replace=False)) + 1
    cams = [int(c) for c in chosen for _ in range(2)]
    cams += [int(c) for c in rng.choice(chosen, size=num_images - len(cams))]
    return sorted(cams)


def plan_domain(
    style: DomainStyle, num_train_ids: int, num_test_ids: int, images_per_id: int, seed: int
) -> list[ImageSpec]:
    """Every image of a domain: split, pid, camera, frame and RNG key, in file-system order.

    Train pids are 1..num_train_ids, test pids follow (disjoint, as in Market-1501). Per test identity and
    camera the first image is the query and the rest go to the gallery, so every query has a cross-camera
    match. The gallery also holds ``max(2, num_test_ids // 5)`` distractors (pid 0) and as many junk images
    (pid -1).
    """
    rows: list[tuple[str, int, int, tuple[int, ...]]] = []
    for pid in range(1, num_train_ids + num_test_ids + 1):
        cams = _assign_cameras(_rng(seed, style.index, _TAG_CAMERA, pid), images_per_id, style.num_cameras)
        seen: set[int] = set()
        for image_index, cam in enumerate(cams):
            if pid <= num_train_ids:
                split = "bounding_box_train"
            else:
                split = "bounding_box_test" if cam in seen else "query"
            seen.add(cam)
            rows.append((split, pid, cam, (_TAG_IMAGE, pid, image_index)))
    num_extra = max(2, num_test_ids // 5)
    extra_rng = _rng(seed, style.index, _TAG_DISTRACTOR)
    for tag, pid in ((_TAG_DISTRACTOR, 0), (_TAG_JUNK, -1)):
        for index, cam in enumerate(extra_rng.integers(1, style.num_cameras + 1, size=num_extra)):
            rows.append(("bounding_box_test", pid, int(cam), (tag, index)))
    return [
        ImageSpec(split=split, pid=pid, camid=cam, frame=frame, key=key)
        for frame, (split, pid, cam, key) in enumerate(rows, start=1)
    ]


# ---------------------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=32)
def _camera_background(style: DomainStyle, camid: int) -> np.ndarray:
    """(H, W, 3) uint8 scene for one camera, several canvases wide, so each image crops a different part."""
    canvas_h = style.render_height * SUPERSAMPLE
    height, width = int(canvas_h * 1.4), canvas_h * 2
    rng = _rng(style.index, _TAG_CAMERA, camid)
    ground = np.array(style.ground_colours[int(rng.integers(len(style.ground_colours)))], np.float32)
    horizon = int(height * rng.uniform(0.5, 0.7))
    ramp = np.linspace(0.9, 1.1, height - horizon, dtype=np.float32)[:, None, None]
    image = np.empty((height, width, 3), np.float32)
    image[horizon:] = ground * ramp
    x = 0
    while x < width:  # wall / foliage in segments of different colour and shade
        segment = int(rng.uniform(0.3, 1.0) * canvas_h // 2)
        wall = np.array(style.wall_colours[int(rng.integers(len(style.wall_colours)))], np.float32)
        image[:horizon, x : x + segment] = wall * rng.uniform(0.8, 1.15)
        x += segment
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)

    def shade(colour: np.ndarray, low: float, high: float) -> RGB:
        return tuple(int(c) for c in np.clip(colour * rng.uniform(low, high, 3), 0, 255))

    if style.scene == "urban":
        for _ in range(int(width / canvas_h * 5)):  # windows, doors, posters
            x0, y0 = rng.uniform(0, width), rng.uniform(0, horizon * 0.8)
            w, h = rng.uniform(0.15, 0.4) * canvas_h / 2, rng.uniform(0.1, 0.3) * horizon
            colour = np.asarray(canvas.getpixel((int(x0), int(y0))), np.float32)
            draw.rectangle((x0, y0, x0 + w, min(y0 + h, horizon - 2)), fill=shade(colour, 0.45, 0.8))
        for y in range(horizon + 6, height, int(rng.integers(8, 16))):  # pavement joints
            draw.line((0, y, width, y), fill=shade(ground, 0.8, 0.9), width=1)
        draw.line((0, horizon, width, horizon), fill=shade(ground, 0.5, 0.6), width=3)
    else:
        for _ in range(int(width / canvas_h * 25)):  # foliage blobs
            x0, y0, r = rng.uniform(0, width), rng.uniform(0, horizon), rng.uniform(0.04, 0.12) * canvas_h
            wall = np.array(style.wall_colours[int(rng.integers(len(style.wall_colours)))], np.float32)
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=shade(wall, 0.6, 1.3))
        for _ in range(int(width / canvas_h * 2)):  # tree trunks
            x0 = rng.uniform(0, width)
            draw.rectangle(
                (x0, horizon * rng.uniform(0.2, 0.6), x0 + canvas_h * 0.04, horizon + 4),
                fill=shade(np.array([90.0, 65.0, 40.0]), 0.7, 1.1),
            )
        for _ in range(int(width / canvas_h * 2)):  # paths and patches of the other ground colour
            x0 = rng.uniform(0, width)
            other = np.array(style.ground_colours[int(rng.integers(len(style.ground_colours)))], np.float32)
            draw.polygon(
                [
                    (x0 - 8, horizon),
                    (x0 + 8, horizon),
                    (x0 + canvas_h * 0.4, height),
                    (x0 - canvas_h * 0.4, height),
                ],
                fill=shade(other, 0.9, 1.25),
            )
    texture = rng.normal(0.0, 7.0 if style.scene == "outdoor" else 3.0, (height, width, 1)).astype(np.float32)
    return np.clip(np.asarray(canvas, np.float32) + texture, 0, 255).astype(np.uint8)


def _camera_cast(style: DomainStyle, camid: int) -> np.ndarray:
    jitter = _rng(style.index, _TAG_CAMERA, camid, 1).uniform(-1, 1, 3) * style.camera_cast_jitter
    return np.asarray(style.colour_cast, np.float32) * (1.0 + jitter.astype(np.float32))


def _viewpoint(rng: np.random.Generator, camid: int) -> str:
    """Each camera mostly sees one side of people (front, back or profile), as a fixed camera over a path."""
    dominant = ("front", "back", "side")[camid % 3]
    view = dominant if rng.random() < 0.55 else str(rng.choice(["front", "back", "side"]))
    return view if view != "side" else str(rng.choice(["left", "right"]))


def render_image(
    style: DomainStyle, person: Identity | None, camid: int, rng: np.random.Generator, junk: bool = False
) -> Image.Image:
    """Render one 128x64 RGB image of ``person`` seen by camera ``camid`` (background only when None).

    ``junk`` renders a bad detection: the person far too large and shifted, so only a part is visible.
    """
    canvas_h = style.render_height * SUPERSAMPLE
    canvas_w = canvas_h // 2
    background = _camera_background(style, camid)
    y0 = int(rng.integers(0, background.shape[0] - canvas_h + 1))
    x0 = int(rng.integers(0, background.shape[1] - canvas_w + 1))
    canvas = Image.fromarray(background[y0 : y0 + canvas_h, x0 : x0 + canvas_w])
    draw = ImageDraw.Draw(canvas)
    if person is not None:
        height = canvas_h * (rng.uniform(1.5, 2.5) if junk else rng.uniform(0.7, 1.0))
        top = rng.uniform(-0.6 * height, 0.0) if junk else rng.uniform(0.0, canvas_h - height)
        centre_x = canvas_w * (0.5 + rng.normal(0.0, 0.25 if junk else 0.07))
        draw_person(
            draw,
            jitter_identity(person, rng),
            _viewpoint(rng, camid),
            centre_x,
            top,
            height,
            stride=float(rng.uniform(-1.0, 1.0)),
        )
    if rng.random() < style.occlusion_prob:
        draw_occluder(draw, canvas_w, canvas_h, background[-1, canvas_w // 2], rng)

    canvas = canvas.reduce(SUPERSAMPLE)
    if style.blur_radius > 0:
        blur = style.blur_radius * style.render_height / IMAGE_HEIGHT
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(canvas, np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + style.saturation * (pixels - grey)
    pixels = pixels * _camera_cast(style, camid)
    contrast = style.camera_contrasts[camid - 1] * rng.uniform(0.93, 1.07)
    gain = style.camera_gains[camid - 1] * rng.uniform(0.9, 1.1)
    pixels = ((pixels - 128.0) * contrast + 128.0) * gain
    pixels += rng.normal(0.0, style.noise_std, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    if image.height != IMAGE_HEIGHT:  # resolution loss: rendered small, upscaled like a low-res detection
        image = image.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return image


def _render_spec(style: DomainStyle, spec: ImageSpec, seed: int) -> Image.Image:
    tag, identity_index = spec.key[0], spec.key[1]
    if tag == _TAG_IMAGE:
        person = sample_identity(_rng(seed, style.index, _TAG_IDENTITY, identity_index))
    else:  # distractors and junk: a one-off person each
        person = sample_identity(_rng(seed, style.index, tag, identity_index, 0))
    rng = _rng(seed, style.index, *spec.key)
    if tag == _TAG_JUNK and rng.random() < 0.3:
        person = None
    return render_image(style, person, spec.camid, rng, junk=tag == _TAG_JUNK)


# ------------------------------------------------------------------------------------------ writing, API
def _params(name: str, num_train_ids: int, num_test_ids: int, images_per_id: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "domain": name,
        "num_train_ids": num_train_ids,
        "num_test_ids": num_test_ids,
        "images_per_id": images_per_id,
        "seed": seed,
    }


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def generate_domain(
    name: str,
    root: str | Path,
    num_train_ids: int = 200,
    num_test_ids: int = 100,
    images_per_id: int = 12,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write domain ``name`` to ``root`` in Market-1501 layout and return ``root``.

    Fast path: if ``root/.complete`` records the same parameters, nothing is written. A folder without that
    marker (half-written) is regenerated. A complete folder made with other parameters is only replaced with
    ``overwrite=True`` (``ensure_synthetic`` does that for you). A non-empty folder not made by this generator
    is never touched.

    Args:
        name: "synth-a" or "synth-b".
        num_train_ids, num_test_ids: identities per split (disjoint pids).
        images_per_id: images per identity, >= 4 (two cameras, each with a query and a gallery image).
        seed: same seed, same bytes.
    """
    style = _domain_style(name)
    if num_train_ids < 1 or num_test_ids < 1 or num_train_ids + num_test_ids > 9999:
        raise ConfigError(
            f"need 1 <= num_train_ids, num_test_ids and a total <= 9999, "
            f"got {num_train_ids} and {num_test_ids}"
        )
    if images_per_id < 4:
        raise ConfigError(f"images_per_id must be >= 4 (2 cameras x query + gallery), got {images_per_id}")
    root = Path(root)
    params = _params(name, num_train_ids, num_test_ids, images_per_id, seed)
    marker = _read_marker(root)
    if marker is not None and not overwrite:
        if marker.get("params") == params:
            return root
        raise DatasetError(
            f"{root} holds synthetic data made with other parameters ({marker.get('params')}); "
            f"use ensure_synthetic() or overwrite=True to regenerate"
        )
    if root.is_dir() and any(root.iterdir()) and not (root / OWNER_MARKER).exists():
        raise DatasetError(
            f"refusing to write synthetic data into {root}: it is not empty and was not made by "
            f"the synthetic generator"
        )

    root.mkdir(parents=True, exist_ok=True)
    (root / COMPLETE_MARKER).unlink(missing_ok=True)
    (root / OWNER_MARKER).write_text("written by reid.data.synthetic\n")
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
        (root / split).mkdir()
    specs = plan_domain(style, num_train_ids, num_test_ids, images_per_id, seed)
    for spec in specs:
        _render_spec(style, spec, seed).save(
            root / spec.split / spec.file_name, format="JPEG", quality=JPEG_QUALITY
        )
    counts = split_counts(root)
    (root / COMPLETE_MARKER).write_text(
        json.dumps({"params": params, "counts": counts, "style": asdict(style)}, indent=1, sort_keys=True)
    )
    return root


def ensure_synthetic(name: str, root: str | Path, **params: int) -> Path:
    """Generate domain ``name`` at ``root`` if it is missing, half-written or made with other ``params``.

    ``params`` are the keyword arguments of :func:`generate_domain` (num_train_ids, num_test_ids,
    images_per_id, seed). Returns ``root``.
    """
    unknown = set(params) - {"num_train_ids", "num_test_ids", "images_per_id", "seed"}
    if unknown:
        raise ConfigError(f"unknown synthetic data parameter(s): {', '.join(sorted(unknown))}")
    marker = _read_marker(Path(root))
    try:
        return generate_domain(name, root, **params)
    except DatasetError:
        if marker is None:  # not ours: do not overwrite
            raise
        return generate_domain(name, root, overwrite=True, **params)


def split_counts(root: str | Path) -> dict[str, int]:
    """Number of JPEG files per Market split folder under ``root``."""
    return {split: sum(1 for _ in (Path(root) / split).glob("*.jpg")) for split in SPLITS}


def render_contact_sheet(
    roots: dict[str, Path], path: str | Path, ids_per_domain: int = 8, images_per_id: int = 4
) -> Path:
    """Save a PNG grid: per domain, ``ids_per_domain`` test identities as columns of ``images_per_id`` images.

    Images of one identity come from as many different cameras as there are. Returns ``path``.
    """
    gap, label_h = 4, 14
    font = ImageFont.load_default()
    panels = []
    for domain, root in roots.items():
        by_pid: dict[int, list[Path]] = {}
        for file in sorted((Path(root) / "query").glob("*.jpg")) + sorted(
            (Path(root) / "bounding_box_test").glob("*.jpg")
        ):
            match = FILE_NAME.match(file.name)
            if match and int(match.group(1)) > 0:
                by_pid.setdefault(int(match.group(1)), []).append(file)
        if not by_pid:
            raise DatasetError(f"no test images under {root}/query or {root}/bounding_box_test")
        width = ids_per_domain * (IMAGE_WIDTH + gap) + gap
        height = label_h * 2 + images_per_id * (IMAGE_HEIGHT + label_h) + gap
        panel = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(panel)
        draw.text(
            (gap, 1),
            f"{domain}  ({DOMAINS[domain].num_cameras} cameras)" if domain in DOMAINS else domain,
            fill="black",
            font=font,
        )
        for column, pid in enumerate(sorted(by_pid)[:ids_per_domain]):
            x = gap + column * (IMAGE_WIDTH + gap)
            draw.text((x, label_h + 1), f"id {pid}", fill="black", font=font)
            by_cam: dict[int, list[Path]] = {}
            for file in by_pid[pid]:
                by_cam.setdefault(int(FILE_NAME.match(file.name).group(2)), []).append(file)
            round_robin = [
                files[i] for i in range(images_per_id) for files in by_cam.values() if i < len(files)
            ]
            for row, file in enumerate(round_robin[:images_per_id]):
                y = label_h * 2 + row * (IMAGE_HEIGHT + label_h)
                panel.paste(Image.open(file).convert("RGB"), (x, y))
                draw.text(
                    (x, y + IMAGE_HEIGHT), f"c{FILE_NAME.match(file.name).group(2)}", fill="black", font=font
                )
        panels.append(panel)
    sheet = Image.new(
        "RGB",
        (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
        "white",
    )
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours without dithering: indistinguishable here and about a third of the bytes
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, format="PNG", optimize=True
    )
    return path
