"""How each synthetic domain looks: cameras, colour, backgrounds and image quality (:class:`DomainStyle`).

Also the image geometry and the seeding that the rest of :mod:`reid.synthetic` shares: every random stream is
a ``numpy`` generator seeded from a tuple of ints (seed, domain, tag, ...), so the bytes of an image do not
depend on the order in which images are made.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from reid.errors import ConfigError

IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
SUPERSAMPLE = 2  # draw at 2x, then box-downsample: cheap anti-aliasing

RGB = tuple[int, int, int]
# Seed-sequence tags: keep the RNG streams of identities, images, cameras and distractors apart.
TAG_IDENTITY, TAG_IMAGE, TAG_CAMERA, TAG_DISTRACTOR, TAG_JUNK = 11, 12, 13, 14, 15


def seeded_rng(*key: int) -> np.random.Generator:
    """The random stream of ``key`` (e.g. ``(seed, style.index, TAG_IMAGE, pid, image_index)``)."""
    return np.random.default_rng(np.random.SeedSequence(list(key)))


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


def domain_style(name: str) -> DomainStyle:
    """The style of domain ``name``; ConfigError with a did-you-mean for an unknown name."""
    if name not in DOMAINS:
        close = difflib.get_close_matches(name, DOMAINS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(DOMAINS)})"
        raise ConfigError(f"unknown synthetic domain '{name}'{hint}")
    return DOMAINS[name]


@lru_cache(maxsize=32)
def camera_background(style: DomainStyle, camid: int) -> np.ndarray:
    """(H, W, 3) uint8 scene for one camera, several canvases wide, so each image crops a different part."""
    canvas_h = style.render_height * SUPERSAMPLE
    height, width = int(canvas_h * 1.4), canvas_h * 2
    rng = seeded_rng(style.index, TAG_CAMERA, camid)
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


def camera_cast(style: DomainStyle, camid: int) -> np.ndarray:
    """(3,) float32 RGB gains of camera ``camid``: the domain's cast, jittered per camera."""
    jitter = seeded_rng(style.index, TAG_CAMERA, camid, 1).uniform(-1, 1, 3) * style.camera_cast_jitter
    return np.asarray(style.colour_cast, np.float32) * (1.0 + jitter.astype(np.float32))
