"""Command lines: ``scripts/train.py`` / ``reid-train`` and ``scripts/eval.py`` / ``reid-eval``.

The config is parsed here, once; every component below gets the values it needs as arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from reid import distributed
from reid.config import Config, config_to_dict, load_config, resolve_paths, save_config
from reid.data.datasets import ReidDataset, build_dataset
from reid.data.loaders import validate_images
from reid.errors import DatasetError, ReidError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ReidError("device: 'cuda' requested but CUDA is not available (use device: auto or cpu)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank)


def load_domain(name: str, root: str, cfg: Config, verbose: bool) -> ReidDataset:
    """``build_dataset``, generating the built-in synthetic domains (``synth-a``, ``synth-b``) first if missing;
    ``folder`` (an unlabelled image tree, :func:`reid.data.folder.build_folder_dataset`) with the camera rule and
    optional test split of ``cfg.data``."""
    if name == "folder":
        from reid.data.folder import build_folder_dataset

        return build_folder_dataset(root, camera_rule=cfg.data.camera_rule, camera_regex=cfg.data.camera_regex,
                                    test_root=cfg.data.target_test_root, verbose=verbose)
    if name in ("synth-a", "synth-b"):
        from reid.synthetic import ensure_synthetic

        if distributed.is_main():
            ensure_synthetic(name, root, num_train_ids=cfg.data.synthetic_train_ids,
                             num_test_ids=cfg.data.synthetic_test_ids,
                             images_per_id=cfg.data.synthetic_images_per_id, seed=0)
        distributed.barrier()
        name = "market-format"
    return build_dataset(name, root, verbose=verbose)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ReidError(f"output folder {folder} is not writable: {error.strerror or error} "
                        "(set output.dir or --out)") from None


def check_world_size(cfg: Config, world_size: int) -> None:
    """Under torchrun the P identities of each global batch are split evenly over the ranks."""
    identities = cfg.data.batch_size // cfg.data.num_instances
    if world_size > 1 and identities % world_size:
        raise ReidError(f"data.batch_size / data.num_instances = {identities} identities per batch must be a "
                        f"multiple of the number of processes ({world_size}): identities are sharded across ranks")
    uses_gds = cfg.gds.enabled and cfg.adapt.enabled and cfg.adapt.rounds > 0
    if world_size > 1 and uses_gds and identities // world_size < 2:
        raise ReidError(f"{identities} identities per batch over {world_size} processes leaves one per process: GDS "
                        "pairs are formed within each process's batch, which would hold no negative pair. Raise "
                        "data.batch_size or use fewer processes")
    if world_size > 1 and cfg.sync_bn and pick_device(cfg.device).type != "cuda":
        raise ReidError("sync_bn: SyncBatchNorm needs CUDA devices (nccl); set sync_bn: false for CPU (gloo) runs")


def drop_unreadable_images(dataset: ReidDataset, role: str, logger) -> ReidDataset:
    """``data.on_bad_image: skip``: drop the train images that cannot be decoded, with one warning line.

    Train pids are relabelled 0..C-1 again in case an identity lost all its images (unlabelled train splits,
    ``data.target: folder``, keep their placeholder pids).
    """
    good, bad = validate_images(dataset.train, on_bad_image="skip")
    if not bad:
        return dataset
    if not good:
        raise DatasetError(f"{dataset.root}: none of the {len(bad)} {role} train images can be read "
                           f"(e.g. {bad[0][0]}: {bad[0][1]})")
    logger.info(f"warning: {role} train: skipped {len(bad)} unreadable image(s) (data.on_bad_image: skip), "
                f"e.g. {bad[0][0]}: {bad[0][1]}")
    if not dataset.train_labelled:
        return dataclasses.replace(dataset, train=good)
    labels = {pid: label for label, pid in enumerate(sorted({pid for _, pid, _ in good}))}
    return dataclasses.replace(dataset, train=[(path, labels[pid], camid) for path, pid, camid in good])


def configure_determinism(cfg: Config, device: torch.device) -> None:
    from reid.engine.trainer import seed_everything

    seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.backends.cudnn.deterministic = cfg.deterministic
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not cfg.deterministic
        torch.backends.cudnn.allow_tf32 = not cfg.deterministic


def _run_cli(main, argv: list[str] | None) -> int:
    try:
        return main(argv)
    except ReidError as error:
        message = str(error)
        if "\nOriginal Traceback" in message:  # re-raised by a DataLoader worker: keep the original one line
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        print(f"{type(error).__name__}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume auto", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------------------------------- train
def _train(argv: list[str] | None) -> int:
    from reid.engine.adapt import run_adapt
    from reid.engine.checkpoint import find_resume, load_checkpoint, load_model_weights
    from reid.engine.logging import RunLogger
    from reid.engine.pretrain import run_pretrain
    from reid.models import build_model

    parser = argparse.ArgumentParser(description="Source pretraining + unsupervised adaptation (triplet + GDS-H).")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set gds.weight=0.5 (repeatable)")
    parser.add_argument("--resume", default="", help="'auto' (latest in the run folder) or a checkpoint path")
    parser.add_argument("--out", default="", help="run folder (default: output.dir from the config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    cfg = resolve_paths(load_config(args.config, args.overrides))
    if args.out:
        cfg.output.dir = args.out
    device = pick_device(cfg.device)
    distributed.init_from_env(device.type)
    check_world_size(cfg, distributed.world_size())
    run_dir = Path(cfg.output.dir)
    if distributed.is_main():
        check_writable(run_dir)
    configure_determinism(cfg, device)
    resume_path = find_resume(run_dir, args.resume)
    resume = load_checkpoint(resume_path) if resume_path else None
    # no file is written into the run folder before every input is checked (config.yaml and the events file below)
    logger = RunLogger(run_dir, enabled=distributed.is_main(), quiet=args.quiet or bool(os.environ.get("CI")),
                       open_files=False)
    logger.info(f"run folder {run_dir}, device {device}, world size {distributed.world_size()}"
                + (f", resuming from {resume_path} (stage {resume['stage']})" if resume else ""))

    verbose = distributed.is_main()
    source = load_domain(cfg.data.source, cfg.data.source_root, cfg, verbose)
    target = load_domain(cfg.data.target, cfg.data.target_root, cfg, verbose)
    stage = resume["stage"] if resume else "pretrain"
    runs_stage1 = stage == "pretrain" and not cfg.pretrain.checkpoint and cfg.pretrain.enabled and cfg.pretrain.epochs > 0
    if cfg.data.on_bad_image == "skip":  # decodes every image once: train splits only, and only when asked
        if runs_stage1:
            source = drop_unreadable_images(source, "source", logger)
        if cfg.adapt.enabled and cfg.adapt.rounds > 0:
            target = drop_unreadable_images(target, "target", logger)
    identities_per_batch = cfg.data.batch_size // cfg.data.num_instances
    if runs_stage1 and source.num_train_pids < identities_per_batch:
        raise DatasetError(f"{cfg.data.source_root}: {source.num_train_pids} train identities, fewer than the "
                           f"{identities_per_batch} per batch (data.batch_size / data.num_instances): lower "
                           "data.batch_size")
    m = cfg.model
    model = build_model(arch=m.arch, pretrained="none" if resume else m.pretrained, last_stride=m.last_stride,
                        num_classes=source.num_train_pids, pooling=m.pooling, gem_p=m.gem_p,
                        embedding_dim=m.embedding_dim, neck_feat=m.neck_feat).to(device)
    if resume is not None:  # a checkpoint that does not fit fails here, before the run folder changes
        load_model_weights(model, resume, str(resume_path), skip_classifier=stage != "pretrain")
    summary: dict = {}
    if stage == "pretrain" and cfg.pretrain.checkpoint:  # an input too: checked before the folder changes
        load_model_weights(model, load_checkpoint(cfg.pretrain.checkpoint), cfg.pretrain.checkpoint,
                           skip_classifier=True)
    elif stage != "pretrain":
        summary["pretrain"] = resume.get("pretrain_metrics")
        source_checkpoint = resume_path.parent / "source.pt"
        if summary["pretrain"] is None:  # stage-2 checkpoints do not repeat them: source.pt, written next to it
            summary["pretrain"] = (load_checkpoint(source_checkpoint).get("pretrain_metrics", {})
                                   if source_checkpoint.is_file() else {})
    if distributed.is_main():  # inputs checked: from here on the folder describes this run
        save_config(cfg, run_dir / "config.yaml")
    logger.open_files()
    if stage == "pretrain":
        if cfg.pretrain.checkpoint:
            logger.info(f"stage 1 skipped: source model loaded from {cfg.pretrain.checkpoint}")
        elif cfg.pretrain.enabled and cfg.pretrain.epochs > 0:
            if cfg.pretrain.eval_target and not target.has_test_split:
                logger.info(f"stage 1: no target test split (data.target: {cfg.data.target} without "
                            "data.target_test_root): direct-transfer evaluation skipped")
            summary["pretrain"] = run_pretrain(cfg, model, source, target if target.has_test_split else None,
                                               device, logger, run_dir, resume)
        resume = None
    if cfg.adapt.enabled and cfg.adapt.rounds > 0:
        summary["adapt"] = run_adapt(cfg, model, target, device, logger, run_dir, resume)
    if distributed.is_main():
        with open(run_dir / "summary.json", "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    logger.info(f"done: {run_dir}")
    logger.close()
    distributed.cleanup()
    return 0


def train_main(argv: list[str] | None = None) -> None:
    sys.exit(_run_cli(_train, argv))


# ----------------------------------------------------------------------------------------------------- eval
def _eval(argv: list[str] | None) -> int:
    from reid.engine.checkpoint import load_checkpoint, load_model_weights
    from reid.evaluation.evaluator import evaluate_dataset, format_metrics
    from reid.evaluation.plots import plot_cmc, plot_distance_histograms, plot_ranked_lists
    from reid.evaluation.report import write_report
    from reid.models import build_model

    parser = argparse.ArgumentParser(description="Evaluate a checkpoint: CMC / mAP / mINP, plots.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", default="",
                        help="checkpoint path; omit to evaluate the untrained backbone of model.pretrained")
    parser.add_argument("--dataset", default="", help="dataset name (default: data.target)")
    parser.add_argument("--root", default="", help="dataset folder (default: data.target_root)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--flip", action="store_true", help="average with horizontally flipped images")
    parser.add_argument("--out", default="", help="output folder (default: <checkpoint folder>/eval)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    cfg = resolve_paths(load_config(args.config, args.overrides))
    device = pick_device(cfg.device)
    name = args.dataset or cfg.data.target
    root = args.root or (cfg.data.target_root if not args.dataset else "")
    if not root:
        raise ReidError("--root is required with --dataset")
    dataset = load_domain(name, root, cfg, verbose=True)
    configure_determinism(cfg, device)  # an untrained backbone's random layers come from cfg.seed
    m = cfg.model
    model = build_model(arch=m.arch, pretrained="none" if args.checkpoint else m.pretrained,
                        last_stride=m.last_stride, pooling=m.pooling, gem_p=m.gem_p,
                        embedding_dim=m.embedding_dim, neck_feat=m.neck_feat).to(device)
    if args.checkpoint:
        load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint, skip_classifier=True)
    out = Path(args.out or (Path(args.checkpoint).parent.parent / "eval" if args.checkpoint else "outputs/eval"))
    check_writable(out)
    result = evaluate_dataset(model, dataset.query, dataset.gallery, height=cfg.data.height, width=cfg.data.width,
                              batch_size=cfg.data.test_batch_size, workers=cfg.data.workers, device=device,
                              flip=args.flip or cfg.eval.flip, rerank=args.rerank or cfg.eval.rerank,
                              max_rank=cfg.eval.max_rank, amp=cfg.amp, camera_norm=cfg.eval.camera_norm,
                              camera_bn=cfg.eval.camera_bn)
    metrics = result.metrics
    rows = [(name, metrics)]
    if result.camera_metrics is not None:
        rows.append((f"+ camera {result.camera_mode} (transductive)", result.camera_metrics))
    width = max(16, *(len(label) + 2 for label, _ in rows))
    print(f"{'dataset':<{width}}" + "".join(f"{k:>7}" for k in ("R1", "R5", "R10", "mAP", "mINP")))
    for label, values in rows:
        print(f"{label:<{width}}" + "".join(f"{100 * values[k]:7.1f}" for k in ("R1", "R5", "R10", "mAP", "mINP")))
    info = {"checkpoint": args.checkpoint or f"untrained ({m.pretrained})", "dataset": name, "root": root,
            "rerank": args.rerank or cfg.eval.rerank, "flip": args.flip or cfg.eval.flip, **metrics}
    if result.camera_metrics is not None:
        info["camera_norm"] = {"mode": result.camera_mode, **result.camera_metrics}
    with open(out / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    import numpy as np
    import yaml

    q_pids = np.array([p for _, p, _ in dataset.query])
    g_pids = np.array([p for _, p, _ in dataset.gallery])
    q_cams = np.array([c for _, _, c in dataset.query])
    g_cams = np.array([c for _, _, c in dataset.gallery])
    same = q_pids[:, None] == g_pids[None, :]
    valid = ~(same & (q_cams[:, None] == g_cams[None, :])) & (g_pids[None, :] != -1)
    # Euclidean distances of normalised features (the GDS scale), not the squared ones used for ranking
    dist = np.sqrt(np.maximum(result.distmat, 0)) if not (args.rerank or cfg.eval.rerank) else result.distmat
    drawings = {
        "CMC curve": lambda: plot_cmc(np.asarray(metrics["cmc"]), out / "cmc.png", title=f"CMC on {name}"),
        "query-gallery distances (green: same identity, red: different)": lambda: plot_distance_histograms(
            dist[same & valid], dist[~same & valid], out / "distances.png",
            title=f"query-gallery distances on {name}"),
        "ranked lists (green frame: true match, red: false)": lambda: plot_ranked_lists(
            result.distmat, dataset.query, dataset.gallery, out / "ranked_lists.png"),
    }
    figures: dict[str, Path | None] = {}
    not_produced: dict[str, str] = {}
    for caption, draw in drawings.items():
        try:
            figures[caption] = draw()
        except ValueError as error:  # nothing to draw (no positive pair, no query with a true match): say so
            figures[caption], not_produced[caption] = None, str(error)
            print(f"warning: {caption}: not produced: {error}", file=sys.stderr)
    report_info = {key: info[key] for key in ("checkpoint", "dataset", "root", "rerank", "flip")}
    report_info.update({
        "query / gallery": f"{len(dataset.query)} / {len(dataset.gallery)} images",
        "model": f"{m.arch}, {cfg.data.height}x{cfg.data.width}, neck_feat {m.neck_feat}",
        "device": str(device), "transductive camera row": info.get("camera_norm", {}).get("mode", "none"),
    })
    report = write_report(out, rows, figures, config_text=yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
                          info=report_info, title=f"gds-reid evaluation on {name}", notes=not_produced)
    written = ["metrics.json", *(path.name for path in figures.values() if path is not None), report.name]
    print(f"wrote {out}/{', '.join(written)} ({format_metrics(metrics)})")
    return 0


def eval_main(argv: list[str] | None = None) -> None:
    sys.exit(_run_cli(_eval, argv))
