"""Tests for reid/data/folder.py (``data.target: folder``) and the label-free clustering signals of each round
(reid/cluster/quality.py ``cluster_separation``, reid/engine/monitor.py ``log_clustering``), with an end-to-end
adaptation to an unlabelled folder built from real CUHK03 images."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reid
from reid.cli import train_main
from reid.cluster import cluster_separation
from reid.config import config_from_dict, load_config, resolve_paths
from reid.data.folder import build_folder_dataset, camera_keys
from reid.engine.inputs import drop_unreadable_images, load_domain
from reid.engine.logging import RunLogger
from reid.engine.monitor import log_clustering
from reid.errors import ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[1]


def _image_bytes(fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 60, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


JPEG, PNG = _image_bytes("JPEG"), _image_bytes("PNG")


def _write(root: Path, names: list[str], data: bytes = JPEG) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _relative(dataset, root: Path) -> list[tuple[str, int, int]]:
    return [(Path(path).relative_to(root).as_posix(), pid, camid) for path, pid, camid in dataset.train]


# ------------------------------------------------------------------------------------------------ the reader
def test_folder_rule_takes_the_first_level_sub_folder_as_camera_in_sorted_order(tmp_path: Path) -> None:
    root = _write(tmp_path / "cams", ["gate/b.jpg", "gate/a.JPEG", "lobby/2024-05-01/x.jpg", "atrium/z.jpg",
                                      "gate/.hidden.jpg", "gate/notes.txt", ".trash/old.jpg"])
    _write(root, ["lobby/y.png"], PNG)
    dataset = build_folder_dataset(root, camera_rule="folder")
    assert _relative(dataset, root) == [("atrium/z.jpg", -1, 0), ("gate/a.JPEG", -1, 1), ("gate/b.jpg", -1, 1),
                                        ("lobby/2024-05-01/x.jpg", -1, 2), ("lobby/y.png", -1, 2)]
    assert dataset.name == "folder" and not dataset.train_labelled
    assert dataset.query == [] and dataset.gallery == [] and not dataset.has_test_split
    assert dataset.num_train_cams == 3
    assert "    -" in dataset.summary().splitlines()[4]  # no identity count for an unlabelled train split


def test_numeric_camera_names_are_ordered_and_merged_as_integers(tmp_path: Path) -> None:
    assert camera_keys(["10", "2", "02"]) == [10, 2, 2]
    assert camera_keys(["cam10", "cam2"]) == ["cam10", "cam2"]
    root = _write(tmp_path / "cams", ["10/a.jpg", "2/b.jpg", "9/c.jpg"])
    assert _relative(build_folder_dataset(root, camera_rule="folder"), root) == [
        ("10/a.jpg", -1, 2), ("2/b.jpg", -1, 0), ("9/c.jpg", -1, 1)]


def test_regex_rule_reads_the_camera_from_the_file_name_only(tmp_path: Path) -> None:
    root = _write(tmp_path / "frames", ["c7/x_c10_0001.jpg", "c7/x_c2_0002.jpg", "x_c02_0003.jpg", "y_c7_0004.jpg"])
    dataset = build_folder_dataset(root, camera_rule="regex", camera_regex=r"_c(\d+)_")
    # c2 and c02 are one camera; the folder name c7 plays no part
    assert _relative(dataset, root) == [("c7/x_c10_0001.jpg", -1, 2), ("c7/x_c2_0002.jpg", -1, 0),
                                        ("x_c02_0003.jpg", -1, 0), ("y_c7_0004.jpg", -1, 1)]


def test_rule_none_puts_every_image_in_camera_zero(tmp_path: Path) -> None:
    root = _write(tmp_path / "any", ["a.jpg", "sub/b.jpg", "sub/deeper/c.jpeg"])
    dataset = build_folder_dataset(root)
    assert [camid for _, _, camid in dataset.train] == [0, 0, 0]
    assert [Path(p).name for p, _, _ in dataset.train] == ["a.jpg", "b.jpg", "c.jpeg"]


def test_symlinked_camera_folders_are_followed(tmp_path: Path) -> None:
    elsewhere = _write(tmp_path / "elsewhere", ["a.jpg", "b.jpg"])
    root = _write(tmp_path / "cams", ["cam1/c.jpg"])
    (root / "cam2").symlink_to(elsewhere, target_is_directory=True)
    (root / "cam2" / "loop").symlink_to(root, target_is_directory=True)  # visited once, not forever
    assert [(Path(p).parent.name, c) for p, _, c in build_folder_dataset(root, camera_rule="folder").train] == [
        ("cam1", 0), ("cam2", 1), ("cam2", 1)]


def test_test_root_adds_a_labelled_market_layout_query_and_gallery(tmp_path: Path) -> None:
    root = _write(tmp_path / "cams", ["cam1/a.jpg", "cam2/b.jpg"])
    test_root = _write(tmp_path / "test", ["query/0003_c1s1_000001_00.jpg", "bounding_box_test/0003_c2s1_000002_01.jpg",
                                           "bounding_box_test/-1_c2s1_000003_01.jpg"])
    dataset = build_folder_dataset(root, camera_rule="folder", test_root=test_root)
    assert [(Path(p).name, pid, cam) for p, pid, cam in dataset.query] == [("0003_c1s1_000001_00.jpg", 3, 0)]
    assert [(Path(p).name, pid, cam) for p, pid, cam in dataset.gallery] == [("0003_c2s1_000002_01.jpg", 3, 1)]
    assert dataset.has_test_split and not dataset.train_labelled


@pytest.mark.parametrize("case, message", [
    ("missing", r"^image folder not found: .*/nowhere \(data.target_root with data.target: folder\)$"),
    ("empty", r"^no image files \(\*.jpg, \*.jpeg, \*.png\) under .*/empty$"),
    ("folder-none", r"^data.camera_rule 'folder' finds no camera sub-folder under .*: every image lies directly "
                    r"in it \(e.g. .*/loose/a.jpg\)"),
    ("folder-some", r"^image .*/partly/a_c1_x.jpg lies directly in .*/partly, not in a camera sub-folder "
                    r"\(data.camera_rule 'folder'; 2 of 3 images do\)"),
    ("regex-empty", r"^data.camera_regex is empty: data.camera_rule 'regex' needs a pattern with one group"),
    ("regex-no-group", r"^data.camera_regex '_c\\d\+': expected exactly one group '\(...\)' capturing the "
                       r"camera, found 0"),
    ("regex-two-groups", r"^data.camera_regex '\(\\d\+\)_c\(\\d\+\)': expected exactly one group .* found 2"),
    ("regex-invalid", r"^data.camera_regex '_c\(\\d\+': not a valid regular expression \(missing \), "),
    ("regex-none", r"^data.camera_regex '_cam\(\\d\+\)' matches no file name under .*/partly \(e.g. a_c1_x.jpg\)"),
    ("regex-some", r"^data.camera_regex '_c\(\\d\+\)' does not match the file name .*/partly/z.jpg \(1 of 3 "
                   r"files do not\): expected it to match every file name$"),
    ("test-root", r"^test split folder not found: .*/no-test \(data.target_test_root: expected a folder with "
                  r"query/ and bounding_box_test/\)$"),
    ("test-query", r"^missing folder .*/half-test/query \(expected Market-1501 layout"),
    ("rule", r"^data.camera_rule: expected one of none, folder, regex, got 'camera'$"),
])
def test_bad_input_is_one_line_naming_the_file_key_or_value(tmp_path: Path, case: str, message: str) -> None:
    _write(tmp_path / "empty", ["readme.txt"])
    _write(tmp_path / "loose", ["a.jpg", "b.jpg"])
    partly = _write(tmp_path / "partly", ["a_c1_x.jpg", "cam1/b_c2_x.jpg", "z.jpg"])
    _write(tmp_path / "half-test", ["bounding_box_test/0001_c1s1_000001_01.jpg"])
    calls = {
        "missing": dict(root=tmp_path / "nowhere"),
        "empty": dict(root=tmp_path / "empty"),
        "folder-none": dict(root=tmp_path / "loose", camera_rule="folder"),
        "folder-some": dict(root=partly, camera_rule="folder"),
        "regex-empty": dict(root=partly, camera_rule="regex"),
        "regex-no-group": dict(root=partly, camera_rule="regex", camera_regex=r"_c\d+"),
        "regex-two-groups": dict(root=partly, camera_rule="regex", camera_regex=r"(\d+)_c(\d+)"),
        "regex-invalid": dict(root=partly, camera_rule="regex", camera_regex=r"_c(\d+"),
        "regex-none": dict(root=partly, camera_rule="regex", camera_regex=r"_cam(\d+)"),
        "regex-some": dict(root=partly, camera_rule="regex", camera_regex=r"_c(\d+)"),
        "test-root": dict(root=partly, test_root=tmp_path / "no-test"),
        "test-query": dict(root=partly, test_root=tmp_path / "half-test"),
        "rule": dict(root=partly, camera_rule="camera"),
    }
    with pytest.raises(DatasetError) as error:
        build_folder_dataset(**calls[case])
    assert "\n" not in str(error.value)
    assert re.search(message, str(error.value)), str(error.value)


# ------------------------------------------------------------------------------------------------ config, cli
def test_config_keys_defaults_validation_and_path_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_from_dict({})
    assert (cfg.data.camera_rule, cfg.data.camera_regex, cfg.data.target_test_root) == ("none", "", "")
    with pytest.raises(ConfigError, match=r"data.camera_rule: expected one of 'none', 'folder', 'regex', got "
                                          r"'folders' \(did you mean 'folder'\?\)"):
        config_from_dict({}, ["data.camera_rule=folders"])
    with pytest.raises(ConfigError, match=r"data.source: 'folder' has no identity labels"):
        config_from_dict({}, ["data.source=folder"])
    monkeypatch.setenv("MY_CAMS", "/data/cams")
    cfg = resolve_paths(config_from_dict({}, ["data.target=folder", "data.target_test_root=${MY_CAMS}/test",
                                              r"data.camera_regex=_c(\d+)", "data.camera_rule=regex"]))
    assert cfg.data.target_test_root == "/data/cams/test" and cfg.data.camera_regex == r"_c(\d+)"


def test_load_domain_reads_a_folder_with_the_config_rule(tmp_path: Path) -> None:
    root = _write(tmp_path / "cams", ["p/x_c1.jpg", "q/y_c3.jpg"])
    cfg = config_from_dict({}, ["data.target=folder", "data.camera_rule=regex", r"data.camera_regex=_c(\d)\."])
    dataset = load_domain("folder", str(root), cfg, verbose=False)
    assert [camid for _, _, camid in dataset.train] == [0, 1] and not dataset.train_labelled


def test_on_bad_image_skip_drops_unreadable_folder_images_and_keeps_placeholder_pids(tmp_path: Path) -> None:
    root = _write(tmp_path / "cams", ["cam1/a.jpg", "cam2/b.jpg", "cam2/c.jpg"])
    (root / "cam2" / "b.jpg").write_bytes(JPEG[: len(JPEG) // 2])  # truncated
    (root / "cam1" / "empty.jpg").write_bytes(b"")
    lines = []

    class Logger:
        def info(self, message: str) -> None:
            lines.append(message)

    dataset = drop_unreadable_images(build_folder_dataset(root, camera_rule="folder"), "target", Logger())
    assert _relative(dataset, root) == [("cam1/a.jpg", -1, 0), ("cam2/c.jpg", -1, 1)]
    assert not dataset.train_labelled
    assert len(lines) == 1 and lines[0].startswith("warning: target train: skipped 2 unreadable image(s) "
                                                   "(data.on_bad_image: skip), e.g. ")


def test_train_command_reports_a_bad_folder_in_one_line_with_exit_2(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    source = _write(tmp_path / "source", ["bounding_box_train/0001_c1s1_000001_01.jpg",
                                          "query/0001_c1s1_000002_01.jpg", "bounding_box_test/0001_c2s1_000003_01.jpg"])
    target = _write(tmp_path / "cams", ["a_c1.jpg", "b_x.jpg"])
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(tmp_path / "run"), "--quiet"]
    for item in ("data.source=market-format", f"data.source_root={source}", "data.target=folder",
                 f"data.target_root={target}", "data.camera_rule=regex", r"data.camera_regex=_c(\d)", "device=cpu"):
        argv += ["--set", item]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(r"DatasetError: data.camera_regex '_c(\d)' does not match the file name ")
    assert err.endswith("b_x.jpg (1 of 2 files do not): expected it to match every file name")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_eval_command_on_a_folder_without_test_split_says_so_in_one_line(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from reid.cli import eval_main

    target = _write(tmp_path / "cams", ["c1/a.jpg", "c2/b.jpg"])
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(tmp_path / "eval")]
    for item in ("data.target=folder", f"data.target_root={target}", "data.camera_rule=folder", "device=cpu",
                 "model.pretrained=none", "model.arch=resnet18"):
        argv += ["--set", item]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"DatasetError: {target}: folder target without a labelled test split")
    assert "data.target_test_root" in err
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------------------------------------ signals
def _brute_force_signals(features: np.ndarray, labels: np.ndarray) -> dict:
    """Intra pair distance, nearest other-centroid distance and silhouette with plain loops (all clustered points)."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    keep = [i for i in range(len(labels)) if labels[i] >= 0]
    clusters = sorted({int(labels[i]) for i in keep})
    centroids = {c: np.mean([x[i] for i in range(len(labels)) if labels[i] == c], axis=0) for c in clusters}
    pairs, nearest, silhouettes = [], [], []
    for a, i in enumerate(keep):
        for j in keep[a + 1:]:
            if labels[i] == labels[j]:
                pairs.append(np.linalg.norm(x[i] - x[j]))
        nearest.append(min(np.linalg.norm(x[i] - centroids[c]) for c in clusters if c != labels[i]))
        mean_to = {c: np.mean([np.linalg.norm(x[i] - x[j]) for j in keep if labels[j] == c and j != i] or [0.0])
                   for c in clusters}
        own = [j for j in keep if labels[j] == labels[i] and j != i]
        within = mean_to[labels[i]]
        between = min(mean_to[c] for c in clusters if c != labels[i])
        silhouettes.append(0.0 if not own else (between - within) / max(between, within))
    return {"intra": float(np.mean(pairs)), "nearest": float(np.mean(nearest)), "silhouette": float(np.mean(silhouettes))}


def test_two_tight_well_separated_clusters_have_silhouette_near_one_and_a_large_gap() -> None:
    rng = np.random.default_rng(0)
    features = np.concatenate([np.array([1.0, 0, 0]) + 0.01 * rng.normal(size=(10, 3)),
                               np.array([0, 1.0, 0]) + 0.01 * rng.normal(size=(12, 3)),
                               rng.normal(size=(3, 3))])  # three outliers: never part of any signal
    labels = np.array([0] * 10 + [1] * 12 + [-1] * 3)
    result = cluster_separation(features, labels)
    expected = _brute_force_signals(features, labels)
    assert result["separation_points"] == 22
    assert result["silhouette"] > 0.97
    assert result["silhouette"] == pytest.approx(expected["silhouette"], abs=1e-9)
    assert result["intra_cluster_distance"] == pytest.approx(expected["intra"], abs=1e-9)
    assert result["intra_cluster_distance"] < 0.05
    assert result["nearest_centroid_distance"] == pytest.approx(expected["nearest"], abs=1e-9)
    assert result["nearest_centroid_distance"] == pytest.approx(2 ** 0.5, abs=0.05)  # orthogonal unit centres
    assert result["distance_gap"] == pytest.approx(expected["nearest"] - expected["intra"], abs=1e-9)


def test_signals_match_brute_force_on_overlapping_clusters_and_use_a_fixed_sample() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 5))
    labels = rng.integers(-1, 4, size=40)
    result = cluster_separation(features, labels)
    expected = _brute_force_signals(features, labels)
    assert result["silhouette"] == pytest.approx(expected["silhouette"], abs=1e-9)
    assert result["intra_cluster_distance"] == pytest.approx(expected["intra"], abs=1e-9)
    assert result["nearest_centroid_distance"] == pytest.approx(expected["nearest"], abs=1e-9)
    # a capped sample: the first 12 clustered images of the seed-0 order of all 40 images, whatever the labels;
    # centroids still come from every member
    small = cluster_separation(features, labels, max_points=12)
    order = np.random.default_rng(0).permutation(40)
    sample = order[labels[order] >= 0][:12]
    assert small["separation_points"] == 12
    assert small == cluster_separation(features, labels, max_points=12)
    mask = np.full(40, -1)
    mask[sample] = labels[sample]
    from sklearn.metrics import silhouette_score

    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert small["silhouette"] == pytest.approx(silhouette_score(x[sample], labels[sample]), abs=1e-9)
    assert small["intra_cluster_distance"] == pytest.approx(_brute_force_signals(features, mask)["intra"], abs=1e-9)


def test_signals_are_none_where_undefined() -> None:
    features = np.eye(4)
    one_cluster = cluster_separation(features, np.array([0, 0, 0, -1]))
    assert one_cluster["intra_cluster_distance"] == pytest.approx(2 ** 0.5)
    assert one_cluster["nearest_centroid_distance"] is None and one_cluster["distance_gap"] is None
    assert one_cluster["silhouette"] is None
    assert cluster_separation(features, np.full(4, -1))["separation_points"] == 0


def test_log_clustering_writes_the_label_free_signals_with_or_without_target_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    features = np.concatenate([[1.0, 0, 0] + 0.05 * rng.normal(size=(6, 3)), [0, 1.0, 0] + 0.05 * rng.normal(size=(6, 3))])
    labels = np.array([0] * 6 + [1] * 5 + [-1])
    info = {"eps": 0.5, "num_clusters": 2, "num_outliers": 1, "cluster_sizes": np.array([6, 5]), "seconds": 0.1}
    logger = RunLogger(tmp_path, open_files=False)
    labelled = log_clustering(logger, 0, info, labels, np.arange(12) // 6, camids=np.arange(12) % 2,
                              features=features)
    unlabelled = log_clustering(logger, 1, info, labels, None, camids=np.zeros(12, int), features=features)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    signals = {"outlier_fraction", "largest_cluster", "median_cluster_size", "intra_cluster_distance",
               "nearest_centroid_distance", "distance_gap", "silhouette", "separation_points"}
    for record, row in zip((labelled, unlabelled), rows):
        assert signals <= set(record) and signals <= set(row) and row["kind"] == "cluster"
        assert row["silhouette"] == pytest.approx(cluster_separation(features, labels)["silhouette"])
        assert row["outlier_fraction"] == pytest.approx(1 / 12) and row["largest_cluster"] == 6
        assert row["median_cluster_size"] == 5.5
    assert "diagnostic_uses_target_labels" in rows[0] and "diagnostic_uses_target_labels" not in rows[1]
    assert not labelled["giant_cluster"]  # 6 of 12 images, but below the 50 images a warning needs


def test_log_clustering_warns_about_a_cluster_holding_a_tenth_of_the_images(tmp_path: Path, capsys) -> None:
    logger = RunLogger(tmp_path, open_files=False)
    for largest, warned in ((100, False), (101, True)):  # of 1,000 images: 10 % exactly is not warned about
        sizes = np.r_[largest, np.full((1000 - largest) // 9, 9)]
        labels = np.repeat(np.arange(sizes.size), sizes)
        labels = np.r_[labels, np.full(1000 - labels.size, -1)]
        info = {"eps": 0.93, "num_clusters": sizes.size, "num_outliers": int((labels < 0).sum()),
                "cluster_sizes": sizes, "seconds": 0.1}
        record = log_clustering(logger, 0, info, labels, None)
        assert record["giant_cluster"] is warned and record["largest_cluster"] == largest
        out = capsys.readouterr().out
        assert ("warning: round 0: one cluster holds 101 of the 1000 images (10%) at eps 0.9300" in out) is warned


# ------------------------------------------------------------------------------------------------ end to end
TINY = ["data.height=64", "data.width=32", "data.batch_size=8", "data.num_instances=2", "data.workers=0",
        "data.test_batch_size=64", "model.arch=resnet18", "model.pretrained=none",
        "pretrain.epochs=1", "pretrain.warmup_epochs=0", "pretrain.milestones=[]", "pretrain.iters_per_epoch=2",
        "pretrain.eval_source=false", "adapt.rounds=1", "adapt.epochs_per_round=1", "adapt.iters_per_epoch=2",
        "cluster.eps=0.5", "cluster.min_samples=2", "cluster.k1=6", "cluster.k2=2", "output.log_every=1",
        "amp=false", "device=cpu", "data.source=market-format", "data.target=folder"]
LABEL_USING = ("diagnostic_uses_target_labels", "pairwise_precision", "pairwise_recall", "nmi",
               "cross_camera_pairwise_precision")


@pytest.fixture(scope="module")
def cuhk03(shared_data: Path) -> Path:
    path = shared_data / "real"
    for name in ("cuhk03-pair1", "cuhk03-pairs2to5"):
        if not (path / name / "bounding_box_train").is_dir():
            pytest.skip(f"{path / name} not found")
    return path


@pytest.fixture(scope="module")
def camera_folder(cuhk03: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~100 CUHK03 pairs 2-5 train images of 12 identities, symlinked as <root>/c<N>/<index>.jpg: the camera
    from the file name's _cN, the identity nowhere."""
    root = tmp_path_factory.mktemp("my-cameras")
    by_pid: dict[str, list[Path]] = {}
    for path in sorted((cuhk03 / "cuhk03-pairs2to5" / "bounding_box_train").glob("*.jpg")):
        by_pid.setdefault(path.name.split("_")[0], []).append(path)
    index = 0
    for pid in sorted(by_pid)[::27][:12]:  # spread over the sorted ids: several camera pairs
        for path in by_pid[pid][:4] + by_pid[pid][-4:]:
            camera = re.match(r"\d+_(c\d+)s", path.name).group(1)
            (root / camera).mkdir(exist_ok=True)
            (root / camera / f"{index:04d}.jpg").symlink_to(path)
            index += 1
    return root


def _train_on_folder(cuhk03: Path, root: Path, out: Path, *extra: str) -> None:
    cfg = resolve_paths(load_config(REPO / "configs" / "demo.yaml", [
        *TINY, f"data.source_root={cuhk03 / 'cuhk03-pair1'}", f"data.target_root={root}", "data.camera_rule=folder",
        *extra]))
    reid.train(cfg, out=out, quiet=True)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_adapting_to_an_unlabelled_camera_folder_logs_label_free_signals_and_no_evaluation(
        cuhk03: Path, camera_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = sorted(p.relative_to(camera_folder).as_posix() for p in camera_folder.rglob("*.jpg"))
    assert 90 <= len(names) <= 100 and len({n.split("/")[0] for n in names}) >= 3
    assert all(re.fullmatch(r"c\d+/\d{4}\.jpg", n) for n in names)
    out = tmp_path / "run"
    _train_on_folder(cuhk03, camera_folder, out)
    printed = capsys.readouterr().out
    assert printed.count("direct-transfer evaluation skipped") == 1
    assert printed.count("stage 2: no target test split") == 1
    rows = _rows(out)
    assert not [r for r in rows if r["kind"] in ("eval", "summary")]
    clusters = [r for r in rows if r["kind"] == "cluster"]
    assert len(clusters) == 1
    record = clusters[0]
    assert record["num_samples"] == len(names) and record["num_cameras"] == len({n.split("/")[0] for n in names})
    for key in ("num_clusters", "num_outliers", "outlier_fraction", "cluster_size_histogram", "largest_cluster",
                "intra_cluster_distance", "nearest_centroid_distance", "distance_gap", "silhouette",
                "separation_points", "cross_camera_cluster_fraction"):
        assert key in record, key
    if record["num_clusters"] >= 2:
        assert -1 <= record["silhouette"] <= 1 and np.isfinite(record["distance_gap"])
    assert record["separation_points"] == record["num_samples"] - record["num_outliers"]
    text = (out / "metrics.jsonl").read_text()
    assert not any(key in text for key in LABEL_USING)
    assert (out / "checkpoints" / "final.pt").is_file()
    assert json.loads((out / "summary.json").read_text())["adapt"] == {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("cluster/num_clusters", "cluster/outlier_fraction", "cluster/largest_cluster"):
        assert tag in scalars, tag
    if record["num_clusters"] >= 2:
        assert "cluster/silhouette" in scalars and "cluster/distance_gap" in scalars
    assert not any(tag.startswith(("eval_", "pseudo_labels_diagnostic")) for tag in scalars)


def test_a_camera_folder_with_a_labelled_test_split_is_evaluated_as_before(
        cuhk03: Path, camera_folder: Path, tmp_path: Path) -> None:
    test_root = tmp_path / "test"
    for split in ("query", "bounding_box_test"):
        (test_root / split).mkdir(parents=True)
        paths = sorted((cuhk03 / "cuhk03-pairs2to5" / split).glob("*.jpg"))
        pids = sorted({p.name.split("_")[0] for p in paths})[:8]
        for path in paths:
            if path.name.split("_")[0] in pids:
                (test_root / split / path.name).symlink_to(path)
    out = tmp_path / "run"
    _train_on_folder(cuhk03, camera_folder, out, f"data.target_test_root={test_root}")
    rows = _rows(out)
    assert [(r["stage"], r["split"]) for r in rows if r["kind"] == "eval"] == [("pretrain", "target_test"),
                                                                                ("adapt", "target_test")]
    cluster = next(r for r in rows if r["kind"] == "cluster")
    assert "silhouette" in cluster and "diagnostic_uses_target_labels" not in cluster  # train is still unlabelled
    assert 0 <= json.loads((out / "summary.json").read_text())["adapt"]["mAP"] <= 1
    assert load_config(out / "config.yaml").data.target_test_root == str(test_root)
