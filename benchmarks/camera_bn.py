"""Camera-based BN in training: seconds per optimisation step of the one-forward implementation
(:mod:`reid.models.camera_bn`) against the plain step and against one forward per camera group (the first
implementation, reproduced here as the baseline), side by side and interleaved.

Each step draws a new camera per image (8 cameras, as the P x K sampler over a camera-balanced target gives), so
the per-group forwards see new batch shapes as they do in training. Run from the repository root::

    python -m benchmarks.camera_bn --arch mobilenet_v2 --height 128 --width 64 --batch-size 64 --steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.reference import per_group_forwards
from reid.models import build_model
from reid.models.camera_bn import camera_groups


def benchmark(arch: str, height: int, width: int, batch_size: int, steps: int, cameras: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build_model(arch=arch, pretrained="none").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    images = torch.randn(batch_size, 3, height, width).contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    variants = {
        "plain": lambda cams: model(images),
        "one_forward": lambda cams: model(images, camids=cams),
        "per_group_forwards": lambda cams: per_group_forwards(model, images, camera_groups(cams)),
    }
    seconds = {name: 0.0 for name in variants}
    for step in range(steps + 1):  # step 0 warms each variant up and is not counted
        cams = torch.randint(0, cameras, (batch_size,), generator=generator)
        for name, forward in variants.items():
            start = time.perf_counter()
            outputs = forward(cams)
            optimizer.zero_grad(set_to_none=True)
            outputs["before"].square().mean().backward()
            optimizer.step()
            if step:
                seconds[name] += time.perf_counter() - start
    per_step = {name: total / steps for name, total in seconds.items()}
    return {"arch": arch, "image": f"{height}x{width}", "batch": batch_size, "cameras": cameras, "steps": steps,
            "threads": torch.get_num_threads(), "seconds_per_step": per_step,
            "one_forward_vs_plain": per_step["one_forward"] / per_step["plain"],
            "per_group_vs_plain": per_step["per_group_forwards"] / per_step["plain"],
            "one_forward_vs_per_group": per_step["one_forward"] / per_step["per_group_forwards"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cameras", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(benchmark(args.arch, args.height, args.width, args.batch_size, args.steps, args.cameras),
                     indent=2))


if __name__ == "__main__":
    main()
