"""How hard does GDS-H pull, next to the batch-hard triplet? A gradient-scale diagnostic for stage 2.

    python scripts/gds_gradients.py --config configs/demo.yaml \
        --checkpoint outputs/ablate-demo/seed0/source/checkpoints/source.pt [--batches 6] [--set k=v ...]

Clusters the target-train features of the checkpoint exactly as round 0 of stage 2 does and draws P x K batches
of the pseudo-labels. For each embedding GDS-H could measure (``before`` / ``after`` the BNNeck) and distance
(``normalize`` true / false) it reports the positive / negative distance statistics GDS-H sees, the triplet loss
(on ``adapt.loss_feature``, as in training), and the norms of the gradients w.r.t. the backbone parameters of the
triplet loss and of GDS-H (weight 1), the latter with its momentum buffers warmed up on earlier batches
(``gds.momentum`` as configured, and beta = 0).
The ratio ||grad GDS-H|| / ||grad triplet|| is the number that says whether ``gds.weight`` matters.
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

from reid.config import load_config, resolve_paths
from reid.data.loaders import build_train_loader
from reid.engine.checkpoint import load_checkpoint, load_model_weights
from reid.engine.inputs import load_domain
from reid.engine.pseudo_label import PseudoLabeler
from reid.losses import GDSLoss, TripletLoss
from reid.models import model_from


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--batches", type=int, default=6, help="measured batches (after as many warm-up batches)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = resolve_paths(load_config(args.config, args.overrides))
    torch.manual_seed(cfg.seed)
    d, m, c, g = cfg.data, cfg.model, cfg.cluster, cfg.gds
    target = load_domain(cfg.data.target, cfg.data.target_root, cfg, verbose=False)
    model = model_from(m, pretrained="none")
    load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint, skip_classifier=True)
    device = torch.device("cpu")

    labeler = PseudoLabeler(model, target.train, cluster=c, height=d.height, width=d.width,
                            batch_size=d.test_batch_size, workers=d.workers, device=device)
    pseudo_labels = labeler(round_index=0, eps=None if c.eps == "auto" else float(c.eps))
    labelled = pseudo_labels.training_items(target.train)
    print(f"round-0 pseudo-labels: {pseudo_labels.num_clusters} clusters, {len(labelled)} of "
          f"{len(pseudo_labels.labels)} images, eps {pseudo_labels.eps:.3f}")
    loader = build_train_loader(labelled, d.height, d.width, d.batch_size, d.num_instances, 0, seed=cfg.seed,
                                flip_prob=d.flip_prob, pad=d.pad, random_erasing_prob=d.random_erasing_prob)
    if len(loader) == 0:
        sys.exit(f"{pseudo_labels.num_clusters} clusters: too few for one P x K batch; nothing to measure")
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < 2 * args.batches:  # as many passes over the pseudo-labelled images as needed
        batches += [(images, pids) for images, pids, _, _ in loader]
    batches = batches[:2 * args.batches]
    triplet = TripletLoss(cfg.loss.triplet_margin, cfg.loss.triplet_normalize)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    state = copy.deepcopy(model.state_dict())

    print(f"triplet on the features {cfg.adapt.loss_feature} the BNNeck (adapt.loss_feature)")
    header = ("| GDS-H feature | normalize | mu+ | sd+ | mu- | sd- | triplet | ‖∇ triplet‖ | "
              f"‖∇ GDS-H‖ β={g.momentum} | ratio | ‖∇ GDS-H‖ β=0 | ratio |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for gds_feature in ("before", "after"):
        for normalize in (True, False):
            model.load_state_dict(state)
            model.train()
            rows = []
            gds_slow = GDSLoss(g.momentum, g.lambda_sigma, g.lambda_h, g.kappa, normalize, g.hard)
            gds_fast = GDSLoss(0.0, g.lambda_sigma, g.lambda_h, g.kappa, normalize, g.hard)
            for index, (images, pids) in enumerate(batches):
                outputs = model(images)
                out = outputs[gds_feature]
                if index < args.batches:  # warm up the momentum buffers
                    with torch.no_grad():
                        gds_slow(out, pids)
                        gds_fast(out, pids)
                    continue
                loss_t, _ = triplet(outputs[cfg.adapt.loss_feature], pids)
                loss_slow, terms = gds_slow(out, pids)
                loss_fast, _ = gds_fast(out, pids)
                rows.append([terms["batch_mu_pos"], terms["batch_var_pos"] ** 0.5, terms["batch_mu_neg"],
                             terms["batch_var_neg"] ** 0.5, float(loss_t.detach()), grad_norm(loss_t, params),
                             grad_norm(loss_slow, params), grad_norm(loss_fast, params)])
            r = np.mean(rows, axis=0)
            print(f"| {gds_feature} BNNeck | {normalize} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | "
                  f"{r[5]:.3g} | {r[6]:.3g} | {r[6] / r[5]:.3g} | {r[7]:.3g} | {r[7] / r[5]:.3g} |", flush=True)


if __name__ == "__main__":
    main()
