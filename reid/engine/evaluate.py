"""Evaluation as the engine runs it: a test split during training (:func:`evaluate_split`), and a checkpoint
with its metrics.json, figures and report.html (:func:`evaluate_checkpoint`, ``reid.evaluate``, ``reid-eval``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from reid import distributed
from reid.config import Config, config_to_dict
from reid.data.datasets import ReidDataset
from reid.engine.inputs import check_writable, configure_determinism, load_domain, pick_device
from reid.errors import DatasetError, ReidError
from reid.evaluation.evaluator import EvalResult, evaluate_dataset


def evaluate_split(cfg: Config, model: torch.nn.Module, dataset: ReidDataset, device: torch.device) -> EvalResult:
    """``dataset``'s query / gallery with the test settings of ``cfg`` (``eval.flip``, ``eval.camera_norm``, ...);
    under torchrun every rank extracts its shard and gets the same metrics."""
    d = cfg.data
    return evaluate_dataset(model, dataset.query, dataset.gallery, height=d.height, width=d.width,
                            batch_size=d.test_batch_size, workers=d.workers, device=device, flip=cfg.eval.flip,
                            max_rank=cfg.eval.max_rank, amp=cfg.amp, distributed=distributed.world_size() > 1,
                            camera_norm=cfg.eval.camera_norm, camera_bn=cfg.eval.camera_bn)


@dataclasses.dataclass
class EvalReport:
    """What :func:`evaluate_checkpoint` measured and wrote.

    Attributes:
        info: the content of ``metrics.json``: checkpoint, dataset, root, rerank, flip, ``mAP`` / ``mINP`` /
            ``R1`` / ``R5`` / ``R10`` (fractions), ``cmc``, and ``camera_norm`` (the transductive row) when asked.
        rows: (label, metrics) per table row: the standard protocol, then the transductive camera row if any.
        out: the folder written; written: the names of the files in it, in order.
        not_produced: caption -> why, for each figure that could not be drawn.
    """

    info: dict
    rows: list[tuple[str, dict]]
    out: Path
    written: list[str]
    not_produced: dict[str, str]

    @property
    def metrics(self) -> dict:
        return self.rows[0][1]


def evaluate_checkpoint(cfg: Config, checkpoint: str | None = None, *, dataset: str | None = None,
                        root: str | None = None, rerank: bool = False, flip: bool = False,
                        out: str | Path | None = None) -> EvalReport:
    """CMC / mAP / mINP of ``checkpoint`` on a labelled test split; writes ``metrics.json``, ``cmc.png``,
    ``distances.png``, ``ranked_lists.png`` and ``report.html`` into ``out``.

    Args:
        cfg: the run's config (network, image size, ``eval`` settings; ``seed`` for an untrained backbone).
        checkpoint: a checkpoint path; None evaluates the untrained backbone of ``model.pretrained``.
        dataset, root: the test split (default: ``data.target`` / ``data.target_root``); ``root`` is required with
            ``dataset``.
        rerank, flip: k-reciprocal re-ranking, flip TTA (or ``eval.rerank`` / ``eval.flip``).
        out: default ``<checkpoint folder>/../eval`` (``outputs/eval`` without a checkpoint).

    Example::

        report = reid.evaluate(cfg, "outputs/demo/checkpoints/final.pt", flip=True)
        report.metrics["mAP"]
    """
    from reid.engine.checkpoint import load_checkpoint, load_model_weights
    from reid.models import model_from

    device = pick_device(cfg.device)
    name = dataset or cfg.data.target
    root = root or (cfg.data.target_root if not dataset else "")
    if not root:
        raise ReidError("--root is required with --dataset")
    test = load_domain(name, root, cfg, verbose=True)
    if not test.has_test_split:
        raise DatasetError(f"{root}: {name} target without a labelled test split: nothing to evaluate. Set "
                           "data.target_test_root to a Market-1501-layout folder (query/, bounding_box_test/)")
    configure_determinism(cfg.seed, cfg.deterministic, device)  # an untrained backbone's random layers: cfg.seed
    m = cfg.model
    model = model_from(cfg.model, pretrained="none" if checkpoint else None).to(device)
    if checkpoint:
        load_model_weights(model, load_checkpoint(checkpoint), checkpoint, skip_classifier=True)
    out = Path(out or (Path(checkpoint).parent.parent / "eval" if checkpoint else "outputs/eval"))
    check_writable(out)
    rerank, flip = rerank or cfg.eval.rerank, flip or cfg.eval.flip
    result = evaluate_dataset(model, test.query, test.gallery, height=cfg.data.height, width=cfg.data.width,
                              batch_size=cfg.data.test_batch_size, workers=cfg.data.workers, device=device,
                              flip=flip, rerank=rerank, max_rank=cfg.eval.max_rank, amp=cfg.amp,
                              camera_norm=cfg.eval.camera_norm, camera_bn=cfg.eval.camera_bn)
    rows = [(name, result.metrics)]
    if result.camera_metrics is not None:
        rows.append((f"+ camera {result.camera_mode} (transductive)", result.camera_metrics))
    info = {"checkpoint": checkpoint or f"untrained ({m.pretrained})", "dataset": name, "root": root,
            "rerank": rerank, "flip": flip, **result.metrics}
    if result.camera_metrics is not None:
        info["camera_norm"] = {"mode": result.camera_mode, **result.camera_metrics}
    pos, neg = query_gallery_distances(result.distmat, test, rerank)
    info["distances"] = distance_summary(pos, neg)
    with open(out / "metrics.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    figures, not_produced = _draw_figures(result, test, name, out, pos, neg)
    report_info = {key: info[key] for key in ("checkpoint", "dataset", "root", "rerank", "flip")}
    report_info.update({
        "query / gallery": f"{len(test.query)} / {len(test.gallery)} images",
        "model": f"{m.arch}, {cfg.data.height}x{cfg.data.width}, neck_feat {m.neck_feat}",
        "device": str(device), "transductive camera row": info.get("camera_norm", {}).get("mode", "none"),
    })
    import yaml

    from reid.evaluation.report import write_report

    report = write_report(out, rows, figures, config_text=yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
                          info=report_info, title=f"gds-reid evaluation on {name}", notes=not_produced)
    written = ["metrics.json", *(path.name for path in figures.values() if path is not None), report.name]
    return EvalReport(info=info, rows=rows, out=out, written=written, not_produced=not_produced)


def query_gallery_distances(distmat: np.ndarray, test: ReidDataset,
                            rerank: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) query-gallery distances as the protocol counts them: same-camera true matches and junk
    gallery images (pid -1) left out. Euclidean distances of the normalised features (the GDS scale; the ranking
    uses their squares); with ``rerank`` the re-ranked distances as they are."""
    q_pids = np.array([p for _, p, _ in test.query])
    g_pids = np.array([p for _, p, _ in test.gallery])
    q_cams = np.array([c for _, _, c in test.query])
    g_cams = np.array([c for _, _, c in test.gallery])
    same = q_pids[:, None] == g_pids[None, :]
    valid = ~(same & (q_cams[:, None] == g_cams[None, :])) & (g_pids[None, :] != -1)
    dist = np.sqrt(np.maximum(distmat, 0)) if not rerank else distmat
    return dist[same & valid], dist[~same & valid]


def distance_summary(pos: np.ndarray, neg: np.ndarray) -> dict[str, float | int | None]:
    """Mean, std and count of each side and the overlap of their histograms (50 shared bins; 0 = separable,
    1 = identical; None when a side is empty): the figures metrics.json keeps beside distances.png."""
    from reid.evaluation.plots import histogram_overlap

    summary: dict[str, float | int | None] = {}
    for side, values in (("pos", pos), ("neg", neg)):
        values = np.asarray(values, dtype=np.float64)
        summary[f"{side}_count"] = int(values.size)
        summary[f"{side}_mean"] = float(values.mean()) if values.size else None
        summary[f"{side}_std"] = float(values.std()) if values.size else None
    summary["overlap"] = histogram_overlap(pos, neg)[0] if pos.size and neg.size else None
    return summary


def _draw_figures(result: EvalResult, test: ReidDataset, name: str, out: Path, pos: np.ndarray,
                  neg: np.ndarray) -> tuple[dict[str, Path | None], dict[str, str]]:
    """CMC curve, query-gallery distance histograms (``pos`` / ``neg``), ranked lists: caption -> PNG path (None
    when it could not be drawn, e.g. no query has a true match), and caption -> why for those."""
    from reid.evaluation import plots

    drawings = {
        "CMC curve": lambda: plots.plot_cmc(np.asarray(result.metrics["cmc"]), out / "cmc.png",
                                            title=f"CMC on {name}"),
        "query-gallery distances (green: same identity, red: different)": lambda: plots.plot_distance_histograms(
            pos, neg, out / "distances.png",
            title=f"query-gallery distances on {name}"),
        "ranked lists (green frame: true match, red: false)": lambda: plots.plot_ranked_lists(
            result.distmat, test.query, test.gallery, out / "ranked_lists.png"),
    }
    figures: dict[str, Path | None] = {}
    not_produced: dict[str, str] = {}
    for caption, draw in drawings.items():
        try:
            figures[caption] = draw()
        except ValueError as error:  # nothing to draw (no positive pair, no query with a true match): say so
            figures[caption], not_produced[caption] = None, str(error)
    return figures, not_produced
