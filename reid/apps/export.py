"""``reid-export``: the retrieval embedding of a checkpoint as an ONNX model with a dynamic batch axis.

    reid-export --checkpoint outputs/demo/checkpoints/final.pt --out outputs/demo/final.onnx

The graph maps ``images`` (B, 3, H, W) float32 to ``features`` (B, D) float32, rows L2-normalised: the network
in eval mode (BNNeck side as ``model.neck_feat`` says), then ``F.normalize``, exactly what
:class:`reid.FeatureExtractor` returns. Inputs are prepared as in evaluation: RGB, resized to H x W (bilinear),
scaled to [0, 1], normalised with the ImageNet mean / std (``build_transforms(H, W, is_train=False)``). H, W,
mean, std, D and the architecture are stored in the model's metadata (``metadata_props``). After writing,
onnxruntime is compared with torch on a random batch (the maximum absolute difference is printed).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.errors import ReidError

INPUT_NAME, OUTPUT_NAME = "images", "features"
DEFAULT_OPSET = 17


class NormalizedEmbedding(nn.Module):
    """``model`` in eval mode followed by L2 normalisation: (B, 3, H, W) -> (B, D), unit rows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1)


def export_onnx(model: nn.Module, path: str | Path, height: int, width: int, opset: int = DEFAULT_OPSET,
                metadata: dict[str, str] | None = None) -> Path:
    """Write ``NormalizedEmbedding(model)`` to ``path`` as ONNX, batch axis dynamic (named ``batch``).

    Args:
        model: a :class:`~reid.models.ReidNet` (any device; exported from a CPU copy in eval mode).
        height, width: the input size in pixels (fixed in the graph).
        opset: ONNX opset version.
        metadata: extra string pairs for the model's ``metadata_props``.

    Example: ``export_onnx(model, "final.onnx", 256, 128)``; then
    ``onnxruntime.InferenceSession("final.onnx").run(None, {"images": batch})[0]`` -> (B, D).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = NormalizedEmbedding(model).cpu().eval()
    example = torch.zeros(2, 3, height, width)
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript-based exporter: no onnxscript dependency and a plain dynamic batch axis
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    graph = onnx.load(str(path))
    properties = {"height": str(height), "width": str(width), "mean": ",".join(map(str, IMAGENET_MEAN)),
                  "std": ",".join(map(str, IMAGENET_STD)), "normalized": "L2", **(metadata or {})}
    for key, value in properties.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def onnx_session(path: str | Path, threads: int = 0):
    """An onnxruntime CPU session (``threads`` 0: onnxruntime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(path: str | Path, model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime and torch (L2-normalised outputs) on ``images``."""
    with torch.no_grad():
        expected = NormalizedEmbedding(model).cpu().eval()(images).numpy()
    actual = onnx_session(path).run(None, {INPUT_NAME: images.numpy()})[0]
    return float(np.abs(actual - expected).max())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export the retrieval embedding of a checkpoint to ONNX: images (B, 3, H, W) float32,\n"
                    "ImageNet-normalised RGB -> features (B, D) float32, L2-normalised; B is dynamic.",
        epilog="example:\n  reid-export --checkpoint outputs/demo/checkpoints/final.pt --out outputs/demo/final.onnx")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by reid-train")
    parser.add_argument("--config", default="",
                        help="training config; only needed for a checkpoint that carries none (a bare state dict)")
    parser.add_argument("--out", default="", help="ONNX file (default: the checkpoint's path with .onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch comparison")
    return parser


def run(argv: list[str] | None = None) -> int:
    from reid.api import build_from_checkpoint
    from reid.cli import check_writable

    args = build_parser().parse_args(argv)
    model, spec = build_from_checkpoint(args.checkpoint, args.config or None)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    if out.is_dir():
        raise ReidError(f"--out {out} is a folder: give the ONNX file's path, e.g. {out / 'model.onnx'}")
    check_writable(out.parent)
    metadata = {"arch": spec.model.arch, "neck_feat": spec.model.neck_feat, "dim": str(model.feat_dim),
                "checkpoint": str(Path(args.checkpoint).resolve())}
    export_onnx(model, out, spec.height, spec.width, opset=args.opset, metadata=metadata)
    line = f"wrote {out}: images (B, 3, {spec.height}, {spec.width}) -> features (B, {model.feat_dim}), L2-normalised"
    if not args.no_check:
        images = torch.randn(3, 3, spec.height, spec.width, generator=torch.Generator().manual_seed(0))
        line += f"; onnxruntime vs torch, batch of 3: max abs difference {max_difference(out, model, images):.2e}"
    print(line)
    return 0


def main(argv: list[str] | None = None) -> None:
    from reid.cli import _run_cli

    sys.exit(_run_cli(run, argv))
