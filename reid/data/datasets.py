"""Person re-ID datasets as plain lists of ``(path, pid, camid)``.

Supported names (:data:`DATASET_NAMES`):

- ``"market1501"``    Market-1501 (Zheng et al., ICCV 2015): 12,936 train images / 751 ids, 3,368 query,
  15,913 gallery (2,793 distractors included, 3,819 junk dropped).
- ``"dukemtmcreid"``  DukeMTMC-reID (Zheng et al., ICCV 2017): 16,522 / 702, 2,228 query, 17,661 gallery.
- ``"msmt17"``        MSMT17 V1 or V2 (Wei et al., CVPR 2018), read from its list files; train = list_train +
  list_val (32,621 images / 1,041 ids, the split UDA papers report), 11,659 query, 82,161 gallery.
- ``"market-format"`` any folder in Market-1501 layout (the synthetic domains, the CUHK03 folders).

Market-1501 layout: ``<root>/bounding_box_train``, ``<root>/query``, ``<root>/bounding_box_test`` holding
``PPPP_cC...jpg`` files (PPPP identity, C camera counted from 1). Conventions, as in torchreid:

- junk detections (pid -1) are dropped from every split; distractors (pid 0) stay in the gallery as ordinary
  non-matches and are dropped from train (they are not one identity);
- train pids are relabelled 0..C-1 in sorted order of the original pids; query/gallery keep the original pids;
- camids are 0-based (``c1`` -> 0);
- every split is sorted by path, so the lists are identical on every machine and every rank.

Unlike torchreid, the camera number may have several digits (the CUHK03 folders have ``c10``) and the name is
parsed from the file name only, never from the parent folders.

Example::

    dataset = build_dataset("market1501", "data", verbose=True)   # finds data/Market-1501-v15.09.15
    path, pid, camid = dataset.train[0]
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from reid.errors import DatasetError
from reid.names import DATASETS

Item = tuple[str, int, int]
"""One image: ``(path, pid, camid)``."""

DATASET_NAMES = DATASETS  # the table lives in reid/names.py

MARKET_SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

# Folder names the dataset may sit in under ``root`` (checked in this order after ``root`` itself).
_STANDARD_FOLDERS = {
    "market1501": (
        "Market-1501-v15.09.15",
        "Market-1501",
        "market1501",
        "market1501/Market-1501-v15.09.15",
    ),
    "dukemtmcreid": ("DukeMTMC-reID", "dukemtmcreid", "dukemtmc-reid/DukeMTMC-reID"),
    "msmt17": ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2"),
    "market-format": (),
}

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_MARKET_PATTERN = "PPPP_cC...jpg (e.g. 0002_c1s1_000451_03.jpg)"
_MSMT_PATTERN = "PPPP_NNN_CC_....jpg (e.g. 0000_000_01_0303morning_0015_0.jpg)"
_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
# (train images, test images) folder names: V1, then V2 (faces blurred).
_MSMT_IMAGE_DIRS = (("train", "test"), ("mask_train_v2", "mask_test_v2"), ("mask_train_V2", "mask_test_V2"))

JUNK_PID = -1
DISTRACTOR_PID = 0


@dataclass
class ReidDataset:
    """Train/query/gallery lists of one dataset.

    Attributes:
        name: the name passed to :func:`build_dataset`.
        root: the folder the splits were read from (after resolving the standard sub-folder).
        train: ``(path, pid, camid)`` with pids relabelled 0..num_train_pids-1.
        query: ``(path, pid, camid)`` with original pids.
        gallery: ``(path, pid, camid)`` with original pids (distractors, pid 0, included).
        train_labelled: False when the train split has no identities (``reid.data.folder``: every train pid is
            -1, a placeholder): nothing may compute label-using statistics from them.
    """

    name: str
    root: str
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    train_labelled: bool = True

    @property
    def has_test_split(self) -> bool:
        """Whether there are query and gallery images to evaluate on."""
        return bool(self.query) and bool(self.gallery)

    @property
    def num_train_pids(self) -> int:
        """Number of train identities (= the classifier size of the source stage)."""
        return len({pid for _, pid, _ in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in train."""
        return len({camid for _, _, camid in self.train})

    def summary(self) -> str:
        """A torchreid-style table: subset | # ids | # images | # cameras."""
        rule = "  ----------------------------------------"
        lines = [
            f"=> Loaded {self.name} from {self.root}",
            rule,
            "  subset   | # ids | # images | # cameras",
            rule,
        ]
        for subset, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery)):
            num_pids = len({pid for _, pid, _ in items})
            num_cams = len({camid for _, _, camid in items})
            ids = "    -" if subset == "train" and not self.train_labelled else f"{num_pids:5d}"
            lines.append(f"  {subset:<8} | {ids} | {len(items):8d} | {num_cams:9d}")
        lines.append(rule)
        return "\n".join(lines)


def build_dataset(name: str, root: str | Path, verbose: bool = False) -> ReidDataset:
    """Read the train/query/gallery lists of a dataset.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: the dataset folder itself, or its parent holding the standard folder
            (``Market-1501-v15.09.15``, ``DukeMTMC-reID``, ``MSMT17_V1`` / ``MSMT17_V2``).
            For ``"market-format"`` it is the folder holding ``bounding_box_train`` etc.
        verbose: print :meth:`ReidDataset.summary`.

    Returns:
        a :class:`ReidDataset`.

    Raises:
        DatasetError: unknown name, missing folder or list file, empty split, unparsable file name.

    Example::

        >>> ds = build_dataset("market-format", "../shared/data/real/mini-market1501")
        >>> len(ds.train), ds.num_train_pids
        (32, 16)
    """
    if name not in DATASET_NAMES:
        close = difflib.get_close_matches(name.lower(), DATASET_NAMES, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DatasetError(f"unknown dataset '{name}'{hint}; valid names: {', '.join(DATASET_NAMES)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")

    if name == "msmt17":
        dataset_dir = _find_folder(root, _STANDARD_FOLDERS[name], marker="list_train.txt")
        train, query, gallery = _read_msmt17(dataset_dir)
    else:
        dataset_dir = _find_folder(root, _STANDARD_FOLDERS[name], marker=MARKET_SPLIT_DIRS["train"])
        train = _read_market_split(dataset_dir / MARKET_SPLIT_DIRS["train"], is_train=True)
        query = _read_market_split(dataset_dir / MARKET_SPLIT_DIRS["query"], is_train=False)
        gallery = _read_market_split(dataset_dir / MARKET_SPLIT_DIRS["gallery"], is_train=False)

    dataset = ReidDataset(name=name, root=str(dataset_dir), train=train, query=query, gallery=gallery)
    if verbose:
        print(dataset.summary())
    return dataset


def parse_market_name(path: str | Path) -> tuple[int, int]:
    """``(pid, camid)`` of a Market-1501-style file name, camid 0-based.

    Raises:
        DatasetError: the name does not match ``PPPP_cC...`` or the camera number is 0.
    """
    match = _MARKET_NAME.match(Path(path).name)
    if match is None:
        raise DatasetError(
            f"cannot parse identity and camera from file name {path}: expected {_MARKET_PATTERN}"
        )
    pid, camera = int(match.group(1)), int(match.group(2))
    if camera < 1:
        raise DatasetError(f"camera number must start at 1 in file name {path}: expected {_MARKET_PATTERN}")
    return pid, camera - 1


def relabel(items: list[Item]) -> list[Item]:
    """Map pids to 0..C-1 in sorted order of the original pids."""
    pid_to_label = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, pid_to_label[pid], camid) for path, pid, camid in items]


def _find_folder(root: Path, candidates: tuple[str, ...], marker: str) -> Path:
    """``root`` if it holds ``marker``, else the first ``root/<candidate>`` that does."""
    for folder in (root, *(root / candidate for candidate in candidates)):
        if (folder / marker).exists():
            return folder
    where = f"{root}" if not candidates else f"{root} or in one of its sub-folders {', '.join(candidates)}"
    if marker == MARKET_SPLIT_DIRS["train"]:
        expected = ", ".join(f"{d}/" for d in MARKET_SPLIT_DIRS.values())
        raise DatasetError(
            f"missing folder {root / marker}: expected Market-1501 layout ({expected}) in {where}"
        )
    raise DatasetError(
        f"missing file {root / marker}: expected MSMT17 list files ({', '.join(_MSMT_LISTS)}) in {where}"
    )


def _read_market_split(folder: Path, is_train: bool) -> list[Item]:
    """All ``*.jpg`` of one Market-layout split, junk dropped (and distractors too in train)."""
    if not folder.is_dir():
        raise DatasetError(
            f"missing folder {folder} (expected Market-1501 layout: {', '.join(MARKET_SPLIT_DIRS.values())})"
        )
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        raise DatasetError(f"no images matching '*.jpg' under {folder}")
    items = []
    for path in paths:
        pid, camid = parse_market_name(path)
        if pid == JUNK_PID or (is_train and pid == DISTRACTOR_PID):
            continue
        items.append((str(path), pid, camid))
    if not items:
        dropped = "junk (pid -1) or distractors (pid 0)" if is_train else "junk (pid -1)"
        raise DatasetError(f"no usable images under {folder}: all {len(paths)} are {dropped}")
    return relabel(items) if is_train else items


def _read_msmt17(dataset_dir: Path) -> tuple[list[Item], list[Item], list[Item]]:
    """MSMT17 from its list files: train = list_train + list_val (relabelled), query, gallery."""
    for train_name, test_name in _MSMT_IMAGE_DIRS:
        train_dir, test_dir = dataset_dir / train_name, dataset_dir / test_name
        if train_dir.is_dir() and test_dir.is_dir():
            break
    else:
        options = " or ".join(f"{train}/ + {test}/" for train, test in _MSMT_IMAGE_DIRS[:2])
        raise DatasetError(f"missing image folders in {dataset_dir}: expected {options}")
    train = _read_msmt_list(dataset_dir / "list_train.txt", train_dir)
    train += _read_msmt_list(dataset_dir / "list_val.txt", train_dir)
    query = _read_msmt_list(dataset_dir / "list_query.txt", test_dir)
    gallery = _read_msmt_list(dataset_dir / "list_gallery.txt", test_dir)
    return relabel(sorted(train)), query, gallery


def _read_msmt_list(list_path: Path, image_dir: Path) -> list[Item]:
    """Lines ``<path relative to image_dir> <pid>``; camid from the file name (``..._CC_...`` -> CC-1)."""
    if not list_path.is_file():
        raise DatasetError(f"missing file {list_path}: expected MSMT17 list files {', '.join(_MSMT_LISTS)}")
    items = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DatasetError(
                f"malformed line {line_number} in {list_path}: expected '<relative path> <pid>'"
            )
        relative_path, pid = fields[0], int(fields[1])
        name_fields = Path(relative_path).name.split("_")
        if len(name_fields) < 4 or not name_fields[2].isdigit() or int(name_fields[2]) < 1:
            raise DatasetError(
                f"cannot parse camera from file name {relative_path} (line {line_number} of {list_path}): "
                f"expected {_MSMT_PATTERN}"
            )
        if pid != JUNK_PID:
            items.append((str(image_dir / relative_path), pid, int(name_fields[2]) - 1))
    if not items:
        raise DatasetError(f"no images listed in {list_path}")
    # Checking every file is slow on network storage; the first one catches a wrong root or version.
    if not Path(items[0][0]).is_file():
        raise DatasetError(f"image listed in {list_path} not found: {items[0][0]}")
    return sorted(items)
