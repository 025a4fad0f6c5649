"""Writing a synthetic domain in Market-1501 layout: the plan of its images, rendering each, folder markers.

:func:`plan_domain` lists every image (split, pid, camera, frame, RNG key); :func:`render_image` makes one
(background crop, person, occluder, then the domain's blur, colour and noise); :func:`generate_domain` writes
them all; :func:`ensure_synthetic` does that only when the folder is missing, half-written or made with other
parameters.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from reid.errors import ConfigError, DatasetError
from reid.synthetic.drawing import draw_occluder, draw_person
from reid.synthetic.identity import Identity, jitter_identity, sample_identity
from reid.synthetic.style import (
    DOMAINS,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    SUPERSAMPLE,
    TAG_CAMERA,
    TAG_DISTRACTOR,
    TAG_IDENTITY,
    TAG_IMAGE,
    TAG_JUNK,
    DomainStyle,
    camera_background,
    camera_cast,
    domain_style,
    seeded_rng,
)

GENERATOR_VERSION = 2  # 2: milder synth-b camera gains / cast (v1's gap left pseudo-labels ~10% precise)
JPEG_QUALITY = 90
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
COMPLETE_MARKER = ".complete"  # written last: its absence means a half-written folder
OWNER_MARKER = ".synthetic"  # written first: lets us wipe a folder we made, and only such a folder
FILE_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s\d_\d{6}_\d{2}\.jpg$")


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
        camera_rng = seeded_rng(seed, style.index, TAG_CAMERA, pid)
        cams = _assign_cameras(camera_rng, images_per_id, style.num_cameras)
        seen: set[int] = set()
        for image_index, cam in enumerate(cams):
            if pid <= num_train_ids:
                split = "bounding_box_train"
            else:
                split = "bounding_box_test" if cam in seen else "query"
            seen.add(cam)
            rows.append((split, pid, cam, (TAG_IMAGE, pid, image_index)))
    num_extra = max(2, num_test_ids // 5)
    extra_rng = seeded_rng(seed, style.index, TAG_DISTRACTOR)
    for tag, pid in ((TAG_DISTRACTOR, 0), (TAG_JUNK, -1)):
        for index, cam in enumerate(extra_rng.integers(1, style.num_cameras + 1, size=num_extra)):
            rows.append(("bounding_box_test", pid, int(cam), (tag, index)))
    return [
        ImageSpec(split=split, pid=pid, camid=cam, frame=frame, key=key)
        for frame, (split, pid, cam, key) in enumerate(rows, start=1)
    ]


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
    background = camera_background(style, camid)
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
    pixels = pixels * camera_cast(style, camid)
    contrast = style.camera_contrasts[camid - 1] * rng.uniform(0.93, 1.07)
    gain = style.camera_gains[camid - 1] * rng.uniform(0.9, 1.1)
    pixels = ((pixels - 128.0) * contrast + 128.0) * gain
    pixels += rng.normal(0.0, style.noise_std, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    if image.height != IMAGE_HEIGHT:  # resolution loss: rendered small, upscaled like a low-res detection
        image = image.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return image


def _render_spec(style: DomainStyle, spec: ImageSpec, seed: int) -> Image.Image:
    """The image ``spec`` names: its person (or none, for some junk) drawn with its own RNG stream."""
    tag, identity_index = spec.key[0], spec.key[1]
    if tag == TAG_IMAGE:
        person = sample_identity(seeded_rng(seed, style.index, TAG_IDENTITY, identity_index))
    else:  # distractors and junk: a one-off person each
        person = sample_identity(seeded_rng(seed, style.index, tag, identity_index, 0))
    rng = seeded_rng(seed, style.index, *spec.key)
    if tag == TAG_JUNK and rng.random() < 0.3:
        person = None
    return render_image(style, person, spec.camid, rng, junk=tag == TAG_JUNK)


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
    log: Callable[[str], None] | None = None,
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
        log: called with one line (the domain, the folder and why) before anything is written, so that a
            mistyped ``data.*_root`` shows where the data went.
    """
    style = domain_style(name)
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

    if log is not None:
        why = ("other parameters" if marker is not None else
               "empty or half-written" if root.is_dir() else "missing")
        log(f"generating synthetic domain {name} into {root} ({why}; ~30 s)")
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


def ensure_synthetic(name: str, root: str | Path, log: Callable[[str], None] | None = None, **params: int) -> Path:
    """Generate domain ``name`` at ``root`` if it is missing, half-written or made with other ``params``.

    ``params`` are the keyword arguments of :func:`generate_domain` (num_train_ids, num_test_ids,
    images_per_id, seed); ``log`` as there. Returns ``root``.
    """
    unknown = set(params) - {"num_train_ids", "num_test_ids", "images_per_id", "seed"}
    if unknown:
        raise ConfigError(f"unknown synthetic data parameter(s): {', '.join(sorted(unknown))}")
    marker = _read_marker(Path(root))
    try:
        return generate_domain(name, root, log=log, **params)
    except DatasetError:
        if marker is None:  # not ours: do not overwrite
            raise
        return generate_domain(name, root, overwrite=True, log=log, **params)


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
