"""Typed configuration: dataclass schema, YAML loading, ``--set`` overrides and validation.

The config is parsed once, in ``scripts/``, into :class:`Config`; components receive the few values they need.

Example::

    cfg = load_config("configs/demo.yaml", overrides=["adapt.rounds=2", "gds.weight=0.5"])
    cfg.gds.weight  # 0.5

Paths may reference environment variables as ``${NAME}`` or ``${NAME:-default}``; they are expanded by
:func:`expand_path`, never by a shell.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from reid.config_parse import build_section, deep_copy, expand_path, parse_override_value, suggest
from reid.errors import ConfigError
from reid.names import ARCHITECTURES, SOURCE_NAMES, TARGET_NAMES, UNLABELLED


@dataclass
class DataConfig:
    source: str = "synth-a"            # dataset name: market1501 | dukemtmcreid | msmt17 | market-format | synth-a | synth-b
    source_root: str = "data/synthetic/synth-a"
    target: str = "synth-b"            # the names above, or folder (target only: unlabelled images, see below)
    target_root: str = "data/synthetic/synth-b"
    # target: folder (your own cameras): target_root is any tree of *.jpg / *.jpeg / *.png, no identities. Camera ids
    # by camera_rule: none (every image camera 0; camera-aware options fall back), folder (the first-level
    # sub-folder of target_root holding the image), regex (camera_regex, exactly one group, searched in the file
    # name, e.g. '_c(\d+)'); camera names -> 0..C-1 in sorted order (as integers when all are numbers)
    camera_rule: Literal["none", "folder", "regex"] = "none"
    camera_regex: str = ""
    # target: folder only: a labelled test split in Market-1501 layout (query/, bounding_box_test/), evaluated as
    # usual; empty: no evaluation (stage 1 skips direct transfer, stage 2 logs label-free clustering signals only)
    target_test_root: str = ""
    height: int = 256
    width: int = 128
    batch_size: int = 64               # P x K images per training step
    num_instances: int = 4             # K images per identity in a batch
    test_batch_size: int = 128
    workers: int = 4
    flip_prob: float = 0.5
    pad: int = 10
    random_erasing_prob: float = 0.5
    on_bad_image: Literal["fail", "skip"] = "fail"
    # synthetic domains only: generated into *_root when missing
    synthetic_train_ids: int = 200
    synthetic_test_ids: int = 100
    synthetic_images_per_id: int = 12


@dataclass
class ModelConfig:
    arch: Literal[ARCHITECTURES] = "resnet50"  # the table: reid/names.py
    pretrained: str = "imagenet"       # imagenet | none | <path to a torchvision-format state dict>
    last_stride: int = 1
    pooling: Literal["avg", "gem"] = "avg"
    gem_p: float = 3.0
    embedding_dim: int = 0             # 0: use the backbone's feature size, no projection layer
    neck_feat: Literal["before", "after"] = "after"  # retrieval embedding: before or after the BNNeck


@dataclass
class PretrainConfig:
    enabled: bool = True
    checkpoint: str = ""               # path to a source model: skips stage 1
    epochs: int = 80
    iters_per_epoch: int = 0           # 0: one pass over the sampler
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: int = 10
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    eval_source: bool = True
    eval_target: bool = True
    # camera-based BN in source training (Zhuang et al.): every camera normalised with its own batch statistics
    camera_bn: bool = False


@dataclass
class AdaptConfig:
    enabled: bool = True
    rounds: int = 30
    epochs_per_round: int = 2
    iters_per_epoch: int = 0           # 0: one pass over the pseudo-labelled sampler
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3.5e-5
    weight_decay: float = 5e-4
    momentum: float = 0.9
    eval_every: int = 1
    # which embedding the triplet and GDS losses see in stage 2: "after" the BNNeck (centred: the one clustering
    # and retrieval use) or "before" it (ReLU-pooled, all-positive: normalised distances crowd near 0)
    loss_feature: Literal["before", "after"] = "before"
    # stage-2 loss: batch-hard "triplet" (on loss_feature), the cluster "memory" (Cluster Contrast: InfoNCE over
    # momentum-updated cluster centroids, on the retrieval embedding), or "both" (summed); GDS-H adds to any
    loss: Literal["triplet", "memory", "both"] = "triplet"
    memory_temperature: float = 0.05   # Cluster Contrast's value
    memory_momentum: float = 0.1       # weight of the old centroid per image update (Cluster Contrast's value)
    # camera-aware memory (CAP): one proxy per (cluster, camera), an intra-camera InfoNCE + memory_inter_weight x
    # an inter-camera loss over the cluster's proxies in every camera against the hardest other-cluster proxies
    memory_camera: bool = False
    memory_inter_weight: float = 0.5   # CAP's value
    memory_hard_negatives: int = 50    # CAP's value
    # P x K batches whose K images of a pseudo-identity come from as many cameras as its cluster spans
    camera_balanced: bool = False
    # camera-based BN (Zhuang et al., ECCV 2020): in each training batch every camera's images are normalised
    # with their own batch statistics (in one forward: reid/models/camera_bn.py)
    camera_bn: bool = False


@dataclass
class ClusterConfig:
    eps: Any = "auto"                  # "auto" (UDA_TP rho rule, fixed after round 1) or a number in (0, 1)
    rho: float = 1.6e-3
    min_samples: int = 4
    k1: int = 20
    k2: int = 6
    # camera awareness (each falls back to the plain form, with one log line, without camera ids or with one
    # camera): per-camera centring / standardisation of the features before the distance (statistics from the
    # images being clustered), and the camera-aware Jaccard distance (CA-Jaccard: intra- and inter-camera
    # k-reciprocal neighbours found separately; k1/k2 are then unused)
    camera_norm: Literal["none", "center", "standardize"] = "none"
    camera_jaccard: bool = False
    # per-camera BN statistics for the clustering features: each camera's BN statistics re-estimated from its
    # own unlabelled images before its features are extracted (applied before camera_norm)
    camera_bn: bool = False
    k1_intra: int = 5
    k1_inter: int = 20
    k2_intra: int = 2
    k2_inter: int = 4
    # large targets (README "Clustering a large target"): how the plain distance finds its k1 neighbours:
    # exact | projected (random-projection candidates, re-ranked) | ivf (k-means lists on the centred features,
    # optionally without their leading directions) | auto (projected from 50,000 images); split across ranks
    knn: Literal["exact", "projected", "ivf", "auto"] = "exact"
    knn_dim: int = 0                   # projected: sketch dimensions; 0: 512. ivf: sketch of the partition space; 0: none
    knn_candidates: int = 0            # projected: candidates re-ranked per image; 0: 4 x k1
    knn_nlist: int = 0                 # ivf: inverted lists; 0: 4 sqrt(N)
    knn_nprobe: int = 0                # ivf: lists each list is joined with, itself included; 0: 8
    knn_drop: int = -1                 # ivf: leading principal components removed before filing; -1: 0 (<= D/8)
    knn_train_dim: int = 0             # ivf: k-means and filing in a sketch this wide, 8 centroids re-ranked; 0: full
    # float16 halves the clustering features' memory; products in float32
    feature_dtype: Literal["float32", "float16"] = "float32"


@dataclass
class GDSConfig:
    # Defaults from the sweep on the demo pair (docs/RESULTS.md, "GDS-H sensitivity"); no knob moved target mAP
    # beyond run-to-run noise except a stronger pull, which hurt. Reasons, one per knob:
    enabled: bool = True
    weight: float = 1.0          # weight_rule fixed: 10 / 30 / 100 gave -0.8 / -1.3 / -7.3 mAP vs. 1: a stronger pull
                                 # fights the triplet
    momentum: float = 0.9        # 0 / 0.99 within noise; the gradient flows through (1 - beta) x batch stats only
    lambda_sigma: float = 1.0    # 0 / 100 within noise: normalised-distance variances are ~1e-4
    lambda_h: float = 1.0        # 0 (plain GDS) / 3 within noise; 1 is GDS-H as the paper states it
    kappa: float = 1.0           # 3 within noise (-1.0 mAP)
    normalize: bool = True       # raw distances within noise (+0.4); normalised keeps the scale backbone-independent
    hard: bool = True
    # which embedding GDS-H measures: "auto" follows adapt.loss_feature; "after" the BNNeck (the centred
    # retrieval embedding) while the triplet stays on adapt.loss_feature, or "before" it. "after": within
    # noise at weight 1, -1.9 mAP at weight 10
    feature: Literal["auto", "before", "after"] = "auto"
    # GDS-H hard mining (issue 14, docs/GDS.md "Hard mining"): "none" = L_H on the global statistics (the results
    # above); "overlap" = L_H on the mean / variance of the batch's pairs inside the overlap of the two global
    # Gaussians (positives beyond mu- - kappa sigma-, negatives below mu+ + kappa sigma+). Not yet swept
    mining: Literal["none", "overlap"] = "none"
    # warm-up: GDS-H is computed (and its statistics updated) only from stage-2 round start_round on; 0 = always
    start_round: int = 0
    # which positive pairs GDS-H sees: "all" pseudo-label pairs, or "core": only pairs of two DBSCAN core points of
    # the same cluster (pairs that clustering itself is sure of); negative pairs are never filtered
    pairs: Literal["all", "core"] = "all"
    # "fixed": the loss is weight x GDS-H; "fraction": the weight is set every step so that the norm of GDS-H's
    # gradient w.r.t. the pooled features is grad_fraction x that of the main loss (triplet / memory; under DDP
    # the ranks' root mean square norms). The measured fraction is logged either way (gds_grad_fraction).
    # "fraction" 0.1 is the default since the dev pairs (synthetic A -> B and B -> A, camera recipe, 3 seeds;
    # docs/RESULTS.md "GDS-H weight rule on the dev pairs"): mean target mAP 35.8 vs 35.6 for weight 1 and
    # train-split pseudo-label F1 0.291 vs 0.288 (a tie within noise, both marginally for it), and its weight
    # means the same share of the gradient whatever the backbone and feature. The paper's fixed weight:
    # weight_rule: fixed (configs/market2duke.yaml, duke2market.yaml)
    weight_rule: Literal["fixed", "fraction"] = "fraction"
    grad_fraction: float = 0.1


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    triplet_margin: float = 0.5
    triplet_normalize: bool = False


@dataclass
class EvalConfig:
    flip: bool = False
    rerank: bool = False
    max_rank: int = 50
    # transductive: per-camera centring of query + gallery embeddings with statistics from each camera's
    # unlabelled test images; off by default so the standard protocol stays the headline
    camera_norm: Literal["none", "center", "standardize"] = "none"
    # transductive too: the camera row's features extracted with per-camera BN statistics estimated from each
    # camera's query + gallery images (then camera_norm, if set)
    camera_bn: bool = False


@dataclass
class OutputConfig:
    dir: str = "outputs/run"
    log_every: int = 20                # steps between console/TensorBoard scalar logs


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    gds: GDSConfig = field(default_factory=GDSConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True                   # autocast + GradScaler on CUDA; ignored on CPU
    deterministic: bool = True         # deterministic algorithms where available
    sync_bn: bool = False              # DDP (torchrun) on CUDA: SyncBatchNorm, BN statistics over the global batch


# (section.key) -> (lower bound, upper bound, inclusive lower)
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.height": (16, None), "data.width": (8, None),
    "data.batch_size": (2, None), "data.num_instances": (1, None), "data.test_batch_size": (1, None),
    "data.workers": (0, None), "data.flip_prob": (0, 1), "data.pad": (0, None),
    "data.random_erasing_prob": (0, 1),
    "data.synthetic_train_ids": (1, None), "data.synthetic_test_ids": (1, None),
    "data.synthetic_images_per_id": (2, None),
    "model.last_stride": (1, 2), "model.gem_p": (1, None), "model.embedding_dim": (0, None),
    "pretrain.epochs": (0, None), "pretrain.iters_per_epoch": (0, None), "pretrain.lr": (0, None),
    "pretrain.weight_decay": (0, None), "pretrain.momentum": (0, 1), "pretrain.warmup_epochs": (0, None),
    "pretrain.gamma": (0, 1),
    "adapt.rounds": (0, None), "adapt.epochs_per_round": (1, None), "adapt.iters_per_epoch": (0, None),
    "adapt.lr": (0, None), "adapt.weight_decay": (0, None), "adapt.momentum": (0, 1), "adapt.eval_every": (1, None),
    "cluster.rho": (0, 1), "cluster.min_samples": (1, None), "cluster.k1": (2, None), "cluster.k2": (1, None),
    "cluster.k1_intra": (0, None), "cluster.k1_inter": (0, None), "cluster.k2_intra": (0, None),
    "cluster.k2_inter": (0, None), "cluster.knn_nlist": (0, None), "cluster.knn_nprobe": (0, None),
    "cluster.knn_dim": (0, None), "cluster.knn_candidates": (0, None), "cluster.knn_drop": (-1, None),
    "cluster.knn_train_dim": (0, None),
    "adapt.memory_temperature": (1e-6, None), "adapt.memory_momentum": (0, 0.999),
    "adapt.memory_inter_weight": (0, None), "adapt.memory_hard_negatives": (1, None),
    "gds.weight": (0, None), "gds.momentum": (0, 1), "gds.lambda_sigma": (0, None), "gds.lambda_h": (0, None),
    "gds.kappa": (0, None), "gds.start_round": (0, None),
    "loss.label_smoothing": (0, 1), "loss.triplet_margin": (0, None),
    "eval.max_rank": (1, None), "output.log_every": (1, None),
}
_PATH_KEYS = {"data.source_root", "data.target_root", "data.target_test_root", "model.pretrained",
              "pretrain.checkpoint", "output.dir"}


def _validate(cfg: Config) -> None:
    for key, (low, high) in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{key}: expected a value {bound}, got {value!r}")
    if cfg.data.source in UNLABELLED:
        raise ConfigError("data.source: 'folder' has no identity labels, and stage 1 trains on labelled source "
                          f"images; use a labelled dataset ({', '.join(SOURCE_NAMES)}) as the source and the folder "
                          "as data.target")
    for key, names in (("source", SOURCE_NAMES), ("target", TARGET_NAMES)):
        value = getattr(cfg.data, key)
        if value not in names:
            raise ConfigError(f"data.{key}: unknown dataset {value!r}{suggest(value.lower(), list(names))}; "
                              f"expected one of {', '.join(names)}")
    if cfg.data.batch_size % cfg.data.num_instances != 0:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} must be a multiple of data.num_instances="
            f"{cfg.data.num_instances} (P x K sampling)")
    if cfg.data.batch_size // cfg.data.num_instances < 2:
        raise ConfigError(f"data.batch_size / data.num_instances must be >= 2 identities per batch, got "
                          f"{cfg.data.batch_size // cfg.data.num_instances}")
    if cfg.model.embedding_dim and cfg.model.embedding_dim < 8:
        raise ConfigError(f"model.embedding_dim: expected 0 (none) or >= 8, got {cfg.model.embedding_dim}")
    if cfg.cluster.k2_intra + cfg.cluster.k2_inter < 1:
        raise ConfigError(f"cluster.k2_intra + cluster.k2_inter: expected >= 1 (1 + 0 disables the query expansion), "
                          f"got {cfg.cluster.k2_intra} + {cfg.cluster.k2_inter}")
    if sorted(cfg.pretrain.milestones) != cfg.pretrain.milestones:
        raise ConfigError(f"pretrain.milestones: expected increasing epochs, got {cfg.pretrain.milestones}")


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>") -> Config:
    """Build a validated :class:`Config` from a nested dict plus ``section.key=value`` overrides."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
    values = deep_copy(values)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = values
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = parse_override_value(raw)
    cfg = build_section(Config, values, "")
    _validate(cfg)
    return cfg


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (``yaml.safe_load``), apply overrides, validate. ``path=None`` gives the defaults."""
    values: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as handle:
                values = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(values, dict):  # named here, once: config_from_dict's errors get the source prefix below
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
    try:
        return config_from_dict(values, overrides, source)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (round-trips through :func:`load_config`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config_to_dict(cfg), handle, sort_keys=False)


def resolve_paths(cfg: Config) -> Config:
    """Return a copy of ``cfg`` with every path key expanded (see :func:`expand_path`)."""
    cfg = config_from_dict(config_to_dict(cfg))
    for key in _PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value and value not in ("imagenet", "none"):
            setattr(getattr(cfg, section), name, expand_path(value))
    return cfg


__all__ = [
    "Config", "DataConfig", "ModelConfig", "PretrainConfig", "AdaptConfig", "ClusterConfig", "GDSConfig",
    "LossConfig", "EvalConfig", "OutputConfig", "ConfigError", "load_config", "config_from_dict",
    "config_to_dict", "save_config", "expand_path", "resolve_paths",
]
