"""Camera-based BatchNorm in training (Zhuang et al., ECCV 2020): in one forward of the whole batch, every BN layer
normalises each camera's images with that camera's own batch statistics.

The obvious implementation, one forward per camera group, gives each group a batch shape of its own; on CPU the
convolution back-end (oneDNN) builds new kernels for every new shape, and with 8 cameras and P x K batches the
group sizes change every step: a round took 11x the plain one (docs/RESULTS.md). Here the batch keeps its shape:
each BN layer sums its input per group (as products with a (B, G) one-hot membership matrix) and normalises with
the statistics of the image's own group. Outputs equal the per-group forwards up to float rounding; the running
statistics take one momentum update per group, in the same order (``tests/test_camera_bn.py`` checks both against per-group forwards). Under DDP
every rank normalises the camera groups of its own batch (SyncBatchNorm layers included: camera statistics are
per rank, as with per-group forwards they could not be shared).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def camera_groups(camids: torch.Tensor) -> list[torch.Tensor]:
    """The images normalised together: one group per camera, in camera order. A camera with a single image in the
    batch cannot be normalised alone (a BN layer after pooling needs two values per channel): such images form one
    group together, appended last, or join the first group if only one is left. Returns index tensors."""
    cams = torch.as_tensor(camids)
    values, inverse, counts = torch.unique(cams, return_inverse=True, return_counts=True)
    groups = [torch.nonzero(inverse == i).squeeze(1) for i in range(len(values)) if counts[i] >= 2]
    singles = torch.nonzero(counts[inverse] == 1).squeeze(1)
    if len(singles) == 1 and groups:
        groups[0] = torch.cat([groups[0], singles])
    elif len(singles):
        groups.append(singles)
    return groups


def grouped_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, group: torch.Tensor,
                       num_groups: int) -> torch.Tensor:
    """``bn`` in train mode applied to each group of ``x`` separately: ``group`` (B,) the group of each image in
    0..num_groups-1. Biased variance for the normalisation, unbiased for the running statistics (as BatchNorm)."""
    weight = bn.weight if bn.affine else x.new_ones(x.shape[1])
    bias = bn.bias if bn.affine else x.new_zeros(x.shape[1])
    # (B, G) one-hot membership: group sums and per-image lookups as small matrix products (index_add / indexing
    # on (B, C) tensors took ~100x longer on CPU)
    members = torch.nn.functional.one_hot(group, num_groups).to(_stat_dtype(x))
    out, mean, var, counts = _GroupedBatchNorm.apply(x, weight, bias, members, eps=bn.eps)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            unbiased = var * (counts / (counts - 1).clamp(min=1))[:, None]
            for g in range(num_groups):  # one update per group, in group order: what per-group forwards do
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - momentum).add_(mean[g], alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(unbiased[g], alpha=momentum)
    return out


class _GroupedBatchNorm(torch.autograd.Function):
    """Per-group batch normalisation with the BN gradient written out per group: two passes over the activations
    forward (statistics, output) and three backward, as the fused BatchNorm kernels take, instead of the ~10 an
    autograd graph of indexing and reductions takes (2-2.5x a native BN layer, measured)."""

    @staticmethod
    def forward(ctx, x, weight, bias, members, eps):
        # statistics in float32 (or float64) even for half-precision activations (autocast), as BatchNorm does
        dtype, dims = members.dtype, tuple(range(2, x.dim()))
        shape = (x.shape[0], x.shape[1]) + (1,) * len(dims)
        counts = members.sum(dim=0) * x.shape[2:].numel()  # (G,) values per channel and group
        mean = members.T @ (x.sum(dim=dims, dtype=dtype) if dims else x.to(dtype)) / counts[:, None]  # (G, C)
        centred = x.to(dtype) - (members @ mean).view(shape)
        squares = torch.linalg.vector_norm(centred, dim=dims).square() if dims else centred.square()
        del centred
        var = members.T @ squares / counts[:, None]  # biased, (G, C)
        rstd = torch.rsqrt(var + eps)
        scale = rstd * weight  # out = x * scale[g] + shift[g]
        shift = bias - mean * scale
        out = torch.addcmul((members @ shift).view(shape).to(x.dtype), x, (members @ scale).view(shape).to(x.dtype))
        ctx.save_for_backward(x, weight, members, counts, mean, rstd)
        ctx.mark_non_differentiable(mean, var, counts)
        return out, mean, var, counts

    @staticmethod
    def backward(ctx, grad_out, *_):
        x, weight, members, counts, mean, rstd = ctx.saved_tensors
        dtype, dims = members.dtype, tuple(range(2, x.dim()))
        shape = (x.shape[0], x.shape[1]) + (1,) * len(dims)
        sum_dy = members.T @ (grad_out.sum(dim=dims, dtype=dtype) if dims else grad_out.to(dtype))  # (G, C)
        # sum of dy * x_hat per group, x_hat = (x - mean) * rstd
        sum_dy_x = members.T @ ((grad_out * x).sum(dim=dims, dtype=dtype) if dims else (grad_out * x).to(dtype))
        sum_dy_xhat = (sum_dy_x - mean * sum_dy) * rstd
        grad_weight = sum_dy_xhat.sum(dim=0)
        grad_bias = sum_dy.sum(dim=0)
        # dx = k (dy - sum_dy / n - x_hat sum_dy_xhat / n), k = weight * rstd: dy * a + x * b + c per group
        k = weight * rstd
        b = -k * rstd * sum_dy_xhat / counts[:, None]
        c = -k * sum_dy / counts[:, None] - b * mean
        per_image = [(members @ term).view(shape).to(x.dtype) for term in (c, b, k)]
        grad_x = torch.addcmul(torch.addcmul(per_image[0], x, per_image[1]), grad_out, per_image[2])
        return grad_x, grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None, None


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


@contextlib.contextmanager
def per_camera_batch_norm(model: nn.Module, camids: torch.Tensor, device: torch.device) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``model`` (train mode) normalises each camera group of
    :func:`camera_groups` with its own statistics; the layers' own ``forward`` is restored on exit."""
    groups = camera_groups(camids)
    group = torch.empty(sum(len(g) for g in groups), dtype=torch.long)
    for index, members in enumerate(groups):
        group[members] = index
    group = group.to(device)
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.forward = (lambda x, layer=layer: grouped_batch_norm(layer, x, group, len(groups)))
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
