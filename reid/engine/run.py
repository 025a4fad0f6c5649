"""One training run: stage 1 (source pretraining), then stage 2 (adaptation), resumable at any epoch.

The run owns what spans both stages: the run folder, the checkpoints (:class:`~reid.engine.checkpoint.RunState`,
written by rank 0 only), where a resumed run continues, the logger and ``summary.json``. Where it continues
depends only on the ``stage`` of the checkpoint it resumes from:

    no checkpoint, "pretrain"   stage 1 (from the checkpoint's epoch), then stage 2 from round 0
    "pretrained" (source.pt)    stage 2 from round 0
    "adapt", "done"             stage 2 from the checkpoint's round and epoch ("done": if adapt.rounds asks for more)

Example::

    cfg = resolve_paths(load_config("configs/demo.yaml", ["adapt.rounds=2"]))
    summary = Run(cfg, out="outputs/try", resume="auto").fit()     # = reid.train(cfg, out=..., resume="auto")
    summary["adapt"]["mAP"]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

from reid import distributed
from reid.config import Config, save_config
from reid.engine.adapt import Observer, run_adapt
from reid.engine.checkpoint import RunState, find_resume, load_checkpoint, load_model_weights, save_checkpoint
from reid.engine.inputs import (
    check_world_size,
    check_writable,
    configure_determinism,
    drop_unreadable_images,
    load_domain,
    pick_device,
)
from reid.engine.logging import RunLogger
from reid.engine.pretrain import run_pretrain
from reid.errors import DatasetError


class Run:
    """A training run in a run folder: ``Run(cfg, out).fit()``.

    Args:
        cfg: the resolved config (:func:`reid.config.load_config`, :func:`reid.config.resolve_paths`); not modified.
        out: the run folder (default ``cfg.output.dir``).
        resume: ``""`` start afresh, ``"auto"`` continue from ``<out>/checkpoints/last.pt`` when there is one, or
            the path of a checkpoint to continue from.
        quiet: no progress bars.
        observers: called with a :class:`~reid.engine.adapt.RoundEnd` at the end of every adaptation round, on
            every rank.

    Nothing is written into the run folder before every input (config, datasets, checkpoints) has been checked.
    Under torchrun every rank builds the same ``Run``; rank 0 writes.
    """

    def __init__(self, cfg: Config, out: str | Path | None = None, *, resume: str = "", quiet: bool = False,
                 observers: Sequence[Observer] = ()):
        self.cfg = copy.deepcopy(cfg)
        if out:
            self.cfg.output.dir = str(out)
        self.run_dir = Path(self.cfg.output.dir)
        self.resume_from, self.quiet, self.observers = resume, quiet, list(observers)
        self.summary: dict = {}

    def fit(self) -> dict:
        """Run what remains of stage 1 and stage 2; returns the summary (also written to ``summary.json``):
        ``{"pretrain": {"source": metrics, "target": metrics}, "adapt": last target-test metrics}`` (``pretrain``
        only when stage 1 ran in this run folder)."""
        cfg = self.cfg
        resume = self._prepare()
        try:
            if self.stage == "pretrain":
                self._pretrain(resume)
            if cfg.adapt.enabled and cfg.adapt.rounds > 0:
                in_stage2 = resume if self.stage in ("adapt", "done") else None
                self.summary["adapt"] = run_adapt(cfg, self.model, self.target, self.device, self.logger, self.save,
                                                  in_stage2, self.observers)
            if distributed.is_main():
                with open(self.run_dir / "summary.json", "w", encoding="utf-8") as handle:
                    json.dump(self.summary, handle, indent=2)
            self.logger.info(f"done: {self.run_dir}")
        finally:
            self.logger.close()
        distributed.cleanup()
        return self.summary

    def save(self, state: RunState, *names: str) -> None:
        """Write ``state`` as ``checkpoints/<name>`` for each name (rank 0 only). Stage-2 states get the stage-1
        metrics, so that a run resumed from any of them writes the same ``summary.json``."""
        if not distributed.is_main():
            return
        if state.stage in ("adapt", "done"):
            state.pretrain_metrics = self.summary.get("pretrain")
        for name in names:
            save_checkpoint(state.to_dict(), self.run_dir / "checkpoints" / name)

    def _prepare(self) -> RunState | None:
        """Check and load every input (device, process group, run folder, checkpoint, datasets, model), then
        write ``config.yaml`` and open the TensorBoard file. Returns the state to resume from, if any."""
        cfg, p = self.cfg, self.cfg.pretrain
        self.device = pick_device(cfg.device)
        distributed.init_from_env(self.device.type)
        check_world_size(cfg, distributed.world_size())
        if distributed.is_main():
            check_writable(self.run_dir)
        configure_determinism(cfg.seed, cfg.deterministic, self.device)
        resume_path = find_resume(self.run_dir, self.resume_from)
        resume = RunState.from_dict(load_checkpoint(resume_path), str(resume_path)) if resume_path else None
        self.stage = resume.stage if resume else "pretrain"
        # no file is written into the run folder before every input is checked (config.yaml and the events file)
        self.logger = RunLogger(self.run_dir, enabled=distributed.is_main(), quiet=self.quiet, open_files=False)
        self.logger.info(f"run folder {self.run_dir}, device {self.device}, world size {distributed.world_size()}"
                         + (f", resuming from {resume_path} (stage {self.stage})" if resume else ""))

        verbose = distributed.is_main()
        self.source = load_domain(cfg.data.source, cfg.data.source_root, cfg, verbose)
        self.target = load_domain(cfg.data.target, cfg.data.target_root, cfg, verbose)
        runs_stage1 = self.stage == "pretrain" and not p.checkpoint and p.enabled and p.epochs > 0
        if cfg.data.on_bad_image == "skip":  # decodes every image once: train splits only, and only when asked
            if runs_stage1:
                self.source = drop_unreadable_images(self.source, "source", self.logger)
            if cfg.adapt.enabled and cfg.adapt.rounds > 0:
                self.target = drop_unreadable_images(self.target, "target", self.logger)
        identities_per_batch = cfg.data.batch_size // cfg.data.num_instances
        if runs_stage1 and self.source.num_train_pids < identities_per_batch:
            raise DatasetError(f"{cfg.data.source_root}: {self.source.num_train_pids} train identities, fewer than "
                               f"the {identities_per_batch} per batch (data.batch_size / data.num_instances): lower "
                               "data.batch_size")
        self.model = self._build_model(pretrained="none" if resume else cfg.model.pretrained)
        if resume is not None:  # a checkpoint that does not fit fails here, before the run folder changes
            load_model_weights(self.model, resume.to_dict(), str(resume_path),
                               skip_classifier=self.stage != "pretrain")
        if self.stage == "pretrain" and p.checkpoint:  # an input too: checked before the folder changes
            load_model_weights(self.model, load_checkpoint(p.checkpoint), p.checkpoint, skip_classifier=True)
        elif self.stage != "pretrain":
            self._restore_stage1_metrics(resume, resume_path)
        if distributed.is_main():  # inputs checked: from here on the folder describes this run
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger.open_files()
        return resume

    def _build_model(self, pretrained: str):
        from reid.models import model_from

        return model_from(self.cfg.model, num_classes=self.source.num_train_pids, pretrained=pretrained).to(self.device)

    def _restore_stage1_metrics(self, resume: RunState, resume_path: Path) -> None:
        if resume.pretrain_metrics is not None:
            self.summary["pretrain"] = resume.pretrain_metrics
        elif resume.format < 2:  # stage-2 checkpoints of format 1 do not carry them: source.pt, next to it, does
            source = resume_path.parent / "source.pt"
            self.summary["pretrain"] = load_checkpoint(source).get("pretrain_metrics", {}) if source.is_file() else {}

    def _pretrain(self, resume: RunState | None) -> None:
        p = self.cfg.pretrain
        if p.checkpoint:
            self.logger.info(f"stage 1 skipped: source model loaded from {p.checkpoint}")
        elif p.enabled and p.epochs > 0:
            if p.eval_target and not self.target.has_test_split:
                self.logger.info(f"stage 1: no target test split (data.target: {self.cfg.data.target} without "
                                 "data.target_test_root): direct-transfer evaluation skipped")
            target = self.target if self.target.has_test_split else None
            self.summary["pretrain"] = run_pretrain(self.cfg, self.model, self.source, target, self.device,
                                                    self.logger, self.save, resume)


def train(cfg: Config, out: str | Path | None = None, *, resume: str = "", quiet: bool = False,
          observers: Sequence[Observer] = ()) -> dict:
    """Train both stages into ``out`` (default ``cfg.output.dir``); returns the summary. See :class:`Run`.

    Example::

        import reid
        from reid.config import load_config, resolve_paths

        cfg = resolve_paths(load_config("configs/demo.yaml", ["gds.weight=0.5"]))
        summary = reid.train(cfg, out="outputs/gds-0.5", resume="auto", quiet=True)
        rows = reid.read_metrics("outputs/gds-0.5", "eval")
    """
    return Run(cfg, out, resume=resume, quiet=quiet, observers=observers).fit()
