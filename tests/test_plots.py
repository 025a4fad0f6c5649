"""Evaluation plots: valid PNG files of the expected size, with the content they promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.evaluation.plots import (
    GRID_FRAME,
    GRID_PAD,
    GRID_QUERY_GAP,
    MATCH_COLOUR,
    NON_MATCH_COLOUR,
    histogram_overlap,
    plot_cmc,
    plot_distance_histograms,
    plot_ranked_lists,
)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_cmc_plot_is_a_non_trivial_png(tmp_path):
    cmc = np.minimum(1.0, 0.6 + 0.02 * np.arange(50))
    path = plot_cmc(cmc, tmp_path / "plots" / "cmc.png", title="target test")
    assert path == tmp_path / "plots" / "cmc.png"
    pixels = read_png(path)
    assert pixels.shape == (480, 640, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # curve, text, annotations: not a blank canvas


def test_distance_histogram_plot_is_a_png_with_green_and_red_bars(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_distance_histograms(rng.normal(0.4, 0.1, 500), rng.normal(0.9, 0.1, 2000), tmp_path / "h.png")
    pixels = read_png(path).astype(int)
    assert pixels.shape == (480, 640, 3)
    # alpha-blended green bars (G well above R and B) and red bars (R well above G and B) are both present
    greenish = (pixels[..., 1] - pixels[..., 0] > 40) & (pixels[..., 1] - pixels[..., 2] > 40)
    reddish = (pixels[..., 0] - pixels[..., 1] > 40) & (pixels[..., 0] - pixels[..., 2] > 40)
    assert greenish.sum() > 500 and reddish.sum() > 500


def test_histogram_overlap_of_separated_and_identical_samples():
    # Separated: positives in [0, 1], negatives in [2, 3], 3 bins of width 1 -> no shared bin.
    assert histogram_overlap(np.array([0.0, 1.0]), np.array([2.0, 3.0]), bins=3)[0] == 0.0
    assert histogram_overlap(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]), bins=3)[0] == 1.0
    # Bins [0, 1) [1, 2] over {0, 0, 0, 2} and {0, 2}: fractions (3/4, 1/4) and (1/2, 1/2) -> 1/2 + 1/4.
    overlap, edges = histogram_overlap(np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.0, 2.0]), bins=2)
    np.testing.assert_allclose(edges, [0.0, 1.0, 2.0])
    assert overlap == pytest.approx(0.75)


def write_solid_images(folder: Path, colours: list[tuple[int, int, int]], prefix: str = "") -> list[str]:
    paths = []
    for index, colour in enumerate(colours):
        path = folder / f"{prefix}{index:02d}.png"
        Image.new("RGB", (32, 48), colour).save(path)
        paths.append(str(path))
    return paths


def test_ranked_list_grid_frames_matches_green_and_drops_same_camera_and_junk(tmp_path):
    grey = [(128, 128, 128)] * 6
    query_paths = write_solid_images(tmp_path, [(0, 0, 255)], prefix="query")
    gallery_paths = write_solid_images(tmp_path, grey, prefix="gallery")
    query = [(query_paths[0], 7, 0)]
    # Gallery by distance: g0 pid 7 cam 0 (same camera: dropped), g1 junk (dropped), g2 pid 3 (rank 1, red),
    # g3 pid 7 cam 1 (rank 2, green), g4 pid 0 distractor (rank 3, red), g5 pid 7 cam 2 (rank 4, green).
    gallery = [(gallery_paths[0], 7, 0), (gallery_paths[1], -1, 1), (gallery_paths[2], 3, 1),
               (gallery_paths[3], 7, 1), (gallery_paths[4], 0, 2), (gallery_paths[5], 7, 2)]
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    width, height, topk = 16, 24, 5
    path = plot_ranked_lists(distmat, query, gallery, tmp_path / "ranked.png", topk=topk, height=height,
                             width=width)
    pixels = read_png(path)
    assert pixels.shape == (GRID_PAD + (height + GRID_PAD), GRID_PAD + (width + GRID_PAD) * (topk + 1)
                            + GRID_QUERY_GAP, 3)

    def tile_pixel(rank: int, dx: int, dy: int) -> tuple[int, ...]:
        left = GRID_PAD + (width + GRID_PAD) * rank + (GRID_QUERY_GAP if rank > 0 else 0)
        return tuple(int(v) for v in pixels[GRID_PAD + dy, left + dx])

    assert tile_pixel(0, width // 2, height // 2) == (0, 0, 255)  # the query image, unframed
    assert tile_pixel(0, 0, 0) == (0, 0, 255)
    frame = GRID_FRAME // 2
    assert tile_pixel(1, frame, height // 2) == NON_MATCH_COLOUR
    assert tile_pixel(2, frame, height // 2) == MATCH_COLOUR
    assert tile_pixel(2, width // 2, height // 2) == (128, 128, 128)  # inside the frame: the image itself
    assert tile_pixel(3, width - 1 - frame, frame) == NON_MATCH_COLOUR
    assert tile_pixel(4, frame, height - 1 - frame) == MATCH_COLOUR
    assert tile_pixel(5, width // 2, height // 2) == (225, 225, 225)  # only 4 gallery items are left


def test_ranked_list_grid_draws_the_requested_number_of_queries(tmp_path):
    rng = np.random.default_rng(1)
    paths = write_solid_images(tmp_path, [tuple(int(c) for c in rng.integers(0, 255, 3)) for _ in range(20)])
    query = [(paths[i], i % 4 + 1, 0) for i in range(8)]
    gallery = [(paths[8 + i], i % 4 + 1, 1) for i in range(12)]
    path = plot_ranked_lists(rng.random((8, 12)), query, gallery, tmp_path / "grid.png", num_queries=3, topk=4)
    with Image.open(path) as image:
        assert image.size == (GRID_PAD + (64 + GRID_PAD) * 5 + GRID_QUERY_GAP, GRID_PAD + (128 + GRID_PAD) * 3)


def test_ranked_list_grid_without_any_valid_query_is_an_error(tmp_path):
    paths = write_solid_images(tmp_path, [(0, 0, 0), (9, 9, 9)])
    with pytest.raises(ValueError, match="no query has a true match"):
        plot_ranked_lists(np.array([[0.5]]), [(paths[0], 1, 0)], [(paths[1], 2, 0)], tmp_path / "x.png")


def test_query_gallery_distances_follow_the_protocol_and_their_summary_is_hand_computed():
    """Same-camera true matches and junk (pid -1) gallery images are no pairs; distances are the square roots of
    the squared distances the ranking uses; the summary metrics.json keeps is their mean / std / count / overlap."""
    from types import SimpleNamespace

    from reid.engine.evaluate import distance_summary, query_gallery_distances

    test = SimpleNamespace(query=[("q0", 1, 1), ("q1", 2, 1)],
                           gallery=[("g0", 1, 1), ("g1", 1, 2), ("g2", -1, 2), ("g3", 2, 2)])
    squared = np.array([[0.01, 0.25, 0.36, 1.00],
                        [0.64, 1.44, 0.09, 0.16]])
    pos, neg = query_gallery_distances(squared, test, rerank=False)
    # q0: g0 same pid + camera (left out), g1 positive 0.5, g2 junk, g3 negative 1.0; q1: g0 0.8, g1 1.2 negative,
    # g3 positive 0.4
    np.testing.assert_allclose(pos, [0.5, 0.4])
    np.testing.assert_allclose(neg, [1.0, 0.8, 1.2])
    pos_rr, neg_rr = query_gallery_distances(squared, test, rerank=True)  # re-ranked distances: taken as they are
    np.testing.assert_allclose(pos_rr, [0.25, 0.16])
    np.testing.assert_allclose(neg_rr, [1.0, 0.64, 1.44])
    summary = distance_summary(pos, neg)
    assert summary["pos_count"] == 2 and summary["neg_count"] == 3
    assert summary["pos_mean"] == pytest.approx(0.45) and summary["pos_std"] == pytest.approx(0.05)
    assert summary["neg_mean"] == pytest.approx(1.0) and summary["neg_std"] == pytest.approx((0.08 / 3) ** 0.5)
    assert summary["overlap"] == 0.0  # 0.4-0.5 and 0.8-1.2 share no bin of 50 over [0.4, 1.2]
    empty = distance_summary(np.array([]), neg)
    assert empty["pos_count"] == 0 and empty["pos_mean"] is None and empty["overlap"] is None
