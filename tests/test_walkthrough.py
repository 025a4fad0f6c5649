"""The README walkthrough "Your own cameras", end to end, from the command line.

An unlabelled folder of real CUHK03 crops (camera pairs 2-5 train split, a ~100-image subset, one sub-folder per
camera, identities stripped from the names) built as the README's snippet builds it, then, each as its own
process with this venv's python: ``scripts/train.py --config configs/my_cameras.yaml`` (tiny: 64x32, one short
epoch per stage, one round), ``scripts/embed.py`` the folder with ``checkpoints/final.pt``, ``scripts/search.py``
three queries (with and without ``--exclude-same-camera``), ``scripts/export.py`` to ONNX; then the README's
onnxruntime snippet against ``FeatureExtractor``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "my_cameras.yaml"
TINY = ["data.height=64", "data.width=32", "data.batch_size=8", "data.num_instances=2", "data.workers=0",
        "data.test_batch_size=64", "pretrain.epochs=1", "pretrain.warmup_epochs=0", "pretrain.milestones=[]",
        "pretrain.iters_per_epoch=2", "pretrain.eval_source=false", "adapt.rounds=1", "adapt.epochs_per_round=1",
        "adapt.iters_per_epoch=2", "cluster.eps=0.5", "cluster.min_samples=2", "cluster.k1=6", "cluster.k2=2",
        "amp=false", "device=cpu"]
SIGNALS = ("num_clusters", "num_outliers", "outlier_fraction", "largest_cluster", "intra_cluster_distance",
           "nearest_centroid_distance", "distance_gap", "silhouette", "cross_camera_cluster_fraction")


def build_camera_folder(source: Path, target: Path, identities: int | None = None) -> list[Path]:
    """The README's snippet: ``source`` (Market-style ``PPPP_cCs1_FFFFFF_01.jpg``) copied to
    ``target/camCC/NNNNN.jpg`` in a shuffled order, so neither name nor order says who is who.

    ``identities``: only that many identities, spread over the sorted ids, 8 images each (4 first, 4 last),
    so that every camera pair is represented (the test's subset; None: every image, as in the README).
    """
    images = sorted(source.glob("*.jpg"))
    if identities is not None:
        by_pid: dict[str, list[Path]] = {}
        for path in images:
            by_pid.setdefault(path.name.split("_")[0], []).append(path)
        pids = sorted(by_pid)
        chosen = pids[::max(len(pids) // identities, 1)][:identities]
        images = [path for pid in chosen for path in by_pid[pid][:4] + by_pid[pid][-4:]]
    random.Random(0).shuffle(images)
    written = []
    for index, path in enumerate(images):
        camera = int(re.match(r"\d+_c(\d+)s", path.name).group(1))
        (target / f"cam{camera:02d}").mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copy(path, target / f"cam{camera:02d}" / f"{index:05d}.jpg")))
    return sorted(written)


def _run(script: str, *args: object, shared: Path) -> str:
    """``python scripts/<script> args...`` from the repository root; returns stdout, fails on a non-zero exit.

    One intra-op thread per process: these are tiny workloads, and on a busy machine torch's spinning OpenMP
    threads made stage 1 alone 20x slower (CI=1: no progress bars)."""
    env = {**os.environ, "REID_SHARED": str(shared), "CI": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _readme_yaml() -> dict:
    """The config shown in the README's "Your own cameras" section."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("### Your own cameras", 1)[1]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert blocks, "README: no yaml block in 'Your own cameras'"
    return yaml.safe_load(blocks[0])


@pytest.mark.slow  # five processes, each importing torch: 64-95 s measured on 2 oversubscribed CPU cores
def test_readme_walkthrough_train_embed_search_export_from_the_command_line(
        shared_data: Path, mobilenet_weights: Path, tmp_path: Path) -> None:
    real = shared_data / "real"
    for name in ("cuhk03-pair1", "cuhk03-pairs2to5"):
        if not (real / name / "bounding_box_train").is_dir():
            pytest.skip(f"{real / name} not found (set REID_SHARED to the folder holding data/ and weights/)")
    assert _readme_yaml() == yaml.safe_load(CONFIG.read_text(encoding="utf-8")), \
        "the README's config differs from configs/my_cameras.yaml"

    # (a) the folder: one sub-folder per camera, no identities
    cameras = tmp_path / "my_cameras"
    images = build_camera_folder(real / "cuhk03-pairs2to5" / "bounding_box_train", cameras, identities=12)
    camera_names = sorted({path.parent.name for path in images})
    assert 90 <= len(images) <= 100 and len(camera_names) >= 3
    assert all(re.fullmatch(r"cam\d\d/\d{5}\.jpg", p.relative_to(cameras).as_posix()) for p in images)

    # (b, c) train on it: stage 1 on CUHK03 pair 1, one adaptation round, label-free signals logged
    run = tmp_path / "run"
    sets = [item for value in (*TINY, f"data.target_root={cameras}") for item in ("--set", value)]
    printed = _run("train.py", "--config", CONFIG, "--out", run, "--quiet", *sets, shared=shared_data.parent)
    assert "round 0:" in printed and "clusters" in printed
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    clusters = [row for row in rows if row["kind"] == "cluster"]
    assert len(clusters) == 1 and all(key in clusters[0] for key in SIGNALS), clusters
    assert clusters[0]["num_samples"] == len(images) and not [r for r in rows if r["kind"] == "eval"]
    checkpoint = run / "checkpoints" / "final.pt"
    assert checkpoint.is_file()

    # (d) embed the folder with the adapted checkpoint
    gallery = tmp_path / "gallery"
    _run("embed.py", cameras, "--checkpoint", checkpoint, "--out", gallery, "--camera-rule", "folder",
         "--workers", "0", "--quiet", shared=shared_data.parent)
    features = np.load(gallery / "features.npy")
    manifest = (gallery / "manifest.csv").read_text().splitlines()
    assert features.shape[0] == len(images) == len(manifest) - 1 and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert [line.rsplit(",", 1) for line in manifest[1:]] == [[str(p), p.parent.name] for p in images]

    # (e) search three queries, one per camera: other cameras only, then with their own camera
    queries = [next(p for p in images if p.parent.name == name) for name in camera_names[:3]]
    search = tmp_path / "search"
    _run("search.py", *queries, "--gallery", gallery, "--top-k", "5", "--exclude-same-camera", "--out", search,
         "--workers", "0", shared=shared_data.parent)
    results = json.loads((search / "results.json").read_text())["queries"]
    assert [r["path"] for r in results] == [str(q) for q in queries]
    for query, result in zip(queries, results):
        assert result["camera"] == query.parent.name and len(result["matches"]) == 5
        assert all(m["camera"] != result["camera"] for m in result["matches"])
    assert (search / "index.html").stat().st_size > 0 and (search / "ranked_lists.png").stat().st_size > 0
    _run("search.py", *queries, "--gallery", gallery, "--top-k", "5", "--out", tmp_path / "search-all",
         "--workers", "0", shared=shared_data.parent)
    for query, result in zip(queries, json.loads((tmp_path / "search-all" / "results.json").read_text())["queries"]):
        assert result["matches"][0]["path"] == str(query) and result["matches"][0]["distance"] < 1e-2

    # (f) export to ONNX, then the README's onnxruntime snippet on two images
    onnx_path = run / "final.onnx"
    assert "max abs difference" in _run("export.py", "--checkpoint", checkpoint, "--out", onnx_path,
                                        shared=shared_data.parent)
    import onnxruntime
    from PIL import Image

    paths = queries[:2]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map        # height, width, mean, std, dim, arch, checkpoint
    h, w, mean, std = int(meta["height"]), int(meta["width"]), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = [np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255 for p in paths]
    batch = ((np.stack(pixels) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)   # (N, 3, h, w)
    onnx_features = session.run(None, {"images": batch})[0]     # (N, D) float32, rows L2-normalised

    # (g) the Python API
    from reid import FeatureExtractor

    extractor = FeatureExtractor(checkpoint, device="cpu")
    api_features = extractor(paths).numpy()
    assert onnx_features.shape == api_features.shape == (2, features.shape[1])
    assert np.abs(onnx_features - api_features).max() < 1e-4
    rows = [images.index(p) for p in paths]
    assert np.abs(api_features - features[rows]).max() < 1e-4  # as reid-embed embedded them


def test_a_symlinked_query_file_takes_the_camera_of_the_link_not_of_its_target(tmp_path: Path) -> None:
    """A folder of links (as tests/test_folder.py builds one) searched with --exclude-same-camera: each query file's
    camera must be the folder holding the link, as the gallery saw it, not the folder of the linked file."""
    from reid.apps.common import camera_rule, cameras_of, find_images

    original = tmp_path / "bounding_box_train" / "0001_c3s1_000001_01.jpg"
    original.parent.mkdir()
    original.write_bytes(b"")
    link = tmp_path / "my_cameras" / "cam03" / "00000.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(original)
    gallery, query = find_images([tmp_path / "my_cameras"]), find_images([link])
    assert [image.path for image in query] == [image.path for image in gallery] == [link]
    assert cameras_of(query, camera_rule("folder")) == cameras_of(gallery, camera_rule("folder")) == ["cam03"]
    assert cameras_of(query, camera_rule("regex", r"^(\d+)\.jpg")) == ["0"]  # the link's name, not 0001_c3...
