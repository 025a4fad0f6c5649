"""Accuracy study: direct transfer vs. triplet baseline vs. + GDS vs. + GDS-H, over several seeds.

    python scripts/ablate.py --config configs/demo.yaml --seeds 0 1 2 --out outputs/ablate-demo [--set k=v ...]

    python scripts/ablate.py --config configs/cuhk03.yaml --seeds 0 1 2 --out outputs/ablate-camera \
        --method "baseline=gds.enabled=false" --method "+ centring=gds.enabled=false;cluster.camera_norm=center"

``--method NAME=OVERRIDES`` (repeatable; overrides separated by ``;``) replaces the default methods below.
Per seed, stage 1 runs once (its target-test numbers are the direct-transfer row); the three adaptation variants
start from that same source checkpoint. Writes <out>/table.md (mean ± std over seeds), <out>/results.json and
<out>/map_per_round.png. Every run folder stays under <out>/seed<S>/<method>/ (TensorBoard, metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import reid
from reid.config import load_config, resolve_paths
from reid.errors import ReidError

METHODS = {
    "baseline (triplet)": ["gds.enabled=false"],
    "+ GDS": ["gds.enabled=true", "gds.hard=false"],
    "+ GDS-H": ["gds.enabled=true", "gds.hard=true"],
}
COLUMNS = ("mAP", "R1", "R5", "mINP")


def run(config: str, out: Path, overrides: list[str]) -> None:
    """One training run into ``out`` (continued when it already holds one)."""
    try:
        reid.train(resolve_paths(load_config(config, overrides)), out=out, resume="auto", quiet=True)
    except ReidError as error:
        sys.exit(f"run {out} failed: {type(error).__name__}: {error} (overrides: {' '.join(overrides)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--method", dest="custom", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a method of your own: its --set overrides separated by ';' (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild the tables from the run folders under --out")
    args = parser.parse_args()
    methods = dict(METHODS)
    if args.custom:
        methods = {}
        for item in args.custom:
            name, sep, overrides = item.partition("=")
            if not sep or not name.strip():
                parser.error(f"--method {item!r}: expected NAME=key=value;key=value")
            methods[name.strip()] = [o.strip() for o in overrides.split(";") if o.strip()]
        args.methods = list(methods)
    out = Path(args.out)
    timings: dict[str, float] = {}
    results: dict[str, dict[int, dict]] = {"direct transfer": {}, **{m: {} for m in args.methods}}
    camera_rows: dict[str, dict[int, dict]] = {}  # transductive eval.camera_norm rows, when the runs logged them
    curves: dict[str, dict[int, list[float]]] = {m: {} for m in args.methods}
    clusters: dict[str, dict[int, list[dict]]] = {m: {} for m in args.methods}
    for seed in args.seeds:
        common = [f"seed={seed}", *args.overrides]
        source_dir = out / f"seed{seed}" / "source"
        if not args.report_only:
            start = time.time()
            run(args.config, source_dir, [*common, "adapt.enabled=false"])
            timings[f"seed{seed}/source"] = time.time() - start
        for row in reid.read_metrics(source_dir, "eval"):
            if row["split"] == "target_test":
                results["direct transfer"][seed] = row
            elif row["split"].startswith("target_test_camera"):
                camera_rows.setdefault("direct transfer", {})[seed] = row
        for method in args.methods:
            run_dir = out / f"seed{seed}" / method.replace(" ", "_").replace("(", "").replace(")", "")
            if not args.report_only:
                start = time.time()
                run(args.config, run_dir, [*common, *methods[method],
                                           f"pretrain.checkpoint={source_dir}/checkpoints/source.pt"])
                timings[f"seed{seed}/{method}"] = time.time() - start
            if args.report_only and not (run_dir / "checkpoints" / "final.pt").is_file():
                print(f"note: {run_dir} has not finished: left out of the table")
                continue
            evals = [r for r in reid.read_metrics(run_dir, "eval") if r["stage"] == "adapt"]
            standard = [r for r in evals if r["split"] == "target_test"]
            results[method][seed] = standard[-1]
            curves[method][seed] = [r["mAP"] for r in standard]
            camera = [r for r in evals if r["split"].startswith("target_test_camera")]
            if camera:
                camera_rows.setdefault(method, {})[seed] = camera[-1]
            clusters[method][seed] = reid.read_metrics(run_dir, "cluster")
    write_report(out, results, curves, timings, args, camera_rows, clusters)


def per_round(runs: list[list[dict]], key: str, labelled: bool = False, digits: int = 2) -> str:
    """'a → b → ...': the mean over seeds of one cluster-record value per round (label-using ones nested)."""
    def get(row: dict) -> float:
        source = row.get("diagnostic_uses_target_labels", {}) if labelled else row
        return float(source.get(key, float("nan")))

    rounds = min(len(rows) for rows in runs)
    return " → ".join(f"{np.mean([get(rows[r]) for rows in runs]):.{digits}f}" for r in range(rounds))


def mean_std(values: list[float]) -> str:
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std():.1f}"


def write_report(out: Path, results: dict, curves: dict, timings: dict, args: argparse.Namespace,
                 camera_rows: dict | None = None, clusters: dict | None = None) -> None:
    lines = [f"config `{args.config}`, seeds {args.seeds}, overrides {args.overrides or 'none'}", "",
             "| method | " + " | ".join(COLUMNS) + " | mAP per seed |", "|---" * (len(COLUMNS) + 2) + "|"]
    for method, by_seed in results.items():
        if not by_seed:
            continue
        cells = [mean_std([row[column] for row in by_seed.values()]) for column in COLUMNS]
        per_seed = ", ".join(f"{100 * row['mAP']:.1f} (s{seed})" for seed, row in by_seed.items())
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {per_seed} |")
    if camera_rows:
        lines += ["", "Transductive: + per-camera centring of query + gallery features at test time (eval.camera_norm)",
                  "", "| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for method, by_seed in camera_rows.items():
            lines.append(f"| {method} | " + " | ".join(mean_std([row[c] for row in by_seed.values()])
                                                     for c in COLUMNS) + " |")
    if clusters:
        lines += ["", "Pseudo-labels per round (mean over seeds). Label-free: clusters, cross-camera cluster share. "
                  "[uses target-train labels]: pairwise precision / recall, cross-camera pair precision / recall.",
                  "", "| method | clusters | cross-camera clusters | precision | recall | cross-cam precision | "
                  "cross-cam recall |", "|---|---|---|---|---|---|---|"]
        for method, by_seed in clusters.items():
            runs = [rows for rows in by_seed.values() if rows]
            if not runs:
                continue

            lines.append(f"| {method} | {per_round(runs, 'num_clusters', digits=0)} | "
                         f"{per_round(runs, 'cross_camera_cluster_fraction')} | "
                         + " | ".join(per_round(runs, key, labelled=True) for key in (
                             "pairwise_precision", "pairwise_recall", "cross_camera_pairwise_precision",
                             "cross_camera_pairwise_recall")) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "curves": curves, "seconds": timings},
                                                 indent=1, default=float))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    direct = np.mean([row["mAP"] for row in results["direct transfer"].values()])
    axes.axhline(100 * direct, color="grey", linestyle="--", label="direct transfer")
    for method, by_seed in curves.items():
        if not by_seed:
            continue
        runs = np.array(list(by_seed.values())) * 100
        rounds = np.arange(runs.shape[1])
        axes.plot(rounds, runs.mean(0), marker="o", label=method)
        axes.fill_between(rounds, runs.min(0), runs.max(0), alpha=0.15)
    axes.set_xlabel("adaptation round")
    axes.set_ylabel("target mAP (%)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "map_per_round.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
