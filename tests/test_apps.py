"""reid/api.py and reid/apps/: FeatureExtractor, reid-embed (resumable), reid-search (exact), reid-export (ONNX).

A tiny MobileNetV2 at 64 x 32 pixels, its BatchNorm statistics taken from one random batch so that the
features are not degenerate, saved the way training saves checkpoints.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid import FeatureExtractor
from reid.apps import embed, export, search
from reid.apps.search import search_index
from reid.config import load_config, save_config
from reid.data.loaders import build_test_loader
from reid.engine.checkpoint import save_checkpoint, training_state
from reid.errors import CheckpointError
from reid.evaluation.features import extract_features
from reid.models import build_model

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 64, 32
TINY = ["model.arch=mobilenet_v2", "model.pretrained=none", f"data.height={HEIGHT}", f"data.width={WIDTH}"]


def _calibrated_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(arch="mobilenet_v2", pretrained="none")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the running statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, HEIGHT, WIDTH))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "final.pt"
    save_checkpoint(training_state(load_config(None, TINY), _calibrated_model(), None, stage="done"), path)
    return path


def _write_images(folder: Path, cameras: tuple[int, ...] = (1, 2, 3), per_camera: int = 3) -> list[Path]:
    """Market-style names ``PPPP_cC_NN.jpg``, a sub-folder per camera, each image three random colour bands."""
    rng = np.random.default_rng(0)
    paths = []
    for camera in cameras:
        for index in range(per_camera):
            bands = np.repeat(rng.random((3, 1, 3)) * 255, [6, 5, 5], axis=0)  # hair, shirt, trousers
            pixels = bands + rng.normal(0, 20, (16, 8, 3))
            path = folder / f"cam{camera}" / f"{index:04d}_c{camera}_{index:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.kron(pixels.clip(0, 255), np.ones((4, 4, 1))).astype(np.uint8)).save(path)
            paths.append(path)
    return sorted(paths)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    _write_images(folder)
    return folder


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, images: Path, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    assert embed.run([str(images), "--checkpoint", str(checkpoint), "--out", str(out), "--camera-rule",
                      "regex", "--camera-regex", r"_c(\d+)_", "--workers", "0", "--quiet"]) == 0
    return out


def _fails(main, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``main(argv)``; it must exit with code 2 and one line on stderr, returned."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(error.splitlines()) == 1, error
    return error


# ------------------------------------------------------------------------------------------------------ API
def test_feature_extractor_matches_evaluation_features(checkpoint: Path, images: Path) -> None:
    paths = sorted(images.rglob("*.jpg"))
    features = FeatureExtractor(checkpoint, device="cpu", batch_size=4)(paths)
    loader = build_test_loader([(str(p), 0, 0) for p in paths], HEIGHT, WIDTH, batch_size=4, workers=0)
    expected, _, _ = extract_features(_calibrated_model(), loader)
    assert features.shape == (len(paths), 1280) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(paths)))
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_feature_extractor_takes_pil_images_like_paths(checkpoint: Path, images: Path) -> None:
    paths = sorted(images.rglob("*.jpg"))[:3]
    extractor = FeatureExtractor(checkpoint)
    pil = [Image.open(paths[0]).convert("L").convert("RGB"), Image.open(paths[1])]
    from_pil = extractor(pil)
    assert torch.allclose(from_pil[1], extractor(paths[1])[0], atol=1e-6)
    assert extractor([]).shape == (0, 1280)


def test_bare_state_dict_needs_the_training_config(tmp_path: Path, checkpoint: Path, images: Path) -> None:
    torch.save({"model": _calibrated_model().state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare.pt: carries no config .* pass the training config"):
        FeatureExtractor(tmp_path / "bare.pt")
    save_config(load_config(None, TINY), tmp_path / "config.yaml")
    path = next(images.rglob("*.jpg"))
    assert torch.allclose(FeatureExtractor(tmp_path / "bare.pt", config=tmp_path / "config.yaml")(path),
                          FeatureExtractor(checkpoint)(path), atol=1e-6)


def test_import_reid_does_not_import_torch() -> None:
    code = "import sys, reid; print('torch' in sys.modules, reid.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.split()[0] == "False"


# ---------------------------------------------------------------------------------------------- reid-embed
def test_embed_writes_normalised_features_and_manifest(gallery: Path, images: Path, checkpoint: Path) -> None:
    features = np.load(gallery / "features.npy")
    manifest = (gallery / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,camera" and len(manifest) == 10 and features.shape == (9, 1280)
    paths = [line.rsplit(",", 1)[0] for line in manifest[1:]]
    assert [line.rsplit(",", 1)[1] for line in manifest[1:]] == [Path(p).name.split("_c")[1][0] for p in paths]
    np.testing.assert_allclose(features, FeatureExtractor(checkpoint)(paths).numpy(), atol=1e-5)
    assert json.loads((gallery / "embed.json").read_text())["count"] == 9 and not (gallery / "chunks").exists()


def test_embed_resumes_after_a_kill_without_recomputing_finished_chunks(tmp_path: Path, images: Path,
                                                                        checkpoint: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    options = ["--checkpoint", str(checkpoint), "--chunk-size", "4", "--camera-regex", r"_c(\d+)_", "--workers",
               "0", "--quiet"]
    assert embed.run([str(images), *options, "--out", str(tmp_path / "uninterrupted")]) == 0
    argv = [str(images), *options, "--out", str(tmp_path / "out")]
    original_chunk, original_assemble = embed._embed_chunk, embed._assemble
    calls = []

    def killed_in_second_chunk(*args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        original_chunk(*args)

    monkeypatch.setattr(embed, "_embed_chunk", killed_in_second_chunk)
    assert embed.run(argv) == 130
    chunks = tmp_path / "out" / "chunks"
    assert sorted(p.name for p in chunks.glob("*.npz")) == ["chunk_000000.npz"]
    (chunks / ".chunk_000001.npz.abc.tmp").write_bytes(b"half-written")  # a write the kill interrupted
    first_mtime = (chunks / "chunk_000000.npz").stat().st_mtime_ns

    embedded, seen_mtime = [], []
    original_call = FeatureExtractor.__call__

    def counting_call(self, items, progress=None):
        embedded.extend(items)
        return original_call(self, items, progress)

    def assemble_after_looking_at_chunk_0(out, *args, **kwargs):
        seen_mtime.append((out / "chunks" / "chunk_000000.npz").stat().st_mtime_ns)
        original_assemble(out, *args, **kwargs)

    monkeypatch.setattr(embed, "_embed_chunk", original_chunk)
    monkeypatch.setattr(FeatureExtractor, "__call__", counting_call)
    monkeypatch.setattr(embed, "_assemble", assemble_after_looking_at_chunk_0)
    assert embed.run(argv) == 0
    assert len(embedded) == 9 - 4 and seen_mtime == [first_mtime]  # chunk 0 neither recomputed nor rewritten
    for name in ("features.npy", "manifest.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "uninterrupted" / name).read_bytes()
    assert not chunks.exists()


def test_embed_float16_and_a_rerun_with_other_options_needs_overwrite(tmp_path: Path, images: Path,
                                                                       checkpoint: Path, gallery: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    argv = [str(images), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--camera-regex", r"_c(\d+)_",
            "--workers", "0", "--quiet", "--float16"]
    assert embed.run(argv) == 0
    features = np.load(tmp_path / "features.npy")
    assert features.dtype == np.float16
    np.testing.assert_allclose(features, np.load(gallery / "features.npy"), atol=2e-3)
    assert embed.run(argv) == 0 and "nothing to do" in capsys.readouterr().out
    error = _fails(embed.main, argv[:-1], capsys)
    assert error.startswith(f"ReidError: {tmp_path} holds an embedding of other inputs") and "--overwrite" in error
    assert embed.run(argv[:-1] + ["--overwrite"]) == 0 and np.load(tmp_path / "features.npy").dtype == np.float32


def test_embed_skips_unreadable_images_with_a_warning(tmp_path: Path, checkpoint: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    _write_images(tmp_path / "images", cameras=(1,), per_camera=2)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    assert embed.run([str(tmp_path / "images"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                      "--workers", "0", "--quiet"]) == 0
    assert "warning: skipped 1 unreadable image(s), e.g. " in capsys.readouterr().err
    assert np.load(tmp_path / "out" / "features.npy").shape == (2, 1280)
    assert "broken.jpg" not in (tmp_path / "out" / "manifest.csv").read_text()


def test_camera_rules_read_cameras_as_the_folder_dataset_does(tmp_path: Path) -> None:
    from reid.apps.common import camera_rule, cameras_of, find_images

    for name in ("cam01/day1/0001_c01_a.jpg", "cam01/0002_c1_b.png", "cam2/0003_c02_c.JPG"):
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / name).write_bytes(b"")
    (tmp_path / "loose_c7_x.jpg").write_bytes(b"")
    images = find_images([tmp_path / "root", tmp_path / "loose_c7_x.jpg"])
    assert [image.path.name for image in images] == ["0002_c1_b.png", "0001_c01_a.jpg", "0003_c02_c.JPG",
                                                     "loose_c7_x.jpg"]
    assert cameras_of(images, camera_rule("folder")) == ["cam01", "cam01", "cam2", tmp_path.name]
    assert cameras_of(images, camera_rule(None, r"_c(\d+)_")) == ["1", "1", "2", "7"]  # numbers compared as such
    assert cameras_of(images, camera_rule("none")) == ["", "", "", ""]


# --------------------------------------------------------------------------------------------- reid-search
def test_search_index_is_exact_against_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    gallery, query = rng.normal(size=(300, 32)), rng.normal(size=(9, 32))
    gallery, query = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (gallery, query))
    g_cams, q_cams = [str(c) for c in rng.integers(0, 3, 300)], [str(c) for c in rng.integers(0, 3, 9)]
    similarity = query @ gallery.T
    indices, scores = search_index(query, gallery, top_k=10)
    assert np.array_equal(indices, np.argsort(-similarity, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(similarity, indices, axis=1), atol=1e-5)
    indices, scores = search_index(query, gallery, 10, q_cams, g_cams)
    for row in range(9):
        allowed = np.flatnonzero(np.array(g_cams) != q_cams[row])
        assert np.array_equal(indices[row], allowed[np.argsort(-similarity[row, allowed])[:10]])


def test_search_index_pads_short_lists() -> None:
    features = np.eye(4, dtype=np.float32)
    indices, scores = search_index(features[:1], features, top_k=3, query_cameras=["a"],
                                   gallery_cameras=["a", "a", "b", "a"])
    assert indices.tolist() == [[2, -1, -1]] and np.isnan(scores[0, 1:]).all()


def test_search_writes_table_json_png_and_offline_html(tmp_path: Path, gallery: Path, images: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    queries = [images / "cam1" / "0000_c1_00.jpg", images / "cam2" / "0001_c2_01.jpg"]
    assert search.run([*map(str, queries), "--gallery", str(gallery), "--top-k", "4", "--out", str(tmp_path),
                       "--workers", "0"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["queries"]
    assert [r["matches"][0]["path"] for r in results] == [str(q) for q in queries]  # each finds itself first
    assert results[0]["matches"][0]["distance"] < 1e-3 and len(results[1]["matches"]) == 4
    assert "query " + str(queries[0]) + " (camera 1)" in capsys.readouterr().out

    assert search.run([*map(str, queries), "--gallery", str(gallery), "--top-k", "4", "--out", str(tmp_path),
                       "--exclude-same-camera", "--workers", "0"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["queries"]
    for query, camera in zip(results, ["1", "2"]):
        distances = [m["distance"] for m in query["matches"]]
        assert query["camera"] == camera and distances == sorted(distances) and len(distances) == 4
        assert all(m["camera"] != camera for m in query["matches"])
    page = (tmp_path / "index.html").read_text()
    assert page.count("<img ") == 2 * 5 and page.count('src="data:image/jpeg;base64,') == 10
    assert Image.open(tmp_path / "ranked_lists.png").size[0] > 100


# --------------------------------------------------------------------------------------------- reid-export
def test_onnx_export_matches_torch_on_real_images_with_a_dynamic_batch(tmp_path: Path, checkpoint: Path,
                                                                       mini_market: Path) -> None:
    import onnx

    from reid.apps.export import INPUT_NAME, onnx_session

    assert export.run(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {p.key: p.value for p in graph.metadata_props}["height"] == str(HEIGHT)
    paths = sorted((mini_market / "query").glob("*.jpg"))[:4]
    extractor = FeatureExtractor(checkpoint)
    batch = torch.stack([extractor.transform(Image.open(p).convert("RGB")) for p in paths])
    session = onnx_session(tmp_path / "model.onnx")
    for images, files in ((batch[:1], paths[:1]), (batch[1:], paths[1:])):  # batch sizes 1 and 3
        onnx_features = session.run(None, {INPUT_NAME: images.numpy()})[0]
        assert onnx_features.shape == (len(files), 1280)
        assert np.abs(onnx_features - extractor(files).numpy()).max() < 1e-4


# ---------------------------------------------------------------------------------- help and input errors
@pytest.mark.parametrize("main, name", [(embed.main, "reid-embed"), (search.main, "reid-search"),
                                        (export.main, "reid-export")])
def test_help(main, name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {name}")


@pytest.mark.parametrize("script", ["embed.py", "search.py", "export.py"])
def test_script_wrappers_run_main(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert exited.value.code == 0


def test_embed_input_errors_are_one_line(tmp_path: Path, checkpoint: Path, images: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    out = ["--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]
    with_checkpoint = ["--checkpoint", str(checkpoint), *out]
    assert _fails(embed.main, [str(images), "--checkpoint", str(tmp_path / "missing.pt"), *out], capsys) == \
        f"CheckpointError: checkpoint not found: {tmp_path / 'missing.pt'}"
    (tmp_path / "notes.txt").write_text("hello\n")
    assert "notes.txt: not a checkpoint (not a torch file: text starting 'hello')" in _fails(
        embed.main, [str(images), "--checkpoint", str(tmp_path / "notes.txt"), *out], capsys)
    (tmp_path / "empty").mkdir()
    assert _fails(embed.main, [str(tmp_path / "empty"), *with_checkpoint], capsys) == \
        f"DatasetError: images: no images (*.jpg, *.jpeg, *.png) under {tmp_path / 'empty'}"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    assert _fails(embed.main, [str(tmp_path / "bad"), *with_checkpoint], capsys).startswith(
        f"DatasetError: none of the 1 images under {tmp_path / 'bad'} can be read (e.g. ")
    assert _fails(embed.main, [str(images), *with_checkpoint, "--camera-regex", r"_cam(\d+)"], capsys) == (
        rf"DatasetError: data.camera_regex '_cam(\d+)' matches no file name under {images} (e.g. 0000_c1_00.jpg): "
        "expected its group to capture the camera in every file name")
    assert "expected exactly one group" in _fails(embed.main, [str(images), *with_checkpoint, "--camera-regex",
                                                               r"_c\d+"], capsys)
    assert f"data.camera_rule 'folder' finds no camera sub-folder under {tmp_path / 'bad'}" in _fails(
        embed.main, [str(tmp_path / "bad"), *with_checkpoint, "--camera-rule", "folder"], capsys)


def test_search_and_export_input_errors_are_one_line(tmp_path: Path, gallery: Path, images: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    query = str(images / "cam1" / "0000_c1_00.jpg")
    assert _fails(search.main, [query, "--gallery", str(images)], capsys) == (
        f"DatasetError: --gallery {images}: not a reid-embed output folder (no embed.json; expected "
        "features.npy, manifest.csv and embed.json)")
    (tmp_path / "unfinished" / "chunks").mkdir(parents=True)
    assert "an unfinished reid-embed output" in _fails(search.main, [query, "--gallery",
                                                                     str(tmp_path / "unfinished")], capsys)
    assert _fails(search.main, [str(tmp_path / "nope.jpg"), "--gallery", str(gallery)], capsys) == \
        f"DatasetError: queries: not found: {tmp_path / 'nope.jpg'}"
    save_checkpoint(training_state(load_config(None, TINY), build_model(arch="mobilenet_v2", pretrained="none"),
                                   None, stage="done"), tmp_path / "other.pt")
    assert "is not the checkpoint the gallery was embedded with" in _fails(
        search.main, [query, "--gallery", str(gallery), "--checkpoint", str(tmp_path / "other.pt")], capsys)
    assert "--exclude-same-camera needs camera labels" in _fails(
        search.main, [query, "--gallery", str(gallery), "--camera-rule", "none", "--exclude-same-camera"], capsys)
    assert _fails(export.main, ["--checkpoint", str(tmp_path / "missing.pt")], capsys) == \
        f"CheckpointError: checkpoint not found: {tmp_path / 'missing.pt'}"
