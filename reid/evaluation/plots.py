"""Evaluation figures written as PNG files: CMC curve, distance distributions, ranked-list grids.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global backend is switched and no
window opens); the ranked-list grid is assembled with PIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from reid.data.datasets import JUNK_PID

# Ranked-list grid layout, in pixels.
GRID_PAD = 4  # between tiles and around the grid
GRID_QUERY_GAP = 12  # extra space between the query column and its ranked gallery images
GRID_FRAME = 4  # width of the match / non-match frame, drawn inside the tile
MATCH_COLOUR = (0, 190, 0)
NON_MATCH_COLOUR = (220, 0, 0)
_BACKGROUND = (255, 255, 255)
_EMPTY_TILE = (225, 225, 225)

FIGURE_SIZE_INCHES = (6.4, 4.8)
FIGURE_DPI = 100  # PNG of 640 x 480 pixels


def plot_cmc(cmc: np.ndarray, path: str | Path, title: str = "CMC") -> Path:
    """Plot a CMC curve: rank (from 1) on x, matching accuracy in % on y, R1 / R5 / R10 marked and listed.

    Args:
        cmc: (R,) fractions in [0, 1]; ``cmc[k]`` is the accuracy at rank k + 1 (as from ``evaluate_rank``).
        path: output PNG file (parent folders are created).
        title: figure title.

    Returns:
        ``path`` as a Path; the PNG is 640 x 480 pixels.
    """
    cmc = np.asarray(cmc, dtype=np.float64).ravel()
    ranks = np.arange(1, cmc.size + 1)
    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=FIGURE_DPI)
    axes = figure.add_subplot()
    axes.plot(ranks, 100.0 * cmc, marker="o", markersize=3, color="tab:blue")
    # Key ranks: marked on the curve, their values listed in a box (labels beside the points would collide
    # where the curve is flat).
    key_ranks = [rank for rank in (1, 5, 10) if rank <= cmc.size]
    axes.plot(key_ranks, [100.0 * cmc[rank - 1] for rank in key_ranks], linestyle="none", marker="o",
              markersize=8, markerfacecolor="none", markeredgecolor="tab:red", markeredgewidth=1.5)
    summary = "\n".join(f"R{rank} = {100.0 * cmc[rank - 1]:.1f}%" for rank in key_ranks)
    axes.text(0.97, 0.05, summary, transform=axes.transAxes, ha="right", va="bottom", family="monospace",
              bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:red", "alpha": 0.9})
    axes.set_xlabel("rank")
    axes.set_ylabel("matching accuracy (%)")
    axes.set_xlim(0.5, cmc.size + 0.5)
    axes.set_ylim(0.0, 102.0)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    return _save(figure, path)


def histogram_overlap(pos: np.ndarray, neg: np.ndarray, bins: int = 50) -> tuple[float, np.ndarray]:
    """Overlap of the two normalised histograms, ``sum_b min(p_b, n_b)`` over shared bins.

    Args:
        pos, neg: 1-D distances of positive (same identity) and negative pairs.
        bins: number of equal-width bins spanning both samples.

    Returns:
        (overlap in [0, 1]: 0 = separable, 1 = identical histograms; (bins + 1,) bin edges).
    """
    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need positive and negative distances, got {pos.size} and {neg.size}")
    edges = np.histogram_bin_edges(np.concatenate([pos, neg]), bins=bins)
    pos_fraction = np.histogram(pos, bins=edges)[0] / pos.size
    neg_fraction = np.histogram(neg, bins=edges)[0] / neg.size
    return float(np.minimum(pos_fraction, neg_fraction).sum()), edges


def plot_distance_histograms(pos: np.ndarray, neg: np.ndarray, path: str | Path,
                             title: str = "Positive / negative pair distances", bins: int = 50) -> Path:
    """Overlay the normalised histograms of positive (green) and negative (red) pair distances.

    The legend gives each sample's mean, standard deviation and size; the title adds their overlap
    (:func:`histogram_overlap`).

    Args:
        pos, neg: 1-D distances of positive and negative pairs (any non-empty sizes).
        path: output PNG file. title: figure title. bins: shared bins.

    Returns:
        ``path`` as a Path; the PNG is 640 x 480 pixels.
    """
    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    overlap, edges = histogram_overlap(pos, neg, bins=bins)
    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=FIGURE_DPI)
    axes = figure.add_subplot()
    for sample, colour, name in ((pos, "green", "positive"), (neg, "red", "negative")):
        axes.hist(sample, bins=edges, density=True, alpha=0.45, color=colour,
                  label=f"{name}: mean {sample.mean():.3f}, std {sample.std():.3f} (n={sample.size})")
    axes.set_xlabel("distance")
    axes.set_ylabel("density")
    axes.legend(loc="upper right", fontsize="small")
    axes.set_title(f"{title}\noverlap {overlap:.3f}")
    return _save(figure, path)


def plot_ranked_lists(distmat: np.ndarray, query: Sequence[tuple[str, int, int]],
                      gallery: Sequence[tuple[str, int, int]], path: str | Path, num_queries: int = 6,
                      topk: int = 10, height: int = 128, width: int = 64, seed: int = 0) -> Path:
    """Grid of ranked lists: one row per query, the query image then its ``topk`` nearest gallery images.

    The ranking is the evaluation protocol's: ``np.argsort`` of the distance row, then gallery items with the
    query's pid and camera, and junk (pid -1), are dropped. True matches are framed green, others red.
    Queries are drawn at random (``seed``) among those with a true match left, and shown in query order.

    Layout (pixels): tiles of ``width x height``, ``GRID_PAD`` apart and around the border, a further
    ``GRID_QUERY_GAP`` after the query column; frames ``GRID_FRAME`` wide inside the tile; the tile of query
    row r, rank k (1-based) starts at ``x = GRID_PAD + (width + GRID_PAD) * k + GRID_QUERY_GAP``,
    ``y = GRID_PAD + (height + GRID_PAD) * r``. Missing ranks (short lists) are grey tiles.

    Args:
        distmat: (Q, G) distances; query: Q ``(image_path, pid, camid)``; gallery: G such tuples.
        path: output PNG file. num_queries: rows (fewer when fewer queries qualify). topk: gallery columns.
        height, width: tile size. seed: which queries are drawn.

    Returns:
        ``path`` as a Path; the PNG is ``GRID_PAD + (width + GRID_PAD) * (topk + 1) + GRID_QUERY_GAP`` wide and
        ``GRID_PAD + (height + GRID_PAD) * rows`` high.
    """
    distmat = np.asarray(distmat)
    q_pids = np.array([pid for _, pid, _ in query])
    q_camids = np.array([camid for _, _, camid in query])
    g_pids = np.array([pid for _, pid, _ in gallery])
    g_camids = np.array([camid for _, _, camid in gallery])
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat {distmat.shape} does not fit {len(query)} queries x {len(gallery)} gallery")

    ranked_lists = {}
    for q_idx in range(len(query)):
        order = np.argsort(distmat[q_idx])
        removed = ((g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])) | \
            (g_pids[order] == JUNK_PID)
        kept = order[~removed]
        if np.any(g_pids[kept] == q_pids[q_idx]):
            ranked_lists[q_idx] = kept[:topk]
    if not ranked_lists:
        raise ValueError("no query has a true match in the gallery; nothing to show")
    candidates = np.fromiter(ranked_lists, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(num_queries, candidates.size), replace=False))

    grid_width = GRID_PAD + (width + GRID_PAD) * (topk + 1) + GRID_QUERY_GAP
    grid_height = GRID_PAD + (height + GRID_PAD) * chosen.size
    grid = Image.new("RGB", (grid_width, grid_height), _BACKGROUND)
    for row, q_idx in enumerate(chosen):
        top = GRID_PAD + (height + GRID_PAD) * row
        grid.paste(_tile(query[q_idx][0], width, height, frame_colour=None), (GRID_PAD, top))
        for rank in range(1, topk + 1):
            left = GRID_PAD + (width + GRID_PAD) * rank + GRID_QUERY_GAP
            if rank <= ranked_lists[q_idx].size:
                g_idx = ranked_lists[q_idx][rank - 1]
                colour = MATCH_COLOUR if g_pids[g_idx] == q_pids[q_idx] else NON_MATCH_COLOUR
                tile = _tile(gallery[g_idx][0], width, height, frame_colour=colour)
            else:
                tile = Image.new("RGB", (width, height), _EMPTY_TILE)
            grid.paste(tile, (left, top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path


def _tile(image_path: str, width: int, height: int, frame_colour: tuple[int, int, int] | None) -> Image.Image:
    """The image resized to (width, height) RGB, with an optional frame ``GRID_FRAME`` pixels wide inside."""
    with Image.open(image_path) as image:
        tile = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    if frame_colour is not None:
        ImageDraw.Draw(tile).rectangle((0, 0, width - 1, height - 1), outline=frame_colour, width=GRID_FRAME)
    return tile


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=FIGURE_DPI)
    return path
