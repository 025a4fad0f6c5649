"""Stage 1: supervised training on the labelled source domain (label-smoothed CE + batch-hard triplet)."""

from __future__ import annotations

import torch

from reid import distributed
from reid.config import Config
from reid.data.datasets import ReidDataset
from reid.data.loaders import set_train_epoch, train_loader_from
from reid.engine.checkpoint import RunState, SaveFn
from reid.engine.evaluate import evaluate_split
from reid.engine.logging import RunLogger
from reid.engine.monitor import log_eval
from reid.engine.trainer import Trainer, build_optimizer, derive_seed, seed_everything, warmup_multistep
from reid.errors import TrainingError
from reid.losses import CrossEntropyLabelSmooth, TripletLoss


def run_pretrain(cfg: Config, model: torch.nn.Module, source: ReidDataset, target: ReidDataset | None,
                 device: torch.device, logger: RunLogger, save: SaveFn, resume: RunState | None = None) -> dict:
    """Train ``model`` (which must carry a classifier of ``source.num_train_pids`` outputs) on ``source.train``,
    then evaluate on the source test split and (direct transfer) on the target test split.

    ``resume``: a ``"pretrain"`` state to continue exactly. Saves ``last.pt`` after every epoch and ``source.pt``
    (stage ``"pretrained"``) at the end through ``save(state, *names)``.
    Under torchrun the model is trained through DDP, the P x K sampler shards identities across ranks and the
    evaluations extract features shard by shard (every rank returns the same metrics).
    Returns {"source": metrics, "target": metrics} (either may be missing when disabled).
    """
    p = cfg.pretrain
    # DDP under torchrun (the classifier is already attached); evaluation and checkpoints use ``model`` itself
    train_model = distributed.wrap_model(model, device, cfg.sync_bn, find_unused_parameters=False)
    optimizer = build_optimizer(model, p.optimizer, p.lr, p.weight_decay, p.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_multistep(p.warmup_epochs, p.milestones, p.gamma))
    trainer = Trainer(train_model, optimizer, scheduler, device, cfg.amp, logger, cfg.output.log_every,
                      camera_bn=cfg.pretrain.camera_bn)
    start_epoch = 0
    if resume is not None:  # the weights are loaded already (every rank the same checkpoint)
        trainer.load_state_dict(resume.trainer)
        start_epoch = int(resume.epoch)
        logger.info(f"stage 1: resuming after epoch {start_epoch}/{p.epochs}")

    cross_entropy = CrossEntropyLabelSmooth(source.num_train_pids, cfg.loss.label_smoothing)
    triplet = TripletLoss(cfg.loss.triplet_margin, cfg.loss.triplet_normalize)

    def loss_fn(outputs: dict[str, torch.Tensor], pids: torch.Tensor, camids: torch.Tensor,
                indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss_ce, ce_stats = cross_entropy(outputs["logits"], pids)
        loss_triplet, _ = triplet(outputs["before"], pids)
        return loss_ce + loss_triplet, {"ce": loss_ce.item(), "triplet": loss_triplet.item(),
                                        "acc": ce_stats["accuracy"]}

    d = cfg.data
    loader = train_loader_from(d, source.train, seed=derive_seed(cfg.seed, "pretrain"))
    iters = p.iters_per_epoch or len(loader)  # len(loader) = floor(len(sampler) / batch_size) on every rank
    if not distributed.same_on_all_ranks(iters):
        raise TrainingError(f"stage 1: ranks disagree on the iterations per epoch ({iters} on rank {distributed.rank()})")
    logger.info(f"stage 1: {len(source.train)} images / {source.num_train_pids} ids, {p.epochs} epochs x {iters} iters")
    for epoch in range(start_epoch, p.epochs):
        seed_everything(derive_seed(cfg.seed, "pretrain", epoch))
        set_train_epoch(loader, epoch, derive_seed(cfg.seed, "pretrain", epoch, "augment"), distributed.rank())
        terms = trainer.train_epoch(loader, loss_fn, iters, tag=f"pretrain {epoch + 1}/{p.epochs}")
        scheduler.step()
        logger.log("pretrain_epoch", terms, at=epoch + 1, line=f"pretrain epoch {epoch + 1}/{p.epochs}",
                   epoch=epoch + 1, step=trainer.step)
        save(RunState.capture(cfg, model, trainer, stage="pretrain", epoch=epoch + 1), "last.pt")

    metrics = {}
    evals = [("source", source, p.eval_source), ("target", target, p.eval_target and target is not None)]
    for name, dataset, enabled in evals:
        if not enabled:
            continue
        result = evaluate_split(cfg, model, dataset, device)
        metrics[name] = result.metrics
        label = "source test (supervised)" if name == "source" else "target test (direct transfer)"
        log_eval(logger, result, f"stage 1 {label}", f"eval_pretrain/{name}_test", 0,
                 stage="pretrain", split=f"{name}_test")
    save(RunState.capture(cfg, model, trainer, stage="pretrained", pretrain_metrics=metrics), "source.pt", "last.pt")
    return metrics
