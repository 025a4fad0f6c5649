"""The accuracy-study scripts on tiny synthetic domains: ablate.py, sweep.py, gds_gradients.py, cluster_quality.py.

Each table cell is checked against the run folders it came from (metrics.jsonl, config.yaml), read here
independently of the scripts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_run import REPO, TINY_OVERRIDES

from reid.cluster import generate_pseudo_labels
from reid.config import load_config
from reid.data.loaders import build_test_loader
from reid.engine.checkpoint import load_checkpoint, load_model_weights
from reid.engine.inputs import load_domain
from reid.evaluation.features import extract_features
from reid.models import model_from


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("synthetic")
    cfg = load_config(REPO / "configs" / "demo.yaml", TINY_OVERRIDES)
    for name in ("synth-a", "synth-b"):
        load_domain(name, str(data / name), cfg, verbose=False)
    return data


def overrides(data: Path) -> list[str]:
    args = []
    for item in [f"data.source_root={data}/synth-a", f"data.target_root={data}/synth-b", *TINY_OVERRIDES]:
        args += ["--set", item]
    return args


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def final_target_map(run_dir: Path, stage: str) -> float:
    # read here, not with reid.read_metrics (what the scripts use): the check stays independent of them
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval" and r["stage"] == stage and r["split"] == "target_test"][-1]["mAP"]


@pytest.fixture(scope="module")
def ablation(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("ablate")
    script("ablate.py", "--config", "configs/demo.yaml", "--seeds", "0", "--out", str(out),
           "--methods", "baseline (triplet)", "+ GDS-H", *overrides(tiny_data))
    yield out
    shutil.rmtree(out, ignore_errors=True)  # ~0.8 GB of checkpoints: freed when the module ends, not the session


def table_cells(table: str, row: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_ablate_table_reports_each_method_from_its_own_run(ablation: Path) -> None:
    table = (ablation / "table.md").read_text()
    seed = ablation / "seed0"
    expected = {"direct transfer": final_target_map(seed / "source", "pretrain"),
                "baseline (triplet)": final_target_map(seed / "baseline_triplet", "adapt"),
                "+ GDS-H": final_target_map(seed / "+_GDS-H", "adapt")}
    for method, value in expected.items():
        assert table_cells(table, method)[1] == f"{100 * value:.1f} ± 0.0"
    baseline = yaml.safe_load((seed / "baseline_triplet" / "config.yaml").read_text())
    gds_h = yaml.safe_load((seed / "+_GDS-H" / "config.yaml").read_text())
    assert baseline["gds"]["enabled"] is False and gds_h["gds"]["enabled"] is True and gds_h["gds"]["hard"] is True
    assert gds_h["pretrain"]["checkpoint"].endswith("seed0/source/checkpoints/source.pt")
    assert (ablation / "map_per_round.png").stat().st_size > 1000


def test_sweep_rows_differ_only_by_the_knob_and_report_deltas_to_the_baseline(
        ablation: Path, tiny_data: Path, tmp_path: Path) -> None:
    source = ablation / "seed0" / "source" / "checkpoints" / "source.pt"
    stdout = script("sweep.py", "--config", "configs/demo.yaml", "--source", str(source), "--out", str(tmp_path),
                    "--vary", "gds.weight=5", "--extra", "both:gds.weight=5;gds.momentum=0", *overrides(tiny_data))
    assert "gds.weight=5 (seed 0): mAP" in stdout
    runs = {"baseline (triplet)": "baseline_triplet_s0", "GDS-H defaults": "GDS-H_defaults_s0",
            "gds.weight=5": "gds.weight-5_s0", "both": "both_s0"}
    table = (tmp_path / "sweep.md").read_text()
    baseline = final_target_map(tmp_path / runs["baseline (triplet)"], "adapt")
    for name, folder in runs.items():
        value = final_target_map(tmp_path / folder, "adapt")
        cells = table_cells(table, name)
        assert cells[2] == f"{100 * value:.1f}" and cells[3] == f"{100 * (value - baseline):+.1f}"
    configs = {name: yaml.safe_load((tmp_path / folder / "config.yaml").read_text())["gds"]
               for name, folder in runs.items()}
    assert configs["gds.weight=5"]["weight"] == 5.0 and configs["gds.weight=5"]["momentum"] == \
        configs["GDS-H defaults"]["momentum"]
    assert configs["both"]["weight"] == 5.0 and configs["both"]["momentum"] == 0.0
    assert configs["baseline (triplet)"]["enabled"] is False


def test_gradient_diagnostic_scales_with_one_minus_beta(ablation: Path, tiny_data: Path) -> None:
    source = ablation / "seed0" / "source" / "checkpoints" / "source.pt"
    stdout = script("gds_gradients.py", "--config", "configs/demo.yaml", "--checkpoint", str(source),
                    "--batches", "2", *overrides(tiny_data))
    rows = [line for line in stdout.splitlines() if re.match(r"\| (before|after) BNNeck", line)]
    assert len(rows) == 4
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        mu_pos, mu_neg = float(cells[2]), float(cells[4])
        grad_slow, grad_fast = float(cells[8]), float(cells[10])
        assert 0 < mu_pos and 0 < mu_neg
        # GDS.md: the gradient flows through the batch statistics only, scaled by (1 - beta) = 0.1 vs. 1
        assert 4 < grad_fast / grad_slow < 25, row


def test_cluster_quality_sweeps_eps_and_counts_pairs_as_by_hand(ablation: Path, tiny_data: Path) -> None:
    source = ablation / "seed0" / "source" / "checkpoints" / "source.pt"
    stdout = script("cluster_quality.py", "--config", "configs/demo.yaml", "--checkpoint", str(source),
                    "--features", "plain", "--camera-norm", "none", "center", "--camera-jaccard", "false",
                    "--eps", "auto", "0.45", *overrides(tiny_data), "--set", "cluster.rho=0.05")  # 72 images
    rows = [line for line in stdout.splitlines() if line.startswith("features ")]
    assert len(rows) == 4
    assert [row.split()[3] for row in rows] == ["none", "none", "center", "center"]
    assert rows[1].split()[7] == "0.450" and rows[3].split()[7] == "0.450"
    assert rows[0].split()[7] != "0.450"  # the rho rule's radius, not the fixed one
    # the fixed-eps, plain row: the same pseudo-labels computed here, their pairs counted by hand
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides(tiny_data)[1::2])
    train = load_domain(cfg.data.target, str(tiny_data / "synth-b"), cfg, verbose=False).train
    model = model_from(cfg.model, pretrained="none")
    load_model_weights(model, load_checkpoint(str(source)), str(source), skip_classifier=True)
    features, pids, cams = extract_features(model, build_test_loader(train, cfg.data.height, cfg.data.width, 64, 0))
    c = cfg.cluster
    labels, _ = generate_pseudo_labels(features.numpy(), 0.45, k1=c.k1, k2=c.k2, min_samples=c.min_samples,
                                       camids=cams)
    pids = np.asarray(pids)
    same_cluster = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    same_id = pids[:, None] == pids[None, :]
    upper = np.triu(np.ones_like(same_id), k=1)
    together, true_pairs = (same_cluster & upper).sum(), (same_id & upper).sum()
    assert labels.max() >= 1 and together > 0  # clusters to count: the comparison below is not 0 == 0
    precision = (same_cluster & same_id & upper).sum() / max(together, 1)
    recall = (same_cluster & same_id & upper).sum() / true_pairs
    fields = rows[1].split()
    assert int(fields[9]) == labels.max() + 1
    assert fields[fields.index("P") + 1] == f"{precision:.3f}" and fields[fields.index("R") + 1] == f"{recall:.3f}"
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "cluster_quality.py"), "--config",
                          "configs/demo.yaml", "--checkpoint", str(source), "--eps", "1.5"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "--eps: expected 'auto' or a number in (0, 1), got '1.5'" in bad.stderr


def test_cluster_quality_on_unlabelled_cameras_prints_label_free_columns_as_by_hand(ablation: Path, tiny_data: Path,
                                                                                   tmp_path: Path) -> None:
    """A folder of unlabelled cameras (data.target: folder): no label-using column, and the label-free ones (share
    of clusters spanning >= 2 cameras, largest cluster's share) equal what is counted here from the same clustering."""
    source = ablation / "seed0" / "source" / "checkpoints" / "source.pt"
    root = tmp_path / "my-cameras"
    for path in sorted((tiny_data / "synth-b" / "bounding_box_train").glob("*.jpg")):
        camera = re.match(r"\d+_c(\d+)s", path.name).group(1)
        (root / f"cam{camera}").mkdir(parents=True, exist_ok=True)
        (root / f"cam{camera}" / path.name.replace("_", "-")).symlink_to(path)  # the name carries no usable id
    folder = ["--set", "data.target=folder", "--set", f"data.target_root={root}", "--set", "data.camera_rule=folder"]
    stdout = script("cluster_quality.py", "--config", "configs/demo.yaml", "--checkpoint", str(source),
                    "--features", "plain", "--camera-norm", "center", "--camera-jaccard", "false",
                    "--eps", "0.45", *overrides(tiny_data), *folder, "--set", "cluster.rho=0.05")
    assert f"{root}: the target-train split has no identity labels; label-free columns only" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("features ")]
    assert len(rows) == 1 and "labels" not in rows[0] and " P " not in rows[0]
    fields = rows[0].split()

    cfg = load_config(REPO / "configs" / "demo.yaml", [*overrides(tiny_data)[1::2], *folder[1::2]])
    train = load_domain("folder", str(root), cfg, verbose=False).train
    model = model_from(cfg.model, pretrained="none")
    load_model_weights(model, load_checkpoint(str(source)), str(source), skip_classifier=True)
    features, _, cams = extract_features(model, build_test_loader(train, cfg.data.height, cfg.data.width, 64, 0))
    c = cfg.cluster
    labels, _ = generate_pseudo_labels(features.numpy(), 0.45, k1=c.k1, k2=c.k2, min_samples=c.min_samples,
                                       camids=cams, camera_norm="center")
    cams = np.asarray(cams)
    cameras_of = [set(cams[labels == k]) for k in range(labels.max() + 1)]
    assert len(cameras_of) >= 2 and len(set(cams)) >= 2  # clusters and cameras to count
    cross = sum(len(cameras) >= 2 for cameras in cameras_of) / len(cameras_of)
    largest = max(int((labels == k).sum()) for k in range(labels.max() + 1)) / len(labels)
    assert int(fields[fields.index("clusters") + 1]) == len(cameras_of)
    assert fields[fields.index("outliers") + 1] == f"{np.mean(labels < 0):.2f}"
    assert fields[fields.index("cross-camera") + 1] == f"{cross:.2f}"
    assert fields[fields.index("largest") + 1] == f"{largest:.3f}"
