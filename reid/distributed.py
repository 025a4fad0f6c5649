"""torchrun / DDP helpers (nccl on GPU, gloo on CPU). Every helper is a no-op in a single process.

Collectives must be entered by every rank in the same order; each helper below is one collective (or none in a
single process), called from code paths that all ranks run identically.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from reid.errors import ReidError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_kind: str) -> tuple[int, int, int]:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns (rank, world_size, local_rank). Uses nccl when ``device_kind == "cuda"``, gloo otherwise.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not is_distributed():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return dist.get_rank(), dist.get_world_size(), local_rank


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Broadcast a picklable object from ``src`` (used for pseudo-labels computed on rank 0)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_reduce_mean_dict(values: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of every value of ``values`` (same keys on every rank), in one all-reduce."""
    if not is_distributed() or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[name]) for name in names], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    means = (tensor / world_size()).tolist()
    return {name: means[names.index(name)] for name in values}


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (so all ranks take the same branch, e.g. on a NaN loss)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def same_on_all_ranks(value: Any) -> bool:
    """Whether the picklable ``value`` is equal on every rank (e.g. the number of iterations of an epoch)."""
    if not is_distributed():
        return True
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, but every rank then updates its running statistics with
    its own local batch, so after the last step of an epoch the ranks' BN statistics differ. Called at the end of
    every epoch so that all ranks hold rank 0's state: the one checkpointed and used to extract features.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def cleanup() -> None:
    """Destroy the process group (end of a torchrun run)."""
    if is_distributed():
        dist.destroy_process_group()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_in_order(features: torch.Tensor, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All-gather per-rank shards (rows tagged by dataset index in the last column) and sort by that index.

    Shards may have different lengths; duplicates (a padded distributed sampler) are removed.
    """
    *values, indices = columns
    payload = (features, *values, indices)
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, payload)
    merged = [torch.cat([part[i] for part in gathered]) for i in range(len(payload))]
    all_indices = merged[-1]
    unique_indices, first = _first_occurrence(all_indices)
    return tuple(m[first] for m in merged[:-1]) + (unique_indices,)


def _first_occurrence(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(indices, stable=True)
    sorted_indices = indices[order]
    keep = torch.ones_like(sorted_indices, dtype=torch.bool)
    keep[1:] = sorted_indices[1:] != sorted_indices[:-1]
    return sorted_indices[keep], order[keep]


def wrap_model(model: torch.nn.Module, device: torch.device, sync_bn: bool = False,
               find_unused_parameters: bool = True) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when running under torchrun; the model itself otherwise.

    Call after any change of the model's parameters (e.g. ``reset_classifier``); train through the wrapper and
    keep using ``model`` itself for feature extraction, evaluation and checkpoints. ``sync_bn`` converts the
    BatchNorm layers of ``model`` to SyncBatchNorm in place (same parameters and buffers, so the state dict keys
    do not change); it needs CUDA devices. Raises ReidError for ``sync_bn`` on CPU under DDP.
    """
    if not is_distributed():
        return model
    if sync_bn and device.type != "cuda":
        raise ReidError("sync_bn: SyncBatchNorm needs CUDA devices (nccl); set sync_bn: false for CPU (gloo) runs")
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: needed when some parameter never gets a gradient (stage 2 with adapt.loss_feature:
    # before leaves the BNNeck unused); it costs one autograd-graph traversal per step
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                     find_unused_parameters=find_unused_parameters)
