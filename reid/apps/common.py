"""What the application commands share: finding images, camera rules, atomic writes, progress bars, options.

Images and cameras are read as the ``data.target: folder`` dataset reads them (:mod:`reid.data.folder`): folders
are searched recursively for *.jpg, *.jpeg, *.png (any case; hidden names skipped), sorted by relative path, and
``--camera-rule`` / ``--camera-regex`` mean what ``data.camera_rule`` / ``data.camera_regex`` mean:

- ``none``: no camera (an empty label);
- ``folder``: the first-level sub-folder of the given folder that holds the image (``gallery/cam3/day1/x.jpg`` ->
  ``cam3``; an image given as a file: the folder holding it);
- ``regex``: the one group of ``--camera-regex``, searched in the file name (``_c(\\d+)`` on
  ``0002_c1s1_000451_03.jpg`` -> ``1``); it must match every file.

Camera labels are strings; when every name is a number they are written as integers (``"01"`` -> ``"1"``), as the
folder dataset identifies them. Two images share a camera when their labels are equal.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from reid.data import folder as folder_dataset
from reid.errors import ConfigError, DatasetError

IMAGE_SUFFIXES = folder_dataset.IMAGE_SUFFIXES
CAMERA_RULES = folder_dataset.CAMERA_RULES


@dataclass(frozen=True)
class ImageFile:
    """An image to embed: its absolute ``path`` and the ``root`` folder it was found under (None: given as a file)."""

    path: Path
    root: Path | None


def find_images(inputs: Sequence[str | os.PathLike], role: str = "images") -> list[ImageFile]:
    """Image files named in ``inputs``: files as given, folders searched as :func:`reid.data.folder.find_images`
    searches them.

    Raises:
        DatasetError: an input does not exist, or no image is found.

    Example: ``find_images(["data/gallery"])`` -> ``[ImageFile(path=/abs/data/gallery/c1/0001.jpg,
    root=/abs/data/gallery), ...]``.
    """
    found: list[ImageFile] = []
    for entry in map(Path, inputs):
        # absolute, but symlinks kept as given: a linked file's camera (folder rule: the folder holding the
        # link; regex rule: the link's name) and its path are the link's, as the folder dataset reads them
        absolute = Path(os.path.abspath(entry))
        if entry.is_dir():
            found += [ImageFile(path, absolute) for path in folder_dataset.find_images(absolute)]
        elif entry.is_file():
            found.append(ImageFile(absolute, None))
        else:
            raise DatasetError(f"{role}: not found: {entry}")
    if not found:
        suffixes = ", ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        raise DatasetError(f"{role}: no images ({suffixes}) under {', '.join(map(str, inputs))}")
    return found


@dataclass(frozen=True)
class CameraRule:
    """How a camera label is read from an image path (see the module docstring)."""

    kind: str = "none"
    regex: str = ""


def camera_rule(kind: str | None, regex: str = "") -> CameraRule:
    """A validated rule; ``kind=None`` means ``regex`` when a regex is given, else ``none``.

    Raises:
        ConfigError: an unknown rule, or a regex without ``--camera-rule regex``.
        DatasetError: ``regex`` is empty, does not compile, or has not exactly one group (the folder dataset's check).
    """
    kind = kind or ("regex" if regex else "none")
    if kind not in CAMERA_RULES:
        raise ConfigError(f"--camera-rule: expected one of {', '.join(CAMERA_RULES)}, got {kind!r}")
    if kind != "regex" and regex:
        raise ConfigError(f"--camera-regex is only used with --camera-rule regex (got --camera-rule {kind})")
    if kind == "regex":
        folder_dataset._compile_camera_regex(regex)
    return CameraRule(kind, regex)


def cameras_of(images: Sequence[ImageFile], rule: CameraRule) -> list[str]:
    """The camera label of every image under ``rule`` ("" for ``none``).

    Raises:
        DatasetError: the rule finds no camera for some image (the folder dataset's message, naming one file).
    """
    if rule.kind == "none":
        return ["" for _ in images]
    groups: dict[Path | None, list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.root, []).append(index)
    names: list[str] = [""] * len(images)
    for root, indices in groups.items():
        paths = [images[i].path for i in indices]
        if rule.kind == "folder" and root is None:
            found = [path.parent.name for path in paths]
        elif rule.kind == "folder":
            found = folder_dataset._camera_names_from_folders(root, paths)
        else:
            pattern = folder_dataset._compile_camera_regex(rule.regex)
            found = folder_dataset._camera_names_from_regex(root or paths[0].parent, paths, pattern)
        for index, name in zip(indices, found):
            names[index] = name
    return [str(key) for key in folder_dataset.camera_keys(names)]


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(handle)`` into a temp file next to ``path``, fsync, then ``os.replace``: ``path`` is either the
    old file or the complete new one, whenever the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: Path) -> None:
    """Delete the temp files of :func:`write_atomic` left by a process killed while writing."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def progress_bar(total: int, quiet: bool, description: str) -> tqdm:
    """An images progress bar, off with ``--quiet`` or when the ``CI`` environment variable is set."""
    return tqdm(total=total, unit="img", desc=description, disable=quiet or bool(os.environ.get("CI")),
                dynamic_ncols=True)


def add_model_options(parser: argparse.ArgumentParser, checkpoint_help: str = "") -> None:
    """``--checkpoint`` (required unless ``checkpoint_help`` says what the default is), ``--config``,
    ``--device``, ``--batch-size``, ``--workers``."""
    parser.add_argument("--checkpoint", required=not checkpoint_help, default="",
                        help=checkpoint_help or "checkpoint written by reid-train (e.g. "
                                                "outputs/demo/checkpoints/final.pt)")
    parser.add_argument("--config", default="",
                        help="training config; only needed for a checkpoint that carries none (a bare state dict)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding processes (default 2; 0: none)")


def add_camera_options(parser: argparse.ArgumentParser, default_help: str = "none") -> None:
    parser.add_argument("--camera-rule", choices=CAMERA_RULES, default=None,
                        help=f"none | folder (the first-level sub-folder holding the image) | regex "
                             f"(default: {default_help}; as the config keys data.camera_rule / camera_regex)")
    parser.add_argument("--camera-regex", default="",
                        help=r"with --camera-rule regex: one group, searched in the file name, e.g. '_c(\d+)' "
                             "for Market-1501 names")
