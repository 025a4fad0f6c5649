"""Your own cameras: an unlabelled folder of person images as the adaptation target (``data.target: folder``).

Train split: every ``*.jpg``, ``*.jpeg`` and ``*.png`` (any case) under ``root``, searched recursively (symlinked
files and folders followed; names starting with ``.`` skipped, e.g. macOS ``._x.jpg``), sorted by their path
relative to ``root``. There are no identities: every train pid is :data:`UNKNOWN_PID` (-1) and the dataset says
so with ``train_labelled=False``, so label-using diagnostics are skipped.

Camera ids, from ``camera_rule`` (:data:`CAMERA_RULES`):

- ``"none"``: every image camera 0 (the camera-aware options then fall back to their plain forms);
- ``"folder"``: the first-level sub-folder of ``root`` that holds the image (``root/cam3/2024-05-01/x.jpg`` ->
  ``cam3``), so a camera's images may be nested further; every image must sit in such a sub-folder;
- ``"regex"``: ``camera_regex``, a regular expression with exactly one group, searched in the file name
  (``re.search``, the name only, not its folders); the group's text names the camera. It must match every file.

Camera names are mapped to 0..C-1 in sorted order; when every name is a number (``"01"``, ``"2"``, ``"10"``) they
are compared, and identified, as integers: ``"01"`` and ``"1"`` are one camera, and ``"2"`` comes before ``"10"``.

Test split (optional): ``test_root``, a labelled folder in Market-1501 layout holding ``query/`` and
``bounding_box_test/`` (``PPPP_cC...jpg``), read as :func:`reid.data.datasets.build_dataset` reads them. Without
it, query and gallery are empty (``has_test_split`` is False) and nothing is evaluated.

Example::

    dataset = build_folder_dataset("my_cameras", camera_rule="folder")   # my_cameras/<camera>/**/*.jpg
    path, pid, camid = dataset.train[0]                                    # pid == -1
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from reid.data.datasets import MARKET_SPLIT_DIRS, Item, ReidDataset, _read_market_split
from reid.errors import DatasetError

CAMERA_RULES = ("none", "folder", "regex")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UNKNOWN_PID = -1
"""The train pid of every folder image: no identity is known."""


def build_folder_dataset(root: str | Path, camera_rule: str = "none", camera_regex: str = "",
                         test_root: str | Path | None = "", verbose: bool = False) -> ReidDataset:
    """Read an unlabelled image tree as a target dataset.

    Args:
        root: the folder of images (``data.target_root``).
        camera_rule: ``none`` | ``folder`` | ``regex`` (see the module docstring).
        camera_regex: with ``camera_rule="regex"``: a pattern with exactly one group, e.g. ``r"_c(\\d+)"``.
        test_root: optional Market-1501-layout folder with ``query/`` and ``bounding_box_test/``; ``""`` or None for none.
        verbose: print the split summary and the camera names with their ids.

    Returns:
        a :class:`~reid.data.datasets.ReidDataset` named ``"folder"``: ``train`` as ``(path, -1, camid)`` sorted
        by relative path, ``train_labelled=False``; ``query`` / ``gallery`` from ``test_root`` (empty without it).

    Raises:
        DatasetError: missing root or test folders, no image files, an unknown rule, a regex that does not compile
            or has not exactly one group, a rule that matches no file or only some files (one is named).
    """
    if camera_rule not in CAMERA_RULES:
        raise DatasetError(f"data.camera_rule: expected one of {', '.join(CAMERA_RULES)}, got {camera_rule!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root} (data.target_root with data.target: folder)")
    pattern = _compile_camera_regex(camera_regex) if camera_rule == "regex" else None
    paths = find_images(root)
    if not paths:
        raise DatasetError(f"no image files (*.jpg, *.jpeg, *.png) under {root}")
    if camera_rule == "none":
        names = ["0"] * len(paths)
    elif camera_rule == "folder":
        names = _camera_names_from_folders(root, paths)
    else:
        names = _camera_names_from_regex(root, paths, pattern)
    keys = camera_keys(names)
    camera_ids = {key: camid for camid, key in enumerate(sorted(set(keys)))}
    train = [(str(path), UNKNOWN_PID, camera_ids[key]) for path, key in zip(paths, keys)]
    query: list[Item] = []
    gallery: list[Item] = []
    if test_root:
        query, gallery = read_test_split(Path(test_root))
    dataset = ReidDataset(name="folder", root=str(root), train=train, query=query, gallery=gallery,
                          train_labelled=False)
    if verbose:
        print(dataset.summary())
        counts = Counter(camid for _, _, camid in train)
        shown = [f"{name} -> {camid} ({counts[camid]} images)" for name, camid in list(camera_ids.items())[:12]]
        more = f", ... ({len(camera_ids)} cameras)" if len(camera_ids) > 12 else ""
        print(f"  cameras (data.camera_rule: {camera_rule}): {', '.join(shown)}{more}")
        if not test_root:
            print("  no test split (data.target_test_root is empty): adaptation runs without evaluation")
    return dataset


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, symlinks followed, hidden names skipped), sorted by relative path."""
    found = []
    visited = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop, or one folder linked twice
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(folder) / name)
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def camera_keys(names: list[str]) -> list[str | int]:
    """Camera names as sort keys: integers when every name is a number (``"01"`` and ``"1"`` are one camera,
    ``"2"`` sorts before ``"10"``), else the names themselves. Camera ids are these keys' ranks, 0..C-1.

    Example:
        >>> camera_keys(["10", "2", "02"])
        [10, 2, 2]
        >>> camera_keys(["cam10", "cam2"])
        ['cam10', 'cam2']
    """
    if all(re.fullmatch(r"[0-9]+", name) for name in names):
        return [int(name) for name in names]
    return list(names)


def read_test_split(test_root: Path) -> tuple[list[Item], list[Item]]:
    """Query and gallery of a Market-1501-layout folder (``query/``, ``bounding_box_test/``), original pids."""
    if not test_root.is_dir():
        raise DatasetError(f"test split folder not found: {test_root} (data.target_test_root: expected a folder "
                           f"with {MARKET_SPLIT_DIRS['query']}/ and {MARKET_SPLIT_DIRS['gallery']}/)")
    query = _read_market_split(test_root / MARKET_SPLIT_DIRS["query"], is_train=False)
    gallery = _read_market_split(test_root / MARKET_SPLIT_DIRS["gallery"], is_train=False)
    return query, gallery


def _compile_camera_regex(camera_regex: str) -> re.Pattern[str]:
    if not camera_regex:
        raise DatasetError("data.camera_regex is empty: data.camera_rule 'regex' needs a pattern with one group "
                           "capturing the camera in the file name, e.g. '_c(\\d+)'")
    try:
        pattern = re.compile(camera_regex)
    except re.error as error:
        raise DatasetError(f"data.camera_regex '{camera_regex}': not a valid regular expression ({error})") from None
    if pattern.groups != 1:
        raise DatasetError(f"data.camera_regex '{camera_regex}': expected exactly one group '(...)' capturing the "
                           f"camera, found {pattern.groups} (use '(?:...)' for groups that capture nothing)")
    return pattern


def _camera_names_from_folders(root: Path, paths: list[Path]) -> list[str]:
    names = [path.relative_to(root).parts[0] if len(path.relative_to(root).parts) > 1 else None for path in paths]
    loose = [path for path, name in zip(paths, names) if name is None]
    if len(loose) == len(paths):
        raise DatasetError(f"data.camera_rule 'folder' finds no camera sub-folder under {root}: every image lies "
                           f"directly in it (e.g. {paths[0]}); expected {root}/<camera>/<images>, or use "
                           "data.camera_rule 'none' or 'regex'")
    if loose:
        raise DatasetError(f"image {loose[0]} lies directly in {root}, not in a camera sub-folder "
                           f"(data.camera_rule 'folder'; {len(loose)} of {len(paths)} images do): move it into "
                           "one, or remove it")
    return names


def _camera_names_from_regex(root: Path, paths: list[Path], pattern: re.Pattern[str]) -> list[str]:
    names: list[str | None] = []
    for path in paths:
        match = pattern.search(path.name)
        names.append(match.group(1) if match is not None and match.group(1) else None)
    failed = [path for path, name in zip(paths, names) if name is None]
    if len(failed) == len(paths):
        raise DatasetError(f"data.camera_regex '{pattern.pattern}' matches no file name under {root} (e.g. "
                           f"{paths[0].name}): expected its group to capture the camera in every file name")
    if failed:
        raise DatasetError(f"data.camera_regex '{pattern.pattern}' does not match the file name {failed[0]} "
                           f"({len(failed)} of {len(paths)} files do not): expected it to match every file name")
    return names
