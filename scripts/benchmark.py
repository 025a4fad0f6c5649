"""Benchmarks, each a ratio against a baseline run side by side on the same machine.

    python scripts/benchmark.py eval      # Market-sized evaluate_rank vs. a per-query-loop (torchreid-style) baseline
    python scripts/benchmark.py cluster   # Jaccard + eps + DBSCAN at N = 16,522 (and --large: 100,000) x 2048;
                                          # --camera: CA-Jaccard side by side
    python scripts/benchmark.py cluster --n 100000 --knn ivf   # stage by stage, recall + ARI vs. exact side by side
    python scripts/benchmark.py cluster --n 1000000 --knn ivf --float16   # (exact only up to --exact-max)
    python scripts/benchmark.py cluster --features outputs/emb   # ivf on real embeddings (scripts/embed.py)
    python scripts/benchmark.py train     # Trainer.train_epoch throughput vs. a bare forward/backward loop
    python scripts/benchmark.py loader    # data-loader images/s on real images
    python scripts/benchmark.py export    # onnxruntime vs. torch CPU images/s on the exported embedding
                                          # (--arch mobilenet_v2 --height 128 --width 64 --batch-size 32)
    python scripts/benchmark.py all

Results are appended as JSON lines to outputs/benchmarks.jsonl (and printed); docs/BENCHMARKS.md records them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ package beside reid/

from reid.errors import ReidError  # noqa: E402


def bench_eval(args: argparse.Namespace) -> dict:
    from benchmarks.evaluation import benchmark_evaluation

    return benchmark_evaluation(num_query=args.num_query, num_gallery=args.num_gallery)


def bench_cluster(args: argparse.Namespace) -> dict:
    from benchmarks.clustering import benchmark_clustering

    if args.features:  # ivf's lists on real embeddings against the exact round (issue 17)
        from benchmarks.cluster_scale import real_feature_check

        return real_feature_check(args.features, drops=tuple(args.drops), nlist=args.nlist, nprobe=args.nprobe)
    if args.n:  # at scale (issue 17): stage by stage, recall and ARI against exact where exact is computed
        from benchmarks.cluster_scale import compare

        return compare(args.n, knn=args.knn, with_exact=args.knn != "exact" and args.n <= args.exact_max,
                       nlist=args.nlist, nprobe=args.nprobe, float16=args.float16, sketch_dim=args.sketch_dim,
                       candidates=args.candidates, drop=args.drop, train_dim=args.train_dim)

    sizes = [16522] + ([100000] if args.large else [])
    results = {str(n): benchmark_clustering(n, dim=2048) for n in sizes}
    if args.camera:  # CA-Jaccard side by side with the plain distance, same features
        camera = benchmark_clustering(16522, dim=2048, camera_jaccard=True)
        plain = results["16522"]
        results["16522_camera_jaccard"] = {**camera, "seconds_ratio_vs_plain": camera["seconds"] / plain["seconds"],
                                           "peak_mb_ratio_vs_plain": camera["peak_mb"] / plain["peak_mb"]}
    return results


def bench_train(args: argparse.Namespace) -> dict:
    """Images/s of the full training step (sampler, loader, losses, logging) vs. a bare loop on cached tensors."""
    import tempfile

    from reid.data.datasets import build_dataset
    from reid.data.loaders import build_train_loader
    from reid.engine.logging import RunLogger
    from reid.engine.trainer import Trainer, build_optimizer
    from reid.losses import GDSLoss, TripletLoss
    from reid.models import build_model
    from reid.synthetic import ensure_synthetic

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = ensure_synthetic("synth-a", Path(args.data_dir) / "synth-a")
    items = build_dataset("market-format", root).train
    height, width, batch = args.height, args.width, args.batch_size
    model = build_model(arch=args.arch, pretrained="none").to(device)
    triplet, gds = TripletLoss(0.5), GDSLoss().to(device)

    def loss_fn(outputs, pids, camids=None, indices=None):
        loss_triplet, _ = triplet(outputs["before"], pids)
        loss_gds, _ = gds(outputs["before"], pids)
        return loss_triplet + loss_gds, {}

    amp = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        logger = RunLogger(tmp, quiet=True)
        trainer = Trainer(model, build_optimizer(model, "adam", 3.5e-4, 5e-4), None, device, amp, logger)
        loader = build_train_loader(items, height, width, batch, 4, args.workers, seed=0)
        trainer.train_epoch(loader, loss_fn, 2, "warm-up")
        start = time.perf_counter()
        trainer.train_epoch(loader, loss_fn, args.iters, "bench")
        framework = args.iters * batch / (time.perf_counter() - start)
        logger.close()
    # baseline: the same model, losses and batch size on pre-loaded tensors, no sampler / loader / logging
    images = torch.randn(batch, 3, height, width, device=device)
    pids = torch.arange(batch // 4, device=device).repeat_interleave(4)
    optimizer = build_optimizer(model, "adam", 3.5e-4, 5e-4)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else torch.autocast("cpu", enabled=False)
    model.train()
    start = None
    for it in range(args.iters + 2):
        if it == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            outputs = model(images)
        loss, _ = loss_fn({k: v.float() for k, v in outputs.items()}, pids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    bare = args.iters * batch / (time.perf_counter() - start)
    return {"device": str(device), "arch": args.arch, "image": f"{height}x{width}", "batch": batch,
            "workers": args.workers, "framework_img_per_s": round(framework, 2), "bare_img_per_s": round(bare, 2),
            "ratio": round(framework / bare, 3)}


def bench_loader(args: argparse.Namespace) -> dict:
    from reid.data.datasets import build_dataset
    from reid.data.loaders import build_train_loader
    from reid.synthetic import ensure_synthetic

    root = ensure_synthetic("synth-a", Path(args.data_dir) / "synth-a")
    items = build_dataset("market-format", root).train
    loader = build_train_loader(items, args.height, args.width, args.batch_size, 4, args.workers, seed=0)
    count, start = 0, time.perf_counter()
    for images, *_ in loader:
        count += images.shape[0]
    return {"images": count, "img_per_s": round(count / (time.perf_counter() - start), 1), "workers": args.workers,
            "image": f"{args.height}x{args.width}"}


def bench_export(args: argparse.Namespace) -> dict:
    """CPU images/s of the exported ONNX embedding under onnxruntime vs. the same model in torch, side by side:
    same images (real ones when found, else the synthetic domain), same batch, same thread count, warm-up first."""
    import tempfile

    import numpy as np

    from reid.apps.export import INPUT_NAME, NormalizedEmbedding, export_onnx, onnx_session
    from reid.data.datasets import build_dataset
    from reid.data.loaders import build_test_loader
    from reid.models import build_model
    from reid.synthetic import ensure_synthetic

    real = Path(os.environ.get("REID_SHARED", "../shared")) / "data" / "real" / "cuhk03-pairs2to5"
    root = real if real.is_dir() else ensure_synthetic("synth-a", Path(args.data_dir) / "synth-a")
    items = build_dataset("market-format", root).gallery[:args.batch_size]
    images, *_ = next(iter(build_test_loader(items, args.height, args.width, args.batch_size, workers=0)))
    model = NormalizedEmbedding(build_model(arch=args.arch, pretrained="none")).eval()
    threads = torch.get_num_threads()

    def images_per_second(forward) -> float:
        for _ in range(3):
            forward()
        start = time.perf_counter()
        for _ in range(args.iters):
            forward()
        return args.iters * images.shape[0] / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = export_onnx(model.model, Path(tmp) / "model.onnx", args.height, args.width)
        session = onnx_session(path, threads=threads)
        batch = images.numpy()
        torch_batch = images.contiguous(memory_format=torch.channels_last)  # as extract_features feeds the model
        difference = float(np.abs(session.run(None, {INPUT_NAME: batch})[0] - model(torch_batch).numpy()).max())
        torch_rate = images_per_second(lambda: model(torch_batch))
        onnx_rate = images_per_second(lambda: session.run(None, {INPUT_NAME: batch}))
    return {"arch": args.arch, "image": f"{args.height}x{args.width}", "batch": images.shape[0],
            "iters": args.iters, "threads": threads, "images_from": str(root),
            "torch_img_per_s": round(torch_rate, 1), "onnxruntime_img_per_s": round(onnx_rate, 1),
            "ratio_onnxruntime_vs_torch": round(onnx_rate / torch_rate, 3), "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["eval", "cluster", "train", "loader", "export", "all"])
    parser.add_argument("--num-query", type=int, default=3368)
    parser.add_argument("--num-gallery", type=int, default=15913)
    parser.add_argument("--large", action="store_true", help="cluster: also N = 100,000")
    parser.add_argument("--camera", action="store_true", help="cluster: also CA-Jaccard side by side (N = 16,522)")
    parser.add_argument("--n", type=int, default=0, help="cluster: N synthetic features, stage by stage "
                        "(benchmarks/cluster_scale.py); exact side by side up to --exact-max")
    parser.add_argument("--features", default="", help="cluster: a scripts/embed.py output folder (Market-style "
                        "names): ivf's lists on real embeddings, per --drops, against the exact round")
    parser.add_argument("--drops", type=int, nargs="+", default=[0, 16, 64], help="cluster --features: leading "
                        "principal components removed (cluster.knn_drop values)")
    parser.add_argument("--knn", choices=["exact", "projected", "ivf", "auto"], default="ivf", help="cluster --n: k-NN search")
    parser.add_argument("--nlist", type=int, default=0, help="cluster --n: inverted lists (0: 4 sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=0, help="cluster --n: lists joined per list (0: 8)")
    parser.add_argument("--sketch-dim", type=int, default=0, help="cluster --n: projected: sketch dimensions "
                        "(0: 512); ivf: sketch of the partition space (0: none) (cluster.knn_dim)")
    parser.add_argument("--candidates", type=int, default=0, help="cluster --n --knn projected: candidates per row "
                        "re-ranked exactly (0: 4 k1, cluster.knn_candidates)")
    parser.add_argument("--drop", type=int, default=-1, help="cluster --n --knn ivf: leading principal components "
                        "removed before filing (-1: 0, cluster.knn_drop)")
    parser.add_argument("--train-dim", type=int, default=0, help="cluster --n --knn ivf: k-means and filing in a "
                        "sketch this wide, 8 centroids re-ranked exactly (0: full width, cluster.knn_train_dim)")
    parser.add_argument("--float16", action="store_true", help="cluster --n: float16 features")
    parser.add_argument("--exact-max", type=int, default=100000, help="cluster --n: largest N run exactly too")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--results", default="outputs/benchmarks.jsonl")
    args = parser.parse_args()
    jobs = {"eval": bench_eval, "cluster": bench_cluster, "train": bench_train, "loader": bench_loader,
            "export": bench_export}
    names = list(jobs) if args.what == "all" else [args.what]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            result = jobs[name](args)
        except ReidError as error:  # bad input (e.g. cluster --features on a folder without an embedding)
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        row = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
               "result": result}
        print(json.dumps(row, indent=2))
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
