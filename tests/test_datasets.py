"""Tests for reid/data/datasets.py: Market-1501 / DukeMTMC-reID / MSMT17 / market-format readers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from reid.data.datasets import DATASET_NAMES, build_dataset, parse_market_name
from reid.errors import DatasetError


def _blank_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


BLANK_JPEG = _blank_jpeg()


def _write_files(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(BLANK_JPEG)


# A miniature Market-1501: junk (-1) and distractors (0000) in train and gallery, a Thumbs.db as in the
# real download, identities 2, 7, 10 in train and 2, 7 in test.
MARKET_TRAIN = [
    "0010_c6s2_000101_02.jpg",
    "0002_c2s1_000551_01.jpg",
    "0002_c1s1_000451_03.jpg",
    "0007_c3s1_000001_01.jpg",
    "-1_c1s1_000401_03.jpg",
    "0000_c1s1_000001_01.jpg",
]
MARKET_QUERY = ["0002_c3s1_000001_00.jpg", "0007_c1s1_000001_00.jpg"]
MARKET_GALLERY = [
    "0002_c1s1_000001_01.jpg",
    "0007_c5s1_000002_01.jpg",
    "0000_c4s1_000002_01.jpg",
    "-1_c1s1_000003_01.jpg",
    "-1_c2s1_000004_01.jpg",
]


def _make_market(folder: Path) -> Path:
    _write_files(folder / "bounding_box_train", MARKET_TRAIN)
    _write_files(folder / "query", MARKET_QUERY)
    _write_files(folder / "bounding_box_test", MARKET_GALLERY)
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return folder


def _names(items: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return [(Path(path).name, pid, camid) for path, pid, camid in items]


def test_market_train_is_relabelled_in_sorted_pid_order_without_junk_or_distractors(tmp_path: Path) -> None:
    dataset = build_dataset("market1501", _make_market(tmp_path / "Market-1501-v15.09.15"))
    assert _names(dataset.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c3s1_000001_01.jpg", 1, 2),
        ("0010_c6s2_000101_02.jpg", 2, 5),
    ]
    assert dataset.num_train_pids == 3
    assert dataset.num_train_cams == 4


def test_market_query_and_gallery_keep_original_pids_and_distractors_but_drop_junk(tmp_path: Path) -> None:
    dataset = build_dataset("market1501", _make_market(tmp_path / "Market-1501-v15.09.15"))
    assert _names(dataset.query) == [("0002_c3s1_000001_00.jpg", 2, 2), ("0007_c1s1_000001_00.jpg", 7, 0)]
    assert _names(dataset.gallery) == [
        ("0000_c4s1_000002_01.jpg", 0, 3),
        ("0002_c1s1_000001_01.jpg", 2, 0),
        ("0007_c5s1_000002_01.jpg", 7, 4),
    ]
    assert all(Path(path).is_file() for path, _, _ in dataset.train + dataset.query + dataset.gallery)


@pytest.mark.parametrize("folder_name", ["Market-1501-v15.09.15", "Market-1501", "market1501"])
def test_market_root_may_be_the_parent_of_the_standard_folder(tmp_path: Path, folder_name: str) -> None:
    dataset_dir = _make_market(tmp_path / folder_name)
    from_parent = build_dataset("market1501", tmp_path)
    from_folder = build_dataset("market1501", dataset_dir)
    assert from_parent.root == str(dataset_dir)
    assert from_parent.train == from_folder.train
    assert from_parent.gallery == from_folder.gallery


def test_dukemtmc_layout_with_eight_cameras(tmp_path: Path) -> None:
    folder = tmp_path / "DukeMTMC-reID"
    _write_files(folder / "bounding_box_train", ["0005_c2_f0046985.jpg", "0001_c8_f0000001.jpg"])
    _write_files(folder / "query", ["0003_c1_f0044158.jpg"])
    _write_files(folder / "bounding_box_test", ["0003_c7_f0020000.jpg", "0008_c3_f0001234.jpg"])
    dataset = build_dataset("dukemtmcreid", tmp_path)
    assert _names(dataset.train) == [("0001_c8_f0000001.jpg", 0, 7), ("0005_c2_f0046985.jpg", 1, 1)]
    assert _names(dataset.query) == [("0003_c1_f0044158.jpg", 3, 0)]
    assert _names(dataset.gallery) == [("0003_c7_f0020000.jpg", 3, 6), ("0008_c3_f0001234.jpg", 8, 2)]
    assert dataset.name == "dukemtmcreid"


def _make_msmt(folder: Path, train_dir: str = "train", test_dir: str = "test") -> Path:
    train = {
        "0000/0000_000_01_0303morning_0015_0.jpg": 0,
        "0000/0000_001_05_0303morning_0016_1.jpg": 0,
        "0005/0005_000_12_0303noon_0100_0.jpg": 5,
    }
    val = {"0002/0002_000_03_0303noon_0200_0.jpg": 2, "0000/0000_002_15_0303afternoon_0001_2.jpg": 0}
    query = {"0000/0000_000_02_0113morning_0001_0.jpg": 0}
    gallery = {
        "0000/0000_001_07_0113morning_0001_1.jpg": 0,
        "0009/0009_000_04_0113noon_0050_0.jpg": 9,
    }
    for list_name, image_dir, entries in (
        ("list_train.txt", train_dir, train),
        ("list_val.txt", train_dir, val),
        ("list_query.txt", test_dir, query),
        ("list_gallery.txt", test_dir, gallery),
    ):
        _write_files(folder / image_dir, list(entries))
        (folder / list_name).parent.mkdir(parents=True, exist_ok=True)
        (folder / list_name).write_text("".join(f"{path} {pid}\n" for path, pid in entries.items()))
    return folder


def test_msmt17_train_combines_train_and_val_lists_and_parses_cameras(tmp_path: Path) -> None:
    _make_msmt(tmp_path / "MSMT17_V1")
    dataset = build_dataset("msmt17", tmp_path)
    assert _names(dataset.train) == [
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("0000_001_05_0303morning_0016_1.jpg", 0, 4),
        ("0000_002_15_0303afternoon_0001_2.jpg", 0, 14),
        ("0002_000_03_0303noon_0200_0.jpg", 1, 2),
        ("0005_000_12_0303noon_0100_0.jpg", 2, 11),
    ]
    assert _names(dataset.query) == [("0000_000_02_0113morning_0001_0.jpg", 0, 1)]
    assert _names(dataset.gallery) == [
        ("0000_001_07_0113morning_0001_1.jpg", 0, 6),
        ("0009_000_04_0113noon_0050_0.jpg", 9, 3),
    ]
    assert dataset.train[0][0] == str(
        tmp_path / "MSMT17_V1" / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg"
    )
    assert dataset.query[0][0].startswith(str(tmp_path / "MSMT17_V1" / "test"))


def test_msmt17_v2_uses_mask_folders(tmp_path: Path) -> None:
    folder = _make_msmt(tmp_path / "MSMT17_V2", train_dir="mask_train_v2", test_dir="mask_test_v2")
    dataset = build_dataset("msmt17", folder)
    assert len(dataset.train) == 5 and len(dataset.query) == 1 and len(dataset.gallery) == 2
    assert all("/mask_train_v2/" in path for path, _, _ in dataset.train)
    assert all("/mask_test_v2/" in path for path, _, _ in dataset.gallery)


def test_msmt17_missing_list_file_and_malformed_line_are_reported(tmp_path: Path) -> None:
    folder = _make_msmt(tmp_path / "MSMT17_V1")
    (folder / "list_gallery.txt").write_text("0000/0000_001_07_0113morning_0001_1.jpg\n")
    with pytest.raises(
        DatasetError, match=r"malformed line 1 in .*list_gallery.txt: expected '<relative path> <pid>'"
    ):
        build_dataset("msmt17", folder)
    (folder / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*MSMT17_V1/list_val.txt"):
        build_dataset("msmt17", folder)


def test_msmt17_list_naming_a_missing_image_is_reported(tmp_path: Path) -> None:
    folder = _make_msmt(tmp_path / "MSMT17_V1")
    (folder / "list_query.txt").write_text("0042/0042_000_02_0113morning_0001_0.jpg 42\n")
    with pytest.raises(DatasetError, match=r"list_query.txt not found: .*test/0042/0042_000_02"):
        build_dataset("msmt17", folder)


def test_parse_market_name_reads_multi_digit_cameras_from_the_file_name_only() -> None:
    assert parse_market_name("/data/0001_c9/1168_c10s1_003187_01.jpg") == (1168, 9)
    assert parse_market_name("-1_c1s1_000401_03.jpg") == (-1, 0)
    with pytest.raises(
        DatasetError, match=r"camera number must start at 1 in file name 0001_c0s1_000001_01.jpg"
    ):
        parse_market_name("0001_c0s1_000001_01.jpg")


def test_unparsable_file_name_names_the_file_and_the_pattern(tmp_path: Path) -> None:
    folder = _make_market(tmp_path / "market")
    _write_files(folder / "query", ["img_0001.jpg"])
    expected = (
        rf"cannot parse identity and camera from file name {folder}/query/img_0001.jpg: expected PPPP_cC"
    )
    with pytest.raises(DatasetError, match=expected):
        build_dataset("market-format", folder)


def test_missing_split_folder_names_the_folder(tmp_path: Path) -> None:
    folder = _make_market(tmp_path / "market")
    for file in (folder / "query").iterdir():
        file.unlink()
    (folder / "query").rmdir()
    with pytest.raises(DatasetError, match=rf"missing folder {folder}/query \(expected Market-1501 layout"):
        build_dataset("market-format", folder)


def test_missing_layout_names_the_root_and_the_standard_folders(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match=rf"missing folder {tmp_path}/bounding_box_train: .*Market-1501-v15.09.15"
    ):
        build_dataset("market1501", tmp_path)
    with pytest.raises(DatasetError, match=r"dataset root not found: .*/nowhere"):
        build_dataset("market-format", tmp_path / "nowhere")


def test_empty_split_names_the_folder_and_the_glob(tmp_path: Path) -> None:
    folder = _make_market(tmp_path / "market")
    for file in (folder / "bounding_box_test").iterdir():
        file.unlink()
    with pytest.raises(DatasetError, match=rf"no images matching '\*.jpg' under {folder}/bounding_box_test$"):
        build_dataset("market-format", folder)


def test_split_of_only_junk_is_an_error(tmp_path: Path) -> None:
    folder = _make_market(tmp_path / "market")
    for file in (folder / "bounding_box_train").iterdir():
        file.unlink()
    _write_files(folder / "bounding_box_train", ["-1_c1s1_000401_03.jpg", "0000_c2s1_000001_01.jpg"])
    with pytest.raises(
        DatasetError, match=rf"no usable images under {folder}/bounding_box_train: all 2 are junk"
    ):
        build_dataset("market-format", folder)


@pytest.mark.parametrize(("name", "suggestion"), [("market", "market1501"), ("DukeMTMC", "dukemtmcreid")])
def test_unknown_name_suggests_the_closest_and_lists_valid_names(name: str, suggestion: str) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset(name, ".")
    message = str(error.value)
    assert message.startswith(f"unknown dataset '{name}' (did you mean '{suggestion}'?)")
    assert all(valid in message for valid in DATASET_NAMES)
    assert "\n" not in message


def test_verbose_prints_the_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = build_dataset("market-format", _make_market(tmp_path / "market"), verbose=True)
    printed = capsys.readouterr().out
    assert printed.strip() == dataset.summary().strip()
    assert "  train    |     3 |        4 |         4" in printed
    assert "  query    |     2 |        2 |         2" in printed
    assert "  gallery  |     3 |        3 |         3" in printed


def test_mini_market1501_counts_relabelling_and_cameras(mini_market: Path) -> None:
    dataset = build_dataset("market-format", mini_market)
    assert (len(dataset.train), dataset.num_train_pids, dataset.num_train_cams) == (32, 16, 6)
    assert (len(dataset.query), len({pid for _, pid, _ in dataset.query})) == (32, 16)
    assert (len(dataset.gallery), len({pid for _, pid, _ in dataset.gallery})) == (32, 16)
    assert sorted({pid for _, pid, _ in dataset.train}) == list(range(16))
    assert {camid for _, _, camid in dataset.query + dataset.gallery} == set(range(6))
    assert _names(dataset.query)[0] == ("0004_c2s3_059152_00.jpg", 4, 1)
    assert [path for path, _, _ in dataset.train] == sorted(path for path, _, _ in dataset.train)


def test_cuhk03_folders_counts_and_two_digit_cameras(shared_data: Path) -> None:
    pair1 = build_dataset("market-format", shared_data / "real" / "cuhk03-pair1")
    assert (len(pair1.train), pair1.num_train_pids) == (7239, 743)
    assert (len(pair1.query), len({pid for _, pid, _ in pair1.query})) == (200, 100)
    assert (len(pair1.gallery), len({pid for _, pid, _ in pair1.gallery})) == (738, 100)
    assert {camid for _, _, camid in pair1.train} == {0, 1}
    pairs2to5 = build_dataset("market-format", shared_data / "real" / "cuhk03-pairs2to5")
    assert {camid for _, _, camid in pairs2to5.gallery} == set(range(2, 10))  # c3..c10
