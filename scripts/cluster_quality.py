"""Round-0 pseudo-label quality of a checkpoint on the target TRAIN split, for several clustering-feature options.

Uses the target-train identity labels (never the test split): the signal docs/RESULTS.md uses to choose
clustering defaults. Prints one line per option: eps, clusters, outlier share, pairwise precision / recall / F1 and
cross-camera precision / recall.

    python scripts/cluster_quality.py --config configs/cuhk03.yaml \
        --checkpoint outputs/cam-cuhk03/seed0/source/checkpoints/source.pt
"""

from __future__ import annotations

import argparse
import itertools

from reid.cluster import generate_pseudo_labels, pseudo_label_quality
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
    args = parser.parse_args(argv)
    cfg = resolve_paths(load_config(args.config, args.overrides))
    d, c = cfg.data, cfg.cluster
    train = load_domain(cfg.data.target, cfg.data.target_root, cfg, verbose=False).train
    model = model_from(cfg.model, pretrained="none")
    load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint, skip_classifier=True)
    plain, pids, cams = extract_features(model, build_test_loader(train, d.height, d.width, d.test_batch_size,
                                                                  d.workers))
    per_camera_bn, _, _ = extract_features_camera_bn(model, train, height=d.height, width=d.width,
                                                     batch_size=d.test_batch_size, workers=d.workers)
    eps = None if c.eps == "auto" else float(c.eps)
    for (name, features), norm, camera_jaccard in itertools.product(
            (("plain", plain), ("camera_bn", per_camera_bn)), ("none", "center"), (False, True)):
        labels, info = generate_pseudo_labels(
            features.numpy(), eps, k1=c.k1, k2=c.k2, min_samples=c.min_samples, rho=c.rho, camids=cams,
            camera_norm=norm, camera_jaccard=camera_jaccard,
            camera_k=(c.k1_intra, c.k1_inter, c.k2_intra, c.k2_inter))
        q = pseudo_label_quality(labels, pids, cams)
        print(f"features {name:9s} camera_norm {norm:6s} camera_jaccard {camera_jaccard!s:5s} eps {info['eps']:.3f} "
              f"clusters {info['num_clusters']:4d} outliers {q['outlier_fraction']:.2f} | [uses target-train labels] "
              f"P {q['pairwise_precision']:.3f} R {q['pairwise_recall']:.3f} F1 {q['pairwise_f1']:.3f} "
              f"cross-camera P {q['cross_camera_pairwise_precision']:.3f} R {q['cross_camera_pairwise_recall']:.3f}")


if __name__ == "__main__":
    main()
