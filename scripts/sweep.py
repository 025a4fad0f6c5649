"""GDS-H sensitivity sweep: one knob at a time around the defaults, stage 2 only, from one source checkpoint.

    python scripts/sweep.py --config configs/demo.yaml \
        --source outputs/ablate-demo/seed0/source/checkpoints/source.pt --out outputs/sweep-demo \
        --vary gds.weight=10,100 --vary gds.momentum=0,0.99 [--extra "name:key=v;key=v"] [--set k=v ...]

Runs the triplet baseline, GDS-H with the config's defaults, every single-knob variant of ``--vary`` and every
``--extra`` combination, all from the same source checkpoint and seed, so the only difference between two rows
is the knob. ``--noise-seeds`` adds baseline and default GDS-H runs with other stage-2 seeds: their spread is the
run-to-run noise a knob's effect must exceed to mean anything. Writes <out>/sweep.md and <out>/sweep.json;
every run folder is <out>/<name>/ and finished runs are skipped (``--resume auto``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import reid
from reid.config import load_config, resolve_paths
from reid.errors import ReidError


def final_eval(run_dir: Path) -> tuple[dict, list[float], dict, float]:
    """Last target-test metrics, mAP per round, last epoch's loss terms, last round's pseudo-label precision."""
    evals = [r for r in reid.read_metrics(run_dir, "eval") if r["stage"] == "adapt"]
    train = reid.read_metrics(run_dir, "adapt_epoch")
    clusters = reid.read_metrics(run_dir, "cluster")
    precision = clusters[-1].get("diagnostic_uses_target_labels", {}).get("pairwise_precision", float("nan"))
    return evals[-1], [r["mAP"] for r in evals], (train[-1] if train else {}), precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--source", required=True, help="stage-1 checkpoint every run starts from")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                        help="one knob and the values to try, each run changing only this knob")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME:KEY=V;KEY=V",
                        help="a named combination of overrides (on top of the GDS-H defaults)")
    parser.add_argument("--noise-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)

    runs: list[tuple[str, int, list[str]]] = [("baseline (triplet)", args.seed, ["gds.enabled=false"]),
                                              ("GDS-H defaults", args.seed, ["gds.enabled=true"])]
    for spec in args.vary:
        key, _, values = spec.partition("=")
        if not values:
            sys.exit(f"--vary {spec!r}: expected KEY=V1,V2,...")
        runs += [(f"{key}={value}", args.seed, ["gds.enabled=true", f"{key}={value}"]) for value in values.split(",")]
    for spec in args.extra:
        name, _, overrides = spec.partition(":")
        if not overrides:
            sys.exit(f"--extra {spec!r}: expected NAME:KEY=V;KEY=V")
        runs.append((name, args.seed, ["gds.enabled=true", *overrides.split(";")]))

    for seed in args.noise_seeds:
        runs += [("baseline (triplet)", seed, ["gds.enabled=false"]), ("GDS-H defaults", seed, ["gds.enabled=true"])]

    rows = []
    for name, seed, overrides in runs:
        run_dir = out / f"{name.replace(' ', '_').replace('(', '').replace(')', '').replace('=', '-')}_s{seed}"
        start = time.time()
        cfg = resolve_paths(load_config(args.config, [f"seed={seed}", *args.overrides, *overrides,
                                                      f"pretrain.checkpoint={args.source}"]))
        try:
            reid.train(cfg, out=run_dir, resume="auto", quiet=True)
        except ReidError as error:
            sys.exit(f"run {name} (seed {seed}) failed: {type(error).__name__}: {error}")
        final, curve, last_train, precision = final_eval(run_dir)
        rows.append({"name": name, "seed": seed, "overrides": overrides, "seconds": time.time() - start,
                     "mAP": final["mAP"], "R1": final["R1"], "mINP": final["mINP"], "curve": curve,
                     "triplet": last_train.get("triplet", float("nan")), "label_precision": precision,
                     **{k: v for k, v in last_train.items() if k.startswith("gds_")}})
        print(f"{name} (seed {seed}): mAP {100 * final['mAP']:.1f}", flush=True)
        write_report(out, rows, args)  # after every run: a stopped sweep still leaves its table


def write_report(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    reference = next((r["mAP"] for r in rows if r["name"] == "baseline (triplet)" and r["seed"] == args.seed), None)
    lines = [f"config `{args.config}`, source `{args.source}`, seed {args.seed}, overrides {args.overrides or 'none'}",
             "", "| run | seed | mAP | Δ vs baseline | R1 | mINP | mAP per round | last mu+ / mu- | last triplet | "
             "last pseudo-label precision [uses target labels] | min |", "|---" * 11 + "|"]
    for r in rows:
        stats = (f"{r['gds_mu_pos']:.3f} / {r['gds_mu_neg']:.3f}" if "gds_mu_pos" in r and "gds_mu_neg" in r
                 else "")
        delta = f"{100 * (r['mAP'] - reference):+.1f}" if reference is not None else ""
        lines.append(f"| {r['name']} | {r['seed']} | {100 * r['mAP']:.1f} | {delta} | "
                     f"{100 * r['R1']:.1f} | {100 * r['mINP']:.1f} | "
                     f"{' '.join(f'{100 * m:.1f}' for m in r['curve'])} | {stats} | {r['triplet']:.3f} | "
                     f"{r['label_precision']:.3f} | {r['seconds'] / 60:.1f} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps(rows, indent=1, default=float))
    print("\n".join(lines[-1:]), flush=True)


if __name__ == "__main__":
    main()
