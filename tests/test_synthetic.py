"""Tests for reid/synthetic/: Market layout, protocol validity, determinism, markers, domain gap."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.errors import ConfigError, DatasetError
from reid.synthetic import (
    DOMAINS,
    ensure_synthetic,
    generate_domain,
    plan_domain,
    render_contact_sheet,
    split_counts,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FILE_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s\d_(\d{6})_\d{2}\.jpg$")
SMALL = {"num_train_ids": 6, "num_test_ids": 4, "images_per_id": 6, "seed": 0}
TINY = {"num_train_ids": 2, "num_test_ids": 2, "images_per_id": 4}


def _records(root: Path, split: str) -> list[tuple[int, int, int]]:
    """(pid, camid, frame) of every file in ``root/split``; fails on a name that breaks the Market pattern."""
    records = []
    for file in sorted((root / split).iterdir()):
        match = FILE_NAME.match(file.name)
        assert match, f"bad file name {file.name}"
        records.append((int(match.group(1)), int(match.group(2)), int(match.group(3))))
    return records


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def small_domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    return {name: generate_domain(name, base / name, **SMALL) for name in DOMAINS}


@pytest.mark.parametrize("name", list(DOMAINS))
def test_market_layout_file_names_and_counts(small_domains: dict[str, Path], name: str) -> None:
    root = small_domains[name]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "bounding_box_test",
        "bounding_box_train",
        "query",
    ]
    frames = []
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        for _, camid, frame in _records(root, split):
            assert 1 <= camid <= DOMAINS[name].num_cameras
            frames.append(frame)
    assert len(frames) == len(set(frames)), "frame counter must be unique per image"
    counts = split_counts(root)
    assert counts["bounding_box_train"] == 6 * 6
    # 4 test ids x 6 images, plus max(2, 4 // 5) = 2 distractors and 2 junk images
    assert counts["query"] + counts["bounding_box_test"] == 4 * 6 + 2 + 2


def test_images_are_128x64_rgb(small_domains: dict[str, Path]) -> None:
    for root in small_domains.values():
        for file in (
            list((root / "query").glob("*.jpg")) + list((root / "bounding_box_train").glob("*.jpg"))[:5]
        ):
            with Image.open(file) as image:
                assert image.mode == "RGB"
                assert image.size == (64, 128)  # (width, height)


@pytest.mark.parametrize("name", list(DOMAINS))
def test_train_and_test_identities_are_disjoint(small_domains: dict[str, Path], name: str) -> None:
    root = small_domains[name]
    train_pids = {pid for pid, _, _ in _records(root, "bounding_box_train")}
    test_pids = {pid for pid, _, _ in _records(root, "query") + _records(root, "bounding_box_test")}
    assert train_pids == {1, 2, 3, 4, 5, 6}
    assert test_pids - {0, -1} == {7, 8, 9, 10}


@pytest.mark.parametrize("name", list(DOMAINS))
def test_one_query_per_camera_and_a_cross_camera_gallery_match(
    small_domains: dict[str, Path], name: str
) -> None:
    root = small_domains[name]
    queries, gallery = _records(root, "query"), _records(root, "bounding_box_test")
    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for pid, camid, _ in gallery:
        gallery_cams[pid].add(camid)
    query_cams: dict[int, list[int]] = defaultdict(list)
    for pid, camid, _ in queries:
        query_cams[pid].append(camid)
    assert set(query_cams) == {7, 8, 9, 10}
    for pid, cams in query_cams.items():
        assert len(cams) == len(set(cams)) >= 2, f"pid {pid}: one query per camera, at least 2 cameras"
        assert gallery_cams[pid] <= set(cams), "every camera of an identity has its query"
        for camid in cams:  # Market protocol drops same pid + same cam: a match must remain
            assert gallery_cams[pid] - {camid}, f"pid {pid} query in c{camid} has no cross-camera match"


def test_distractors_and_junk_only_in_gallery(small_domains: dict[str, Path]) -> None:
    for root in small_domains.values():
        gallery_pids = [pid for pid, _, _ in _records(root, "bounding_box_test")]
        assert gallery_pids.count(0) == 2
        assert gallery_pids.count(-1) == 2
        other_pids = {pid for pid, _, _ in _records(root, "query") + _records(root, "bounding_box_train")}
        assert not other_pids & {0, -1}


def test_every_identity_has_two_cameras_with_two_images_each() -> None:
    for style in DOMAINS.values():
        per_identity: dict[int, list[int]] = defaultdict(list)
        for spec in plan_domain(style, num_train_ids=50, num_test_ids=50, images_per_id=12, seed=3):
            if spec.pid > 0:
                per_identity[spec.pid].append(spec.camid)
        assert len(per_identity) == 100
        for cams in per_identity.values():
            assert len(cams) == 12
            images_per_cam = np.bincount(cams)[sorted(set(cams))]
            assert len(images_per_cam) >= 2 and images_per_cam.min() >= 2


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first = _file_bytes(generate_domain("synth-b", tmp_path / "one", seed=5, **TINY))
    second = _file_bytes(generate_domain("synth-b", tmp_path / "two", seed=5, **TINY))
    other = _file_bytes(generate_domain("synth-b", tmp_path / "three", seed=6, **TINY))
    assert len(first) == 2 * 4 + 2 * 4 + 2 + 2
    assert first == second
    assert set(first.values()).isdisjoint(other.values())


def test_marker_fast_path_leaves_files_untouched(tmp_path: Path) -> None:
    lines: list[str] = []
    root = generate_domain("synth-a", tmp_path / "a", log=lines.append, **TINY)
    assert lines == [f"generating synthetic domain synth-a into {tmp_path / 'a'} (missing; ~30 s)"]
    marker = json.loads((root / ".complete").read_text())
    assert marker["params"]["num_train_ids"] == 2 and marker["params"]["domain"] == "synth-a"
    assert marker["counts"] == split_counts(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_domain("synth-a", root, **TINY) == root
    lines: list[str] = []
    assert ensure_synthetic("synth-a", root, log=lines.append, **TINY) == root
    assert lines == []  # nothing generated, nothing said
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes


def test_missing_marker_means_half_written_and_regenerates(tmp_path: Path) -> None:
    root = generate_domain("synth-a", tmp_path / "a", **TINY)
    original = _file_bytes(root)
    damaged = sorted((root / "query").glob("*.jpg"))[0]
    damaged.write_bytes(b"truncated")
    (root / "bounding_box_train" / "stale_0001.jpg").write_bytes(b"left over")
    (root / ".complete").unlink()
    generate_domain("synth-a", root, **TINY)
    assert (root / ".complete").is_file()
    assert _file_bytes(root) == original


def test_other_params_need_overwrite_and_ensure_synthetic_regenerates(tmp_path: Path) -> None:
    root = generate_domain("synth-a", tmp_path / "a", **TINY)
    with pytest.raises(DatasetError, match="other parameters"):
        generate_domain("synth-a", root, num_train_ids=3, num_test_ids=2, images_per_id=4)
    lines: list[str] = []
    ensure_synthetic("synth-a", root, num_train_ids=3, num_test_ids=2, images_per_id=4, log=lines.append)
    assert lines == [f"generating synthetic domain synth-a into {root} (other parameters; ~30 s)"]
    assert split_counts(root)["bounding_box_train"] == 3 * 4
    assert json.loads((root / ".complete").read_text())["params"]["num_train_ids"] == 3


def test_refuses_to_write_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "market" / "bounding_box_train").mkdir(parents=True)
    (tmp_path / "market" / "bounding_box_train" / "0002_c1s1_000451_03.jpg").write_bytes(b"real data")
    with pytest.raises(DatasetError, match="not made by"):
        ensure_synthetic("synth-a", tmp_path / "market", **TINY)
    assert (
        tmp_path / "market" / "bounding_box_train" / "0002_c1s1_000451_03.jpg"
    ).read_bytes() == b"real data"


def test_bad_names_and_params_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'synth-a'"):
        generate_domain("synth_a", tmp_path / "x", **TINY)
    with pytest.raises(ConfigError, match="images_per_id"):
        generate_domain("synth-a", tmp_path / "x", num_train_ids=2, num_test_ids=2, images_per_id=3)
    with pytest.raises(ConfigError, match="unknown synthetic data parameter"):
        ensure_synthetic("synth-a", tmp_path / "x", num_ids=3)


def test_domains_differ_in_cameras_colour_and_sharpness(small_domains: dict[str, Path]) -> None:
    assert DOMAINS["synth-a"].num_cameras == 6 and DOMAINS["synth-b"].num_cameras == 8
    stats = {}
    for name, root in small_domains.items():
        pixels = np.stack(
            [
                np.asarray(Image.open(f), np.float32)
                for f in sorted((root / "bounding_box_train").glob("*.jpg"))
            ]
        )
        red_minus_blue = float(pixels[..., 0].mean() - pixels[..., 2].mean())
        horizontal_gradient = float(np.abs(np.diff(pixels, axis=2)).mean())
        stats[name] = (red_minus_blue, horizontal_gradient)
    # measured on the default size: R-B about 7 (A) vs 49 (B); gradient about 7.1 (A) vs 4.1 (B)
    assert stats["synth-b"][0] - stats["synth-a"][0] > 20, stats  # warm / yellow cast
    assert stats["synth-b"][1] < 0.75 * stats["synth-a"][1], stats  # blur and resolution loss


def test_contact_sheet_is_a_small_png(small_domains: dict[str, Path], tmp_path: Path) -> None:
    path = render_contact_sheet(small_domains, tmp_path / "sheet.png", ids_per_domain=3, images_per_id=2)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width > 2 * 3 * 64 and sheet.height > 2 * 128


def test_make_synthetic_script_writes_both_domains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_synthetic", REPO_ROOT / "scripts" / "make_synthetic.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = [
        "--out",
        str(tmp_path),
        "--train-ids",
        "2",
        "--test-ids",
        "2",
        "--images-per-id",
        "4",
        "--seed",
        "1",
    ]
    assert script.main(argv) == 0
    output = capsys.readouterr().out
    assert "synth-a" in output and "synth-b" in output and "bounding_box_train 8" in output
    assert (tmp_path / "synth-a" / ".complete").is_file() and (tmp_path / "synth-b" / ".complete").is_file()
