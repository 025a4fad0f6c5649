"""End to end: ``reid.train`` on tiny synthetic domains (both stages), its outputs, exact resume (also from a
checkpoint of the format before issue #16), ``reid.evaluate`` and the eval script."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import tiny_train

import reid
from reid.cli import eval_main
from reid.config import load_config, resolve_paths
from reid.engine.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_domains(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tiny_domains: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("run-full")
    tiny_train(tiny_domains, out)
    yield out
    shutil.rmtree(out, ignore_errors=True)  # ~0.4 GB of checkpoints: freed when the module ends, not the session


def test_both_stages_write_config_metrics_checkpoints_and_events(full_run: Path) -> None:
    assert (full_run / "config.yaml").is_file()
    rows = read_jsonl(full_run / "metrics.jsonl")
    kinds = [row["kind"] for row in rows]
    assert kinds.count("pretrain_epoch") == 2 and kinds.count("adapt_epoch") == 4
    evals = [row for row in rows if row["kind"] == "eval"]
    assert [(r["stage"], r["split"]) for r in evals][:2] == [("pretrain", "source_test"), ("pretrain", "target_test")]
    assert sum(r["stage"] == "adapt" for r in evals) == 2
    for row in evals:
        assert 0 <= row["mAP"] <= 1 and 0 <= row["R1"] <= row["R5"] <= row["R10"] <= 1
    clusters = [row for row in rows if row["kind"] == "cluster"]
    assert len(clusters) == 2
    # cluster bookkeeping is consistent: clustered + outliers = all target-train images
    sizes = clusters[0]["cluster_size_histogram"]
    assert clusters[0]["num_clusters"] == sum(sizes.values())
    assert clusters[0]["eps"] == pytest.approx(0.5)
    assert "pairwise_precision" in clusters[0]["diagnostic_uses_target_labels"]
    adapt_epoch = next(row for row in rows if row["kind"] == "adapt_epoch")
    assert {"triplet", "gds_l_gds", "gds_l_h", "gds_mu_pos", "gds_var_neg"} <= set(adapt_epoch)
    for name in ("last.pt", "source.pt", "final.pt"):
        assert (full_run / "checkpoints" / name).is_file()
    final = load_checkpoint(full_run / "checkpoints" / "final.pt")
    assert final["stage"] == "done" and final["round"] == 2
    assert bool(final["gds"]["initialized"].all())
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["adapt"]["mAP"] == pytest.approx(evals[-1]["mAP"])
    source = load_checkpoint(full_run / "checkpoints" / "source.pt")
    assert (source["stage"], source["epoch"], source["format"]) == ("pretrained", 0, 2)  # the end of stage 1
    for state in (source, final):  # stage 2 carries the stage-1 metrics on: a resumed run's summary is complete
        assert state["pretrain_metrics"]["target"]["mAP"] == summary["pretrain"]["target"]["mAP"]


def test_tensorboard_event_file_holds_scalars_and_distance_histograms(full_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(full_run), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    scalars, histograms = events.Tags()["scalars"], events.Tags()["histograms"]
    for tag in ("cluster/num_clusters", "cluster/eps", "adapt_epoch/gds_mu_pos", "adapt_epoch/triplet",
                "eval_adapt/target_test/mAP", "train/loss"):
        assert tag in scalars, tag
    for tag in ("pseudo_label_distances/positive", "pseudo_label_distances/negative",
                "gds_batch_distances/positive", "gds_batch_distances/negative"):
        assert tag in histograms, tag
    positive = events.Histograms("pseudo_label_distances/positive")[0].histogram_value
    assert 0 <= positive.min <= positive.max <= 2  # Euclidean distances of unit vectors
    num_clusters = [e.value for e in events.Scalars("cluster/num_clusters")]
    rows = [r for r in read_jsonl(full_run / "metrics.jsonl") if r["kind"] == "cluster"]
    assert num_clusters == [r["num_clusters"] for r in rows]



def _assert_same_final_weights(expected_run: Path, run: Path) -> tuple[dict, dict]:
    """Both runs' final.pt hold bit-identical model weights and GDS buffers; returns (expected, resumed)."""
    expected = load_checkpoint(expected_run / "checkpoints" / "final.pt")
    resumed = load_checkpoint(run / "checkpoints" / "final.pt")
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for key, value in expected["gds"].items():
        assert torch.equal(resumed["gds"][key], value), key
    return expected, resumed

def test_resume_after_stopping_between_rounds_reproduces_the_uninterrupted_run(
        tiny_domains: Path, full_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tiny_train(tiny_domains, out, "adapt.rounds=1")  # stops after round 0
    tiny_train(tiny_domains, out, resume="auto")
    expected, resumed = _assert_same_final_weights(full_run, out)
    assert resumed["history"][-1]["mAP"] == expected["history"][-1]["mAP"]


def test_a_run_folder_written_before_issue_16_still_resumes_exactly(tiny_domains: Path, full_run: Path,
                                                                  tmp_path: Path) -> None:
    """Format 1: source.pt (and last.pt after stage 1) said stage "adapt", round 0, without GDS state, and the
    stage-2 checkpoints did not carry the stage-1 metrics (source.pt next to them did)."""
    expected_summary = json.loads((full_run / "summary.json").read_text())
    stage1_end = load_checkpoint(full_run / "checkpoints" / "source.pt")
    legacy = {key: stage1_end[key] for key in ("model", "arch", "trainer", "epoch", "round", "config",
                                               "pretrain_metrics")}
    legacy.update(format=1, stage="adapt", rng={"torch": torch.get_rng_state()})
    out = tmp_path / "run"
    save_checkpoint(legacy, out / "checkpoints" / "source.pt")
    save_checkpoint(legacy, out / "checkpoints" / "last.pt")
    tiny_train(tiny_domains, out, resume="auto")
    expected, resumed = _assert_same_final_weights(full_run, out)
    assert resumed["history"] == expected["history"]
    assert json.loads((out / "summary.json").read_text()) == expected_summary
    # a format-1 stage-2 checkpoint: the stage-1 metrics come from the source.pt next to it
    done = {key: value for key, value in resumed.items() if key != "pretrain_metrics"}
    save_checkpoint({**done, "format": 1}, out / "checkpoints" / "last.pt")
    summary = tiny_train(tiny_domains, out, resume="auto")  # adapt.rounds already done: nothing left to train
    assert summary["pretrain"] == expected_summary["pretrain"]


def test_gds_feature_routes_gds_to_the_bnneck_output_while_the_triplet_stays(tiny_domains: Path, full_run: Path,
                                                                              tmp_path: Path) -> None:
    # ReLU-pooled features are all positive: cosine >= 0, normalised distances well below sqrt(2) (0.90 here,
    # 0.1 on the demo). The BNNeck output is centred per dimension over the batch (train mode), so its pairs are
    # near-orthogonal on average: distances near sqrt(2) (1.46 here).
    source = full_run / "checkpoints" / "source.pt"
    first_epoch = {}
    for feature in ("before", "after"):
        out = tmp_path / feature
        tiny_train(tiny_domains, out, f"gds.feature={feature}", "adapt.rounds=1", f"pretrain.checkpoint={source}")
        first_epoch[feature] = next(r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "adapt_epoch")
    before, after = first_epoch["before"]["gds_batch_mu_neg"], first_epoch["after"]["gds_batch_mu_neg"]
    assert before < 1.2 and abs(after - 2 ** 0.5) < 0.15, (before, after)
    # same batches, same triplet (on adapt.loss_feature = before) in the first epoch's first step ...
    assert first_epoch["before"]["triplet_precision"] == first_epoch["after"]["triplet_precision"]


def test_eval_script_writes_metrics_and_three_plots(tiny_domains: Path, full_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    config = full_run / "config.yaml"  # the resolved config of the run
    out = tmp_path / "eval"
    assert eval_main(["--config", str(config), "--checkpoint", str(full_run / "checkpoints" / "final.pt"),
                      "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "R1" in printed and "mAP" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    final = load_checkpoint(full_run / "checkpoints" / "final.pt")
    assert metrics["mAP"] == pytest.approx(final["history"][-1]["mAP"], abs=1e-9)
    for name in ("cmc.png", "distances.png", "ranked_lists.png"):
        assert (out / name).stat().st_size > 1000, name


def test_evaluate_an_untrained_backbone_and_a_source_checkpoint(full_run: Path, tmp_path: Path) -> None:
    cfg = resolve_paths(load_config(full_run / "config.yaml"))
    untrained = reid.evaluate(cfg, out=tmp_path / "untrained")
    assert untrained.info["checkpoint"] == "untrained (none)" and untrained.out == tmp_path / "untrained"
    source = str(full_run / "checkpoints" / "source.pt")
    report = reid.evaluate(cfg, source, out=tmp_path / "source")  # has a classifier head: ignored
    assert report.written == ["metrics.json", "cmc.png", "distances.png", "ranked_lists.png", "report.html"]
    direct = json.loads((tmp_path / "source" / "metrics.json").read_text())
    assert direct == json.loads(json.dumps(report.info)) and report.metrics["mAP"] == direct["mAP"]
    rows = read_jsonl(full_run / "metrics.jsonl")
    target_direct = next(r for r in rows if r["kind"] == "eval" and r["split"] == "target_test")
    assert direct["mAP"] == pytest.approx(target_direct["mAP"], abs=1e-9)
    assert np.isfinite(json.loads((tmp_path / "untrained" / "metrics.json").read_text())["mAP"])


def test_evaluate_on_real_mini_market_images(mini_market: Path, tmp_path: Path) -> None:
    """An untrained tiny ResNet-18 on the 96 real Market-1501 images: the files are written and the metrics
    equal evaluate_rank on features extracted independently."""
    from reid.data.datasets import build_dataset
    from reid.data.loaders import build_test_loader
    from reid.evaluation import evaluate_rank
    from reid.evaluation.features import extract_features, pairwise_distance
    from reid.models import build_model

    out = tmp_path / "eval"
    overrides = ["model.arch=resnet18", "model.pretrained=none", "data.height=64", "data.width=32",
                 "data.workers=0", "device=cpu", "seed=3"]
    cfg = resolve_paths(load_config(REPO / "configs" / "demo.yaml", overrides))
    reid.evaluate(cfg, dataset="market-format", root=str(mini_market), out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("cmc.png", "distances.png", "ranked_lists.png"):
        assert (out / name).stat().st_size > 1000, name
    dataset = build_dataset("market-format", mini_market)
    assert len(dataset.query) == 32 and len(dataset.gallery) == 32
    torch.manual_seed(3)  # the script builds the model right after seeding with cfg.seed
    model = build_model(arch="resnet18", pretrained="none")
    qf, q_pids, q_cams = extract_features(model, build_test_loader(dataset.query, 64, 32, 64, 0))
    gf, g_pids, g_cams = extract_features(model, build_test_loader(dataset.gallery, 64, 32, 64, 0))
    expected = evaluate_rank(pairwise_distance(qf, gf), q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-9)


def test_eval_script_camera_norm_row_on_real_mini_market_images(mini_market: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """``eval.camera_norm=center`` (transductive): the headline metrics stay the standard protocol's, and the
    extra row equals evaluate_rank after centring each camera's query + gallery features by its own mean,
    computed here with a plain loop over cameras."""
    from reid.data.datasets import build_dataset
    from reid.data.loaders import build_test_loader
    from reid.evaluation import evaluate_rank
    from reid.evaluation.features import extract_features, pairwise_distance
    from reid.models import build_model

    overrides = ["model.arch=resnet18", "model.pretrained=none", "data.height=64", "data.width=32",
                 "data.workers=0", "device=cpu", "seed=3"]
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--dataset", "market-format", "--root",
            str(mini_market)] + sum([["--set", o] for o in overrides], [])
    assert eval_main(argv + ["--out", str(tmp_path / "plain")]) == 0
    assert eval_main(argv + ["--out", str(tmp_path / "camera"), "--set", "eval.camera_norm=center"]) == 0
    assert "+ camera center (transductive)" in capsys.readouterr().out
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    camera = json.loads((tmp_path / "camera" / "metrics.json").read_text())
    assert "camera_norm" not in plain and camera["mAP"] == plain["mAP"]  # the headline is unchanged

    dataset = build_dataset("market-format", mini_market)
    torch.manual_seed(3)
    model = build_model(arch="resnet18", pretrained="none")
    qf, q_pids, q_cams = extract_features(model, build_test_loader(dataset.query, 64, 32, 64, 0))
    gf, g_pids, g_cams = extract_features(model, build_test_loader(dataset.gallery, 64, 32, 64, 0))
    features, cams = torch.cat([qf, gf]).double(), np.concatenate([q_cams, g_cams])
    for cam in np.unique(cams):
        rows = torch.from_numpy(np.flatnonzero(cams == cam))
        features[rows] -= features[rows].mean(dim=0)
    features = torch.nn.functional.normalize(features, dim=1).float()
    expected = evaluate_rank(pairwise_distance(features[: len(qf)], features[len(qf):]), q_pids, g_pids, q_cams,
                             g_cams, max_rank=10)
    assert camera["camera_norm"]["mode"] == "center"
    assert camera["camera_norm"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert camera["camera_norm"]["mAP"] != pytest.approx(plain["mAP"], abs=1e-4)  # it did change the ranking


CAMERA_RECIPE = ("adapt.loss=both", "cluster.camera_norm=center", "cluster.camera_jaccard=true", "cluster.eps=0.3",
                 "adapt.camera_balanced=true", "eval.camera_norm=center")


def test_camera_aware_recipe_logs_cross_camera_diagnostics_and_camera_rows(tiny_domains: Path, full_run: Path,
                                                                            tmp_path: Path) -> None:
    source = f"pretrain.checkpoint={full_run / 'checkpoints' / 'source.pt'}"
    camera_bn = ("cluster.camera_bn=true", "adapt.camera_bn=true", "eval.camera_bn=true")
    tiny_train(tiny_domains, tmp_path, source, *CAMERA_RECIPE, *camera_bn, "adapt.memory_camera=true")
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    clusters = [r for r in rows if r["kind"] == "cluster"]
    assert len(clusters) == 2
    for record in clusters:
        assert record["num_cameras"] == 8  # synth-b
        assert 0 < record["cross_camera_cluster_fraction"] <= 1 and record["mean_cameras_per_cluster"] >= 1
        assert "cross_camera_pairwise_precision" in record["diagnostic_uses_target_labels"]
    epochs = [r for r in rows if r["kind"] == "adapt_epoch"]
    assert epochs and all({"memory", "memory_intra", "memory_inter", "triplet", "gds_total"} <= set(r) for r in epochs)
    splits = [(r["round"], r["split"]) for r in rows if r["kind"] == "eval" and r["stage"] == "adapt"]
    assert splits == [(0, "target_test"), (0, "target_test_camera_bn+center"), (1, "target_test"),
                      (1, "target_test_camera_bn+center")]
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")["memory"]  # CAP proxies: (cluster, camera)
    assert final["proxies"].shape[0] == len(final["labels"]) == len(final["cameras"]) > 0
    torch.testing.assert_close(final["proxies"].norm(dim=1), torch.ones(final["proxies"].shape[0]))
    pairs = torch.stack([final["labels"], final["cameras"]], dim=1)
    assert len(torch.unique(pairs, dim=0)) == len(pairs)  # one proxy per (cluster, camera)
    assert len(torch.unique(final["cameras"])) > 1


def test_camera_aware_switches_fall_back_with_one_line_on_a_single_camera_target(
        tiny_domains: Path, full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    target = tmp_path / "one-camera"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (target / split).mkdir(parents=True)
        for index, path in enumerate(sorted((tiny_domains / "synth-b" / split).glob("*.jpg"))):
            camera = "c1" if split == "bounding_box_train" else path.name.split("_")[1][:2]
            shutil.copy(path, target / split / f"{path.name.split('_')[0]}_{camera}s1_{index:06d}_01.jpg")
    source = f"pretrain.checkpoint={full_run / 'checkpoints' / 'source.pt'}"
    out = tmp_path / "run"
    tiny_train(tiny_domains, out, source, f"data.target_root={target}", "data.target=market-format",
               *CAMERA_RECIPE, "adapt.memory_camera=true")
    printed = capsys.readouterr().out
    assert printed.count("1 camera in the target train split: camera-aware clustering, sampling, BN and memory "
                         "fall back to their plain forms") == 1
    assert load_checkpoint(out / "checkpoints" / "final.pt")["memory"].ndim == 2  # the plain cluster memory
    clusters = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "cluster"]
    assert [r["num_cameras"] for r in clusters] == [1, 1]
    assert all(r["cross_camera_cluster_fraction"] == 0 for r in clusters)


def test_gds_start_round_skips_gds_h_in_warm_up_rounds_and_overlap_mining_runs(tiny_domains: Path, full_run: Path,
                                                                               tmp_path: Path) -> None:
    # gds.start_round=1: round 0 trains on the triplet alone (GDS-H not called: no gds_* terms, loss = triplet);
    # round 1 adds GDS-H, here with gds.mining=overlap (its hard-pair counts are logged)
    source = f"pretrain.checkpoint={full_run / 'checkpoints' / 'source.pt'}"
    tiny_train(tiny_domains, tmp_path, source, "gds.start_round=1", "gds.mining=overlap",
               "adapt.epochs_per_round=1", "adapt.eval_every=2")
    epochs = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "adapt_epoch"]
    assert [r["round"] for r in epochs] == [0, 1]
    for record in epochs[:1]:
        assert not any(key.startswith("gds_") for key in record), record
        assert record["loss"] == pytest.approx(record["triplet"], abs=1e-6)
    for record in epochs[1:]:
        assert {"gds_l_gds", "gds_l_h", "gds_mu_pos", "gds_num_hard_pos_pairs", "gds_num_hard_neg_pairs"} <= set(record)
        assert record["loss"] > record["triplet"]
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert bool(final["gds"]["initialized"].all())


def test_gds_core_pairs_and_gradient_fraction_weight_rule(tiny_domains: Path, full_run: Path, tmp_path: Path) -> None:
    """gds.pairs=core runs and keeps fewer positive pairs than all pairs would; gds.weight_rule=fraction sets the
    weight every step so that GDS-H's gradient norm is gds.grad_fraction of the triplet's (logged fraction = 0.25
    at every step, hence in the epoch mean); the fixed rule logs weight = gds.weight and a positive fraction."""
    source = f"pretrain.checkpoint={full_run / 'checkpoints' / 'source.pt'}"
    fixed, ruled = tmp_path / "fixed", tmp_path / "ruled"
    tiny_train(tiny_domains, fixed, source, "adapt.rounds=1", "gds.weight_rule=fixed", "gds.weight=0.5")
    tiny_train(tiny_domains, ruled, source, "adapt.rounds=1", "gds.pairs=core", "gds.weight_rule=fraction",
               "gds.grad_fraction=0.25")
    plain = [r for r in read_jsonl(fixed / "metrics.jsonl") if r["kind"] == "adapt_epoch"]
    core = [r for r in read_jsonl(ruled / "metrics.jsonl") if r["kind"] == "adapt_epoch"]
    assert plain and core
    for record in plain:
        assert record["gds_weight"] == 0.5 and 0 < record["gds_grad_fraction"] < 10
    for record in core:
        assert record["gds_grad_fraction"] == pytest.approx(0.25, rel=1e-5)
        assert record["gds_weight"] > 0
    # same pseudo-labels and batches in both runs (same source, seed): core pairs are a subset of all pairs
    assert sum(r["gds_num_pos_pairs"] for r in core) <= sum(r["gds_num_pos_pairs"] for r in plain)
    assert load_checkpoint(ruled / "checkpoints" / "final.pt")["core"] is None  # only mid-round states carry it
    last = load_checkpoint(ruled / "checkpoints" / "last.pt")
    assert last["core"] is None or last["core"].dtype == torch.bool


def test_large_target_switches_run_a_round_end_to_end(tiny_domains: Path, full_run: Path, tmp_path: Path) -> None:
    """cluster.knn=projected with float16 clustering features: the round clusters, trains and evaluates; the
    eps it logs is the rule's value on the distance those neighbours give (in (0, 1))."""
    source = f"pretrain.checkpoint={full_run / 'checkpoints' / 'source.pt'}"
    tiny_train(tiny_domains, tmp_path, source, "adapt.rounds=1", "cluster.knn=projected", "cluster.knn_dim=16",
               "cluster.knn_candidates=30", "cluster.feature_dtype=float16")
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    clusters = [r for r in rows if r["kind"] == "cluster"]
    assert len(clusters) == 1 and 0 < clusters[0]["eps"] < 1 and clusters[0]["num_clusters"] > 1
    assert [r for r in rows if r["kind"] == "adapt_epoch"]
    assert (tmp_path / "checkpoints" / "final.pt").is_file()
