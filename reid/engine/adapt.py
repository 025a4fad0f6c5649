"""Stage 2: unsupervised adaptation to the target domain.

Each round: extract target-train features (optionally with per-camera BN statistics) -> (per-camera normalisation) -> k-reciprocal Jaccard distance (plain
or camera-aware) -> DBSCAN pseudo-labels (outliers dropped) -> P x K loader over the labelled images (optionally
camera-balanced) -> ``epochs_per_round`` epochs of ``adapt.loss`` (batch-hard triplet, cluster memory, or both)
+ ``gds.weight`` * GDS-H -> evaluate the target test split every ``eval_every`` rounds (when the target has one;
an unlabelled folder without ``data.target_test_root`` has only the label-free clustering signals).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from reid import distributed
from reid.cluster import generate_pseudo_labels
from reid.cluster.camera import camera_fallback_reason, camera_normalize
from reid.config import Config
from reid.data.datasets import ReidDataset
from reid.data.loaders import build_test_loader, build_train_loader, set_train_epoch
from reid.engine.checkpoint import load_model_weights, save_checkpoint, training_state
from reid.engine.logging import RunLogger
from reid.engine.monitor import log_clustering, log_distance_histograms, log_eval, pair_distance_samples
from reid.engine.trainer import Trainer, build_optimizer, derive_seed, seed_everything
from reid.errors import TrainingError
from reid.evaluation.camera_bn import extract_features_camera_bn
from reid.evaluation.evaluator import evaluate_dataset
from reid.evaluation.features import extract_features
from reid.losses import CameraMemory, ClusterMemory, GDSLoss, TripletLoss


def run_adapt(cfg: Config, model: torch.nn.Module, target: ReidDataset, device: torch.device, logger: RunLogger,
              run_dir: Path, resume: dict | None = None) -> dict:
    """Adapt ``model`` to ``target.train`` without its labels; returns the last target-test metrics ({} when the
    target has no test split).

    Writes ``checkpoints/last.pt`` after every epoch and round and ``checkpoints/final.pt`` (the last round;
    "best on test" is only reported, never selected), rank 0 only. Under torchrun: every rank extracts its shard
    of the target-train features (gathered in dataset order), rank 0 clusters and broadcasts the pseudo-labels
    and eps, the model is trained through DDP on identity-sharded P x K batches, and every rank evaluates (same
    metrics everywhere).
    """
    a, d, c, g = cfg.adapt, cfg.data, cfg.cluster, cfg.gds
    model.reset_classifier(0)
    resuming = resume is not None and resume["stage"] in ("adapt", "done")  # "done" + more rounds: continue
    if resuming:  # every rank loads the same checkpoint
        load_model_weights(model, resume, "resume checkpoint", skip_classifier=True)
    # DDP under torchrun, wrapped after the classifier change; extraction, evaluation and checkpoints use ``model``.
    # When no loss sees the features after the BNNeck, its weight gets no gradient: DDP must know.
    feature_key = "bn_features" if a.loss_feature == "after" else "features"
    gds_key = {"auto": feature_key, "after": "bn_features", "before": "features"}[g.feature]
    use_triplet, use_memory = a.loss in ("triplet", "both"), a.loss in ("memory", "both")
    memory_key = "bn_features" if cfg.model.neck_feat == "after" else "features"  # the retrieval embedding
    uses_bnneck = ((use_triplet and feature_key == "bn_features")
                   or (g.enabled and g.start_round == 0 and gds_key == "bn_features")
                   or (use_memory and memory_key == "bn_features"))
    # an unlabelled target (data.target: folder) has placeholder pids: no label-using diagnostics from them
    true_pids = np.array([pid for _, pid, _ in target.train]) if target.train_labelled else None
    camids = np.array([cam for _, _, cam in target.train])
    no_cameras = camera_fallback_reason(camids)
    train_model = distributed.wrap_model(model, device, cfg.sync_bn, find_unused_parameters=not uses_bnneck)
    trainer = Trainer(train_model, build_optimizer(model, a.optimizer, a.lr, a.weight_decay, a.momentum), None,
                      device, cfg.amp, logger, cfg.output.log_every, camera_bn=a.camera_bn and no_cameras is None)
    triplet = TripletLoss(cfg.loss.triplet_margin, cfg.loss.triplet_normalize)
    gds = GDSLoss(g.momentum, g.lambda_sigma, g.lambda_h, g.kappa, g.normalize, g.hard, g.mining).to(device)
    wants_camera = (c.camera_norm != "none" or c.camera_jaccard or c.camera_bn or a.camera_balanced or a.camera_bn
                    or (use_memory and a.memory_camera))
    if wants_camera and no_cameras is not None:
        logger.info(f"stage 2: {no_cameras} in the target train split: camera-aware clustering, sampling, BN and "
                    "memory fall back to their plain forms")
    memory = None
    if use_memory and a.memory_camera and no_cameras is None:
        memory = CameraMemory(a.memory_temperature, a.memory_momentum, a.memory_inter_weight,
                              a.memory_hard_negatives).to(device)
    elif use_memory:
        memory = ClusterMemory(a.memory_temperature, a.memory_momentum).to(device)
    eps = None if c.eps == "auto" else float(c.eps)
    start_round, start_epoch, pseudo_labels, core_points, history = 0, 0, None, None, []
    train_features_loader = build_test_loader(target.train, d.height, d.width, d.test_batch_size, d.workers,
                                              distributed=distributed.world_size() > 1)
    def target_features() -> torch.Tensor:
        """The target-train embeddings clustering sees (every rank gets all of them, in dataset order)."""
        if c.camera_bn and no_cameras is None:
            return extract_features_camera_bn(model, target.train, height=d.height, width=d.width,
                                              batch_size=d.test_batch_size, workers=d.workers, device=device,
                                              amp=cfg.amp)[0]
        return extract_features(model, train_features_loader, device, amp=cfg.amp)[0]

    if resuming:
        if "gds" in resume:  # written by this stage (source.pt carries the stage-1 optimizer, not ours)
            trainer.load_state_dict(resume["trainer"])
            gds.load_state_dict(resume["gds"])
        start_round, start_epoch = int(resume["round"]), int(resume["epoch"])
        eps = resume.get("eps", eps)
        history = list(resume.get("history", []))
        if resume.get("pseudo_labels") is not None and start_epoch > 0:
            pseudo_labels = resume["pseudo_labels"].numpy()
            saved_core = resume.get("core")  # absent in checkpoints written before gds.pairs existed
            core_points = saved_core.numpy() if saved_core is not None else np.ones(len(pseudo_labels), dtype=bool)
            if memory is not None and resume.get("memory") is not None:  # mid-round: the memory as it was
                memory.restore(resume["memory"])
            elif memory is not None:  # written by a run without the memory: initialise it from these labels
                logger.info("stage 2: the resume checkpoint holds no cluster memory (adapt.loss was triplet); "
                            "initialising it from the saved pseudo-labels")
                features = target_features()
                memory.initialise(features, torch.from_numpy(pseudo_labels), torch.from_numpy(camids))
        logger.info(f"stage 2: resuming at round {start_round}, epoch {start_epoch}")

    def loss_fn(outputs: dict[str, torch.Tensor], pids: torch.Tensor, camids: torch.Tensor,
                indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        losses, terms = [], {}
        if use_triplet:
            loss_triplet, stats = triplet(outputs[feature_key], pids)
            losses.append(loss_triplet)
            terms.update({"triplet": loss_triplet.item(), "triplet_precision": float(stats["precision"])})
        if use_memory:
            losses.append(memory(outputs[memory_key], pids, camids))
            terms.update(memory.last_terms)
        main = sum(losses[1:], losses[0])
        if gds_active:  # gds.enabled and this round >= gds.start_round (warm-up: not called, nothing logged)
            confident = torch.from_numpy(core[indices.numpy()]) if g.pairs == "core" else None
            loss_gds = gds(outputs[gds_key], pids, confident)
            weight, fraction = gds_weight(main, loss_gds, outputs["features"])
            terms.update({f"gds_{k}": v for k, v in gds.last_terms.items() if isinstance(v, float)})
            terms.update({"gds_weight": weight, "gds_grad_fraction": fraction})
            return main + weight * loss_gds, terms
        return main, terms

    def gds_weight(main: torch.Tensor, loss_gds: torch.Tensor, features: torch.Tensor) -> tuple[float, float]:
        """(weight, fraction): the weight GDS-H gets this step and the norm of its weighted gradient w.r.t. the
        pooled features as a fraction of the main loss's (gds.weight_rule; NaN when either gradient is zero)."""
        main_grad, = torch.autograd.grad(main, features, retain_graph=True, allow_unused=True)
        gds_grad, = torch.autograd.grad(loss_gds, features, retain_graph=True, allow_unused=True)
        main_norm = float(main_grad.norm()) if main_grad is not None else 0.0
        gds_norm = float(gds_grad.norm()) if gds_grad is not None else 0.0
        weight = g.weight
        if g.weight_rule == "fraction" and main_norm > 0 and gds_norm > 0:
            weight = g.grad_fraction * main_norm / gds_norm
        fraction = weight * gds_norm / main_norm if main_norm > 0 and gds_norm > 0 else float("nan")
        return weight, fraction

    metrics: dict = {}
    if not target.has_test_split:
        logger.info("stage 2: no target test split (data.target_test_root is empty): no evaluation; judge the "
                    "rounds by the label-free clustering signals (clusters, outliers, distance gap, silhouette)")
    for round_index in range(start_round, a.rounds):
        gds_active = g.enabled and round_index >= g.start_round
        if pseudo_labels is None:
            features = target_features()
            if distributed.is_main():
                pseudo_labels, info = generate_pseudo_labels(
                    features.numpy(), eps, k1=c.k1, k2=c.k2, min_samples=c.min_samples, rho=c.rho, camids=camids,
                    camera_norm=c.camera_norm, camera_jaccard=c.camera_jaccard,
                    camera_k=(c.k1_intra, c.k1_inter, c.k2_intra, c.k2_inter))
                eps, core_points = float(info["eps"]), info["core"]  # the auto eps rule is fixed after round 1
                log_clustering(logger, round_index, info, pseudo_labels, true_pids, camids=camids,
                               features=camera_normalize(features.numpy(), camids, c.camera_norm))
                positives, negatives = pair_distance_samples(features, pseudo_labels, seed=round_index)
                log_distance_histograms(logger, "pseudo_label_distances", positives, negatives, round_index)
            pseudo_labels, eps, core_points = distributed.broadcast_object((pseudo_labels, eps, core_points))
            if memory is not None:  # every rank holds the gathered features: the same centroids everywhere
                memory.initialise(features, torch.from_numpy(pseudo_labels), torch.from_numpy(camids))
        labelled = [(path, int(label), cam) for (path, _, cam), label in zip(target.train, pseudo_labels) if label >= 0]
        core = core_points[pseudo_labels >= 0]  # per labelled image: a DBSCAN core point (gds.pairs: core)
        num_clusters = len({item[1] for item in labelled})
        identities_per_batch = d.batch_size // d.num_instances
        if num_clusters < identities_per_batch:
            logger.info(f"round {round_index}: only {num_clusters} clusters (< {identities_per_batch} identities per "
                        f"batch): training skipped this round. If this persists, raise cluster.eps (now {eps:.3f}) "
                        "or lower data.batch_size / cluster.min_samples.")
            logger.record("round_skipped", round=round_index, num_clusters=num_clusters, eps=eps)
        else:
            loader = build_train_loader(labelled, d.height, d.width, d.batch_size, d.num_instances, d.workers,
                                        seed=derive_seed(cfg.seed, "adapt", round_index), flip_prob=d.flip_prob,
                                        pad=d.pad, random_erasing_prob=d.random_erasing_prob,
                                        num_replicas=distributed.world_size(), rank=distributed.rank(),
                                        camera_balanced=a.camera_balanced)
            iters = a.iters_per_epoch or len(loader)  # len(loader) = floor(len(sampler) / batch_size) on every rank
            if not distributed.same_on_all_ranks(iters):
                raise TrainingError(f"round {round_index}: ranks disagree on the iterations per epoch")
            for epoch in range(start_epoch, a.epochs_per_round):
                seed_everything(derive_seed(cfg.seed, "adapt", round_index, epoch))
                set_train_epoch(loader, epoch, derive_seed(cfg.seed, "adapt", round_index, epoch, "augment"),
                                distributed.rank())
                terms = trainer.train_epoch(loader, loss_fn, iters, tag=f"round {round_index} epoch {epoch + 1}")
                step = round_index * a.epochs_per_round + epoch + 1
                logger.info(f"round {round_index} epoch {epoch + 1}/{a.epochs_per_round} "
                            + " ".join(f"{k} {v:.4f}" for k, v in terms.items()))
                logger.record("adapt_epoch", round=round_index, epoch=epoch + 1, step=trainer.step, **terms)
                logger.scalars("adapt_epoch", terms, step)
                if gds_active:
                    log_distance_histograms(logger, "gds_batch_distances", gds.last_pos_dist.numpy(),
                                            gds.last_neg_dist.numpy(), step)
                if distributed.is_main():
                    save_checkpoint(_state(cfg, model, trainer, gds, memory, round_index, epoch + 1, eps,
                                           pseudo_labels, history, core_points), run_dir / "checkpoints" / "last.pt")
        round_labels, start_epoch, pseudo_labels = pseudo_labels, 0, None
        if target.has_test_split and ((round_index + 1) % a.eval_every == 0 or round_index == a.rounds - 1):
            result = evaluate_dataset(model, target.query, target.gallery, height=d.height, width=d.width,
                                      batch_size=d.test_batch_size, workers=d.workers, device=device,
                                      flip=cfg.eval.flip, max_rank=cfg.eval.max_rank, amp=cfg.amp,
                                      distributed=distributed.world_size() > 1, camera_norm=cfg.eval.camera_norm,
                                      camera_bn=cfg.eval.camera_bn)
            metrics = result.metrics
            history.append({"round": round_index, **{k: v for k, v in metrics.items() if k != "cmc"}})
            log_eval(logger, result, f"round {round_index} target test",
                     "eval_adapt/target_test", round_index, stage="adapt", split="target_test", round=round_index)
        if distributed.is_main():
            save_checkpoint(_state(cfg, model, trainer, gds, memory, round_index + 1, 0, eps, None, history),
                            run_dir / "checkpoints" / "last.pt")
        if DEBUG_RANK_DIR_ENV in os.environ:
            _dump_rank_state(Path(os.environ[DEBUG_RANK_DIR_ENV]), round_index, round_labels, gds, model, history)
    if distributed.is_main():
        state = _state(cfg, model, trainer, gds, memory, a.rounds, 0, eps, None, history)
        save_checkpoint({**state, "stage": "done"}, run_dir / "checkpoints" / "final.pt")
        if history:
            best = max(history, key=lambda row: row["mAP"])
            logger.info(f"final (last round) target mAP {100 * history[-1]['mAP']:.1f}; best on test, reported "
                        f"only: {100 * best['mAP']:.1f} at round {best['round']}")
            logger.record("summary", final=history[-1], best_on_test_reported_only=best)
    return metrics


def _state(cfg: Config, model: torch.nn.Module, trainer: Trainer, gds: GDSLoss,
           memory: ClusterMemory | CameraMemory | None,
           round_index: int, epoch: int, eps: float | None, pseudo_labels: np.ndarray | None, history: list,
           core_points: np.ndarray | None = None) -> dict:
    extra = {"gds": gds.state_dict(), "eps": eps, "history": history,
             "memory": memory.export() if memory is not None else None,
             "pseudo_labels": torch.from_numpy(np.asarray(pseudo_labels)) if pseudo_labels is not None else None,
             "core": torch.from_numpy(np.asarray(core_points)) if pseudo_labels is not None else None}
    return training_state(cfg, model, trainer, stage="adapt", epoch=epoch, round=round_index, extra=extra)


DEBUG_RANK_DIR_ENV = "REID_DEBUG_RANK_DIR"


def _dump_rank_state(folder: Path, round_index: int, pseudo_labels: np.ndarray, gds: GDSLoss,
                     model: torch.nn.Module, history: list) -> None:
    """Opt-in debug hook (env ``REID_DEBUG_RANK_DIR``; tests/test_distributed.py): at the end of each round,
    EVERY rank writes ``rank{r}_round{k}.pt`` with that round's pseudo-labels, the GDS buffers, the model state
    dict and the evaluation history, so DDP runs can be checked for ranks that drift apart."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"pseudo_labels": torch.as_tensor(np.asarray(pseudo_labels)), "gds": gds.state_dict(),
                "model": model.state_dict(), "history": history},
               folder / f"rank{distributed.rank()}_round{round_index}.pt")
