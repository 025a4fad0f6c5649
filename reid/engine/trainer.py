"""The shared epoch loop (both stages): forward, loss, AMP-aware backward, NaN guard, progress and logging."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid import distributed
from reid.engine.logging import RunLogger
from reid.errors import TrainingError

# (model outputs, pids, camids, indices of the images in the loader's item list) -> (loss, terms); camids and
# indices are None when the loader yields none
LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None, torch.Tensor | None],
                  tuple[torch.Tensor, dict[str, float]]]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from (base seed, stage, round, epoch): every epoch starts from a known RNG state, so a run
    resumed at an epoch boundary continues exactly as the uninterrupted run would."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def warmup_multistep(warmup_epochs: int, milestones: list[int], gamma: float, warmup_factor: float = 0.01):
    """LR multiplier per epoch: linear warm-up from ``warmup_factor`` then step decay (the UDA_TP / BoT recipe)."""

    def factor(epoch: int) -> float:
        decay = gamma ** sum(1 for m in milestones if epoch >= m)
        if epoch < warmup_epochs:
            alpha = epoch / warmup_epochs
            return (warmup_factor * (1 - alpha) + alpha) * decay
        return decay

    return factor


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class Trainer:
    """Holds what lives across epochs: model, optimizer, scheduler, AMP scaler, device, global step.

    Args:
        model: a :class:`reid.models.ReidNet` (possibly DDP-wrapped).
        amp: use ``torch.autocast`` (fp16) + GradScaler; only on CUDA.
        camera_bn: pass the batch's camera ids to the model (``ReidNet.forward(images, camids)``): camera-based BN.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, device: torch.device, amp: bool,
                 logger: RunLogger, log_every: int = 20, camera_bn: bool = False):
        self.model = model
        self.camera_bn = camera_bn  # camera-based BN: the model normalises each camera's images separately
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.logger = logger
        self.log_every = log_every
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's trainer state. The learning rate given now (the config's) wins over the stored
        one: unchanged, the resume is exact; lowered after a divergence, it applies at the same schedule point."""
        configured = [group.get("initial_lr", group["lr"]) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        for index, (group, lr) in enumerate(zip(self.optimizer.param_groups, configured)):
            if group.get("initial_lr", group["lr"]) == lr:
                continue
            if self.scheduler is not None:  # LambdaLR: lr = base lr x factor(epoch)
                self.scheduler.base_lrs[index] = group["initial_lr"] = lr
                group["lr"] = lr * self.scheduler.lr_lambdas[index](self.scheduler.last_epoch)
            else:
                group["lr"] = lr
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state.get("step", 0))

    def train_epoch(self, loader: DataLoader, loss_fn: LossFn, iters: int, tag: str) -> dict[str, float]:
        """Run ``iters`` optimisation steps (cycling the loader if needed); returns the mean of each loss term.

        Raises TrainingError on a non-finite loss, before the optimizer step (weights stay at the last good step).
        Under DDP (``self.model`` wrapped by :func:`reid.distributed.wrap_model`): every rank must run the same
        ``iters``; a non-finite loss on any rank raises on all ranks; the returned means are averaged over ranks;
        at the end, every rank's buffers (BN running statistics) are set to rank 0's.
        """
        self.model.train()
        sums: dict[str, float] = {}
        iterator = iter(loader)
        show = self.logger.enabled and not self.logger.quiet
        progress = tqdm(range(iters), desc=tag, leave=False, disable=not show, dynamic_ncols=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        for it in progress:
            try:
                images, pids, camids, indices = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                images, pids, camids, indices = next(iterator)
            images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            pids = pids.to(self.device, non_blocking=True)
            with autocast:
                outputs = self.model(images, camids=camids) if self.camera_bn else self.model(images)
            # autocast's half-precision outputs go up to float32; float64 (tests) stays as it is
            outputs = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
                       for k, v in outputs.items()}
            camids = torch.as_tensor(camids).to(self.device) if camids is not None else None
            indices = torch.as_tensor(indices) if indices is not None else None
            loss, terms = loss_fn(outputs, pids, camids, indices)
            # under DDP every rank must take the same branch: a rank that raised alone would leave the others
            # waiting in the gradient all-reduce
            finite = bool(torch.isfinite(loss))
            if not distributed.all_true(finite):
                value = "non-finite on another rank" if finite else loss.item()
                raise TrainingError(
                    f"{tag}: loss became {value} at step {self.step} (iteration {it}); weights kept at the "
                    f"last good checkpoint. Lower the learning rate{' or set amp: false' if self.amp else ''}.")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            terms = {"loss": loss.item(), **terms}
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            if self.step % self.log_every == 0:
                self.logger.scalars("train", {**terms, "lr": self.optimizer.param_groups[0]["lr"]}, self.step)
            if show:
                progress.set_postfix({k: f"{v:.3f}" for k, v in list(terms.items())[:4]})
        progress.close()
        distributed.broadcast_buffers(self.model)  # BN running statistics: rank 0's on every rank
        # a finite loss can still step with non-finite gradients; such weights must never reach a checkpoint
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            raise TrainingError(
                f"{tag}: weights became non-finite by step {self.step}; weights kept at the last good checkpoint. "
                f"Lower the learning rate{' or set amp: false' if self.amp else ''}.")
        # epoch means over all ranks (loss terms computed on a rank's local batch; GDS terms are already global)
        return distributed.all_reduce_mean_dict({name: total / max(iters, 1) for name, total in sums.items()})
