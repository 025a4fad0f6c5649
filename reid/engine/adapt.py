"""Stage 2: unsupervised adaptation to the target domain.

Each round of :func:`run_adapt`: pseudo-label the target-train images (:class:`~reid.engine.pseudo_label.
PseudoLabeler`: extract, optionally with per-camera BN statistics -> per-camera normalisation -> k-reciprocal
Jaccard distance, plain or camera-aware -> DBSCAN, outliers dropped) -> train ``adapt.epochs_per_round`` epochs of
``adapt.loss`` (batch-hard triplet, cluster memory, or both) + ``gds.weight`` x GDS-H on P x K batches of the
pseudo-labelled images (optionally camera-balanced) -> evaluate the target test split every ``eval_every`` rounds
(when the target has one; an unlabelled folder without ``data.target_test_root`` has only the label-free
clustering signals) -> save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reid import distributed
from reid.cluster.camera import camera_fallback_reason
from reid.config import Config
from reid.data.datasets import ReidDataset
from reid.data.loaders import set_train_epoch, train_loader_from
from reid.engine.checkpoint import RunState, SaveFn
from reid.engine.evaluate import evaluate_split
from reid.engine.logging import RunLogger
from reid.engine.monitor import log_distance_histograms, log_eval
from reid.engine.pseudo_label import PseudoLabeler, PseudoLabels
from reid.engine.trainer import LossFn, Trainer, build_optimizer, derive_seed, seed_everything
from reid.errors import TrainingError
from reid.losses import CameraMemory, ClusterMemory, GDSLoss, TripletLoss


@dataclass(frozen=True)
class RoundEnd:
    """What an observer of :func:`run_adapt` gets at the end of every round, on every rank (tests use it to check
    that DDP ranks never drift apart)."""

    round: int
    pseudo_labels: np.ndarray  # (N,) this round's labels of the target-train images, -1 outliers
    model: torch.nn.Module
    gds: GDSLoss
    history: list[dict]  # target-test metrics of the rounds evaluated so far


Observer = Callable[[RoundEnd], None]


def run_adapt(cfg: Config, model: torch.nn.Module, target: ReidDataset, device: torch.device, logger: RunLogger,
              save: SaveFn, resume: RunState | None = None, observers: Sequence[Observer] = ()) -> dict:
    """Adapt ``model`` to ``target.train`` without its labels; returns the last target-test metrics ({} when the
    target has no test split).

    ``resume``: a stage-2 state (``"adapt"``, or ``"done"`` when more rounds are asked for) to continue exactly.
    Saves ``last.pt`` after every epoch and round and ``final.pt`` (the last round; "best on test" is only
    reported, never selected) through ``save``. Under torchrun: every rank extracts its shard of the target-train
    features (gathered in dataset order), rank 0 clusters and broadcasts the pseudo-labels and eps, the model is
    trained through DDP on identity-sharded P x K batches, and every rank evaluates (same metrics everywhere).
    """
    adaptation = Adaptation(cfg, model, target, device, logger, save)
    if resume is not None:
        adaptation.restore(resume)
    for round_index in range(adaptation.round, cfg.adapt.rounds):
        pseudo_labels = adaptation.pseudo_label(round_index)
        adaptation.train_round(round_index, pseudo_labels)
        adaptation.evaluate(round_index)
        adaptation.save(rounds_done=round_index + 1)
        for observer in observers:
            observer(RoundEnd(round_index, pseudo_labels.labels, model, adaptation.gds, adaptation.history))
    adaptation.finish()
    return adaptation.metrics


class Adaptation:
    """What stage 2 keeps across rounds: the model with its trainer, the losses (triplet, cluster memory, GDS-H),
    the pseudo-labeler, eps, the evaluation history, and where a resumed run continues (``round``, ``epoch``)."""

    def __init__(self, cfg: Config, model: torch.nn.Module, target: ReidDataset, device: torch.device,
                 logger: RunLogger, save: SaveFn):
        a, d, c, g = cfg.adapt, cfg.data, cfg.cluster, cfg.gds
        self.cfg, self.model, self.target, self.device, self.logger = cfg, model, target, device, logger
        self._save = save
        model.reset_classifier(0)
        # the embeddings are keys of the model's training outputs, "before" or "after" the BNNeck: the triplet's
        # is adapt.loss_feature, the memory's the retrieval embedding model.neck_feat, GDS-H's this one
        self.gds_feature = a.loss_feature if g.feature == "auto" else g.feature
        self.use_triplet, self.use_memory = a.loss in ("triplet", "both"), a.loss in ("memory", "both")
        # DDP under torchrun, wrapped after the classifier change; extraction, evaluation and checkpoints use
        # ``model``. When no loss sees the features after the BNNeck, its weight gets no gradient: DDP must know.
        uses_bnneck = ((self.use_triplet and a.loss_feature == "after")
                       or (g.enabled and g.start_round == 0 and self.gds_feature == "after")
                       or (self.use_memory and cfg.model.neck_feat == "after"))
        self.camids = np.array([cam for _, _, cam in target.train])
        no_cameras = camera_fallback_reason(self.camids)
        train_model = distributed.wrap_model(model, device, cfg.sync_bn, find_unused_parameters=not uses_bnneck)
        self.trainer = Trainer(train_model, build_optimizer(model, a.optimizer, a.lr, a.weight_decay, a.momentum),
                               None, device, cfg.amp, logger, cfg.output.log_every,
                               camera_bn=a.camera_bn and no_cameras is None)
        self.triplet = TripletLoss(cfg.loss.triplet_margin, cfg.loss.triplet_normalize)
        self.gds = GDSLoss(g.momentum, g.lambda_sigma, g.lambda_h, g.kappa, g.normalize, g.hard, g.mining).to(device)
        wants_camera = (c.camera_norm != "none" or c.camera_jaccard or c.camera_bn or a.camera_balanced
                        or a.camera_bn or (self.use_memory and a.memory_camera))
        if wants_camera and no_cameras is not None:
            logger.info(f"stage 2: {no_cameras} in the target train split: camera-aware clustering, sampling, BN "
                        "and memory fall back to their plain forms")
        self.memory: ClusterMemory | CameraMemory | None = None
        if self.use_memory and a.memory_camera and no_cameras is None:
            self.memory = CameraMemory(a.memory_temperature, a.memory_momentum, a.memory_inter_weight,
                                       a.memory_hard_negatives).to(device)
        elif self.use_memory:
            self.memory = ClusterMemory(a.memory_temperature, a.memory_momentum).to(device)
        # an unlabelled target (data.target: folder) has placeholder pids: no label-using diagnostics from them
        self.labeler = PseudoLabeler(model, target.train, cluster=c, height=d.height, width=d.width,
                                     batch_size=d.test_batch_size, workers=d.workers, device=device, amp=cfg.amp,
                                     labelled=target.train_labelled, logger=logger)
        self.eps = None if c.eps == "auto" else float(c.eps)
        self.round, self.epoch = 0, 0  # where training continues: rounds done, epochs done of the next round
        self.saved_labels: PseudoLabels | None = None  # a mid-round resume's pseudo-labels
        self.history: list[dict] = []
        self.metrics: dict = {}
        if not target.has_test_split:
            logger.info("stage 2: no target test split (data.target_test_root is empty): no evaluation; judge the "
                        "rounds by the label-free clustering signals (clusters, outliers, distance gap, silhouette)")

    def restore(self, state: RunState) -> None:
        """Continue from a stage-2 checkpoint exactly: optimizer, GDS buffers, eps, history; mid-round also the
        pseudo-labels, core points and cluster memory of that round."""
        self.trainer.load_state_dict(state.trainer)
        self.gds.load_state_dict(state.gds)
        self.round, self.epoch = int(state.round), int(state.epoch)
        self.eps = state.eps if state.eps is not None else self.eps
        self.history = list(state.history)
        if state.pseudo_labels is not None and self.epoch > 0:
            labels = state.pseudo_labels.numpy()
            # core points are absent from checkpoints written before gds.pairs existed
            core = state.core.numpy() if state.core is not None else np.ones(len(labels), dtype=bool)
            self.saved_labels = PseudoLabels(labels, core, self.eps)
            if self.memory is not None and state.memory is not None:  # mid-round: the memory as it was
                self.memory.restore(state.memory)
            elif self.memory is not None:  # written by a run without the memory: initialise it from these labels
                self.logger.info("stage 2: the resume checkpoint holds no cluster memory (adapt.loss was triplet); "
                                 "initialising it from the saved pseudo-labels")
                features = self.labeler.extract()
                self.memory.initialise(features, torch.from_numpy(labels), torch.from_numpy(self.camids))
        self.logger.info(f"stage 2: resuming at round {self.round}, epoch {self.epoch}")

    def pseudo_label(self, round_index: int) -> PseudoLabels:
        """This round's pseudo-labels (a mid-round resume: the saved ones); the cluster memory starts from them."""
        if self.saved_labels is not None:
            pseudo_labels, self.saved_labels = self.saved_labels, None
            return pseudo_labels
        pseudo_labels = self.labeler(round_index, self.eps)
        self.eps = pseudo_labels.eps  # the auto eps rule is fixed after round 0
        if self.memory is not None:  # every rank holds the gathered features: the same centroids everywhere
            self.memory.initialise(pseudo_labels.features, torch.from_numpy(pseudo_labels.labels),
                                   torch.from_numpy(self.camids))
        return pseudo_labels

    def train_round(self, round_index: int, pseudo_labels: PseudoLabels) -> None:
        """``adapt.epochs_per_round`` epochs on the pseudo-labelled images (``last.pt`` after each), or none when
        there are fewer clusters than identities per batch."""
        a, d, seed = self.cfg.adapt, self.cfg.data, self.cfg.seed
        start_epoch, self.epoch = self.epoch, 0
        identities_per_batch = d.batch_size // d.num_instances
        num_clusters = pseudo_labels.num_clusters
        if num_clusters < identities_per_batch:
            self.logger.info(f"round {round_index}: only {num_clusters} clusters (< {identities_per_batch} "
                             "identities per batch): training skipped this round. If this persists, raise "
                             f"cluster.eps (now {self.eps:.3f}) or lower data.batch_size / cluster.min_samples.")
            self.logger.record("round_skipped", round=round_index, num_clusters=num_clusters, eps=self.eps)
            return
        loader = train_loader_from(d, pseudo_labels.training_items(self.target.train),
                                   seed=derive_seed(seed, "adapt", round_index), camera_balanced=a.camera_balanced)
        iters = a.iters_per_epoch or len(loader)  # len(loader) = floor(len(sampler) / batch_size) on every rank
        if not distributed.same_on_all_ranks(iters):
            raise TrainingError(f"round {round_index}: ranks disagree on the iterations per epoch")
        gds_active = self.cfg.gds.enabled and round_index >= self.cfg.gds.start_round
        loss_fn = self.loss_fn(pseudo_labels.core[pseudo_labels.labels >= 0], gds_active)
        for epoch in range(start_epoch, a.epochs_per_round):
            seed_everything(derive_seed(seed, "adapt", round_index, epoch))
            set_train_epoch(loader, epoch, derive_seed(seed, "adapt", round_index, epoch, "augment"),
                            distributed.rank())
            terms = self.trainer.train_epoch(loader, loss_fn, iters, tag=f"round {round_index} epoch {epoch + 1}")
            step = round_index * a.epochs_per_round + epoch + 1
            self.logger.log("adapt_epoch", terms, at=step,
                            line=f"round {round_index} epoch {epoch + 1}/{a.epochs_per_round}",
                            round=round_index, epoch=epoch + 1, step=self.trainer.step)
            if gds_active:
                log_distance_histograms(self.logger, "gds_batch_distances", self.gds.last_pos_dist.numpy(),
                                        self.gds.last_neg_dist.numpy(), step)
            self.save(rounds_done=round_index, epochs_done=epoch + 1, pseudo_labels=pseudo_labels)

    def loss_fn(self, core: np.ndarray, gds_active: bool) -> LossFn:
        """The round's loss: ``adapt.loss`` (+ GDS-H when ``gds_active``: ``gds.enabled`` and this round >=
        ``gds.start_round``; in warm-up rounds it is not called and nothing of it is logged). ``core``: per image
        of the loader, whether it is a DBSCAN core point (``gds.pairs: core``)."""
        g, loss_feature, neck_feat = self.cfg.gds, self.cfg.adapt.loss_feature, self.cfg.model.neck_feat

        def loss(outputs: dict[str, torch.Tensor], pids: torch.Tensor, camids: torch.Tensor,
                 indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            losses, terms = [], {}
            if self.use_triplet:
                loss_triplet, stats = self.triplet(outputs[loss_feature], pids)
                losses.append(loss_triplet)
                terms.update({"triplet": loss_triplet.item(), **prefixed("triplet", stats)})
            if self.use_memory:
                loss_memory, stats = self.memory(outputs[neck_feat], pids, camids)
                losses.append(loss_memory)
                terms.update({"memory": loss_memory.item(), **prefixed("memory", stats)})
            main = sum(losses[1:], losses[0])
            if not gds_active:
                return main, terms
            confident = torch.from_numpy(core[indices.numpy()]) if g.pairs == "core" else None
            loss_gds, stats = self.gds(outputs[self.gds_feature], pids, confident)
            weight, fraction = gds_weight(main, loss_gds, outputs["before"], g.weight, g.weight_rule,
                                          g.grad_fraction)
            terms.update(prefixed("gds", stats))
            terms.update({"gds_weight": weight, "gds_grad_fraction": fraction})
            return main + weight * loss_gds, terms

        return loss

    def evaluate(self, round_index: int) -> None:
        """The target test split, every ``adapt.eval_every`` rounds and after the last (when there is one)."""
        a = self.cfg.adapt
        if not self.target.has_test_split or not ((round_index + 1) % a.eval_every == 0 or round_index == a.rounds - 1):
            return
        result = evaluate_split(self.cfg, self.model, self.target, self.device)
        self.metrics = result.metrics
        self.history.append({"round": round_index, **{k: v for k, v in result.metrics.items() if k != "cmc"}})
        log_eval(self.logger, result, f"round {round_index} target test", "eval_adapt/target_test", round_index,
                 stage="adapt", split="target_test", round=round_index)

    def state(self, stage: str, rounds_done: int, epochs_done: int = 0,
              pseudo_labels: PseudoLabels | None = None) -> RunState:
        memory = self.memory.export() if self.memory is not None else None
        labels = torch.from_numpy(np.asarray(pseudo_labels.labels)) if pseudo_labels is not None else None
        core = torch.from_numpy(np.asarray(pseudo_labels.core)) if pseudo_labels is not None else None
        return RunState.capture(self.cfg, self.model, self.trainer, stage=stage, epoch=epochs_done, round=rounds_done,
                                gds=self.gds.state_dict(), eps=self.eps, history=self.history, memory=memory,
                                pseudo_labels=labels, core=core)

    def save(self, rounds_done: int, epochs_done: int = 0, pseudo_labels: PseudoLabels | None = None) -> None:
        """``last.pt``: after an epoch (mid-round: with the round's pseudo-labels) or at a round boundary."""
        self._save(self.state("adapt", rounds_done, epochs_done, pseudo_labels), "last.pt")

    def finish(self) -> None:
        """``final.pt`` (the last round, never "best on test") and the summary record."""
        self._save(self.state("done", self.cfg.adapt.rounds), "final.pt")
        if self.history:
            best = max(self.history, key=lambda row: row["mAP"])
            self.logger.info(f"final (last round) target mAP {100 * self.history[-1]['mAP']:.1f}; best on test, "
                             f"reported only: {100 * best['mAP']:.1f} at round {best['round']}")
            self.logger.record("summary", final=self.history[-1], best_on_test_reported_only=best)


def prefixed(name: str, stats: dict[str, float]) -> dict[str, float]:
    """A loss's stats as logged: ``{"precision": p}`` -> ``{"triplet_precision": p}``."""
    return {f"{name}_{key}": value for key, value in stats.items()}


def gds_weight(main: torch.Tensor, loss_gds: torch.Tensor, features: torch.Tensor, weight: float, rule: str,
               grad_fraction: float) -> tuple[float, float]:
    """(weight, fraction): the weight GDS-H gets this step and the norm of its weighted gradient w.r.t. the pooled
    ``features`` as a fraction of the main loss's. ``rule`` ``fixed``: ``weight``; ``fraction``: the weight that
    makes the fraction ``grad_fraction`` (``weight`` when either gradient is zero; the fraction is then NaN).
    Under torch.distributed the ``fraction`` rule uses the root mean square of the ranks' norms, so every rank
    gives GDS-H the same weight."""
    main_grad, = torch.autograd.grad(main, features, retain_graph=True, allow_unused=True)
    gds_grad, = torch.autograd.grad(loss_gds, features, retain_graph=True, allow_unused=True)
    main_norm = float(main_grad.norm()) if main_grad is not None else 0.0
    gds_norm = float(gds_grad.norm()) if gds_grad is not None else 0.0
    if rule == "fraction" and distributed.is_distributed():
        squares = distributed.all_reduce_mean_dict({"main": main_norm**2, "gds": gds_norm**2})
        main_norm, gds_norm = squares["main"] ** 0.5, squares["gds"] ** 0.5
    if rule == "fraction" and main_norm > 0 and gds_norm > 0:
        weight = grad_fraction * main_norm / gds_norm
    fraction = weight * gds_norm / main_norm if main_norm > 0 and gds_norm > 0 else float("nan")
    return weight, fraction
