"""Round-0 pseudo-label quality of a checkpoint on the target TRAIN split, for several clustering-feature options.

Prints one line per option. Label-free (what a folder of your own unlabelled cameras, ``data.target: folder``,
gets): eps, clusters, outlier share, share of clusters spanning >= 2 cameras, largest cluster's share of the
images. Where the target-train split has identity labels, also (marked as using them; never the test split):
pairwise precision / recall / F1 and cross-camera precision / recall, the signal docs/RESULTS.md uses to choose
clustering defaults.

    python scripts/cluster_quality.py --config configs/cuhk03.yaml \
        --checkpoint outputs/cam-cuhk03/seed0/source/checkpoints/source.pt
    # an eps sweep of one option (each eps one DBSCAN on the same distance):
    python scripts/cluster_quality.py --config configs/cuhk03.yaml --checkpoint ... \
        --features plain --camera-norm center --camera-jaccard true --eps auto 0.5 0.55 0.6
    # your own cameras (no identities): the label-free columns, e.g. to see how eps moves clusters and outliers
    python scripts/cluster_quality.py --config configs/my_cameras.yaml --checkpoint outputs/my-cameras/checkpoints/final.pt \
        --features plain --camera-jaccard false --eps auto 0.45 0.5 0.55
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from reid.cluster import camera_spread, generate_pseudo_labels, pseudo_label_quality
from reid.config import load_config, resolve_paths
from reid.data.loaders import build_test_loader
from reid.engine.checkpoint import load_checkpoint, load_model_weights
from reid.engine.inputs import load_domain
from reid.evaluation.camera_bn import extract_features_camera_bn
from reid.evaluation.features import extract_features
from reid.models import model_from


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--features", nargs="+", choices=("plain", "camera_bn"), default=["plain", "camera_bn"],
                        help="clustering features: the model's, or with per-camera BN statistics (default: both)")
    parser.add_argument("--camera-norm", nargs="+", choices=("none", "center", "standardize"),
                        default=["none", "center"], help="cluster.camera_norm values to compare (default: none center)")
    parser.add_argument("--camera-jaccard", nargs="+", choices=("false", "true"), default=["false", "true"],
                        help="cluster.camera_jaccard values to compare (default: both)")
    parser.add_argument("--eps", nargs="+", type=_eps, default=None, metavar="EPS",
                        help="DBSCAN radii to compare: 'auto' (the rho rule) or numbers in (0, 1) "
                             "(default: the config's cluster.eps)")
    args = parser.parse_args(argv)
    cfg = resolve_paths(load_config(args.config, args.overrides))
    d, c = cfg.data, cfg.cluster
    target = load_domain(cfg.data.target, cfg.data.target_root, cfg, verbose=False)
    train = target.train
    if not target.train_labelled:
        print(f"{cfg.data.target_root}: the target-train split has no identity labels; label-free columns only")
    model = model_from(cfg.model, pretrained="none")
    load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint, skip_classifier=True)
    plain, pids, cams = extract_features(model, build_test_loader(train, d.height, d.width, d.test_batch_size,
                                                                  d.workers))
    features_by_name = {"plain": plain}
    if "camera_bn" in args.features:
        features_by_name["camera_bn"], _, _ = extract_features_camera_bn(
            model, train, height=d.height, width=d.width, batch_size=d.test_batch_size, workers=d.workers)
    radii = args.eps if args.eps is not None else [_eps(str(c.eps))]
    for name, norm, camera_jaccard, eps in itertools.product(
            args.features, args.camera_norm, [v == "true" for v in args.camera_jaccard], radii):
        labels, info = generate_pseudo_labels(
            features_by_name[name].numpy(), eps, k1=c.k1, k2=c.k2, min_samples=c.min_samples, rho=c.rho,
            camids=cams, camera_norm=norm, camera_jaccard=camera_jaccard,
            camera_k=(c.k1_intra, c.k1_inter, c.k2_intra, c.k2_inter))
        sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(1, dtype=int)
        line = (f"features {name:9s} camera_norm {norm:11s} camera_jaccard {camera_jaccard!s:5s} eps {info['eps']:.3f} "
                f"clusters {info['num_clusters']:4d} outliers {np.mean(labels < 0):.2f} "
                f"cross-camera {camera_spread(labels, cams)['cross_camera_cluster_fraction']:.2f} "
                f"largest {sizes.max() / len(labels):.3f}")
        if target.train_labelled:
            q = pseudo_label_quality(labels, pids, cams)
            line += (f" | [uses target-train labels] P {q['pairwise_precision']:.3f} R {q['pairwise_recall']:.3f} "
                     f"F1 {q['pairwise_f1']:.3f} cross-camera P {q['cross_camera_pairwise_precision']:.3f} "
                     f"R {q['cross_camera_pairwise_recall']:.3f}")
        print(line)


def _eps(value: str) -> float | None:
    """'auto' -> None (the rho rule); otherwise a radius in (0, 1)."""
    if value == "auto":
        return None
    try:
        eps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in (0, 1), got {value!r}") from None
    if not 0 < eps < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in (0, 1), got {value!r}")
    return eps


if __name__ == "__main__":
    main()
