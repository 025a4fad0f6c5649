"""CMC / mAP / mINP: hand-computed toy cases, then random problems against the per-query loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluation import benchmark_evaluation, make_market_like_problem
from benchmarks.reference import evaluate_rank_loop
from reid.evaluation import evaluate_rank, metrics


def test_two_queries_five_gallery_hand_computed():
    g_pids = np.array([1, 2, 1, 0, 2])
    g_camids = np.array([1, 1, 2, 1, 2])
    q_pids = np.array([1, 2])
    q_camids = np.array([0, 1])
    distmat = np.array([[0.3, 0.1, 0.5, 0.2, 0.4],
                        [0.2, 0.1, 0.4, 0.3, 0.5]])
    # Query 0 (pid 1, cam 0): ranked g1(pid 2) g3(pid 0) g0(pid 1) g4(pid 2) g2(pid 1); nothing removed.
    #   matches at ranks 3, 5: CMC 0 0 1 1 1, AP = (1/3 + 2/5) / 2 = 11/30, INP = 2/5.
    # Query 1 (pid 2, cam 1): g1 is pid 2 in cam 1 -> removed; kept g0 g3 g2 g4, match at rank 4:
    #   CMC 0 0 0 1 (1 past the end of its list), AP = 1/4, INP = 1/4.
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=5)
    np.testing.assert_allclose(result["cmc"], [0.0, 0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-12)
    assert result["mAP"] == pytest.approx((11 / 30 + 1 / 4) / 2, abs=1e-12)
    assert result["mINP"] == pytest.approx((2 / 5 + 1 / 4) / 2, abs=1e-12)
    assert result["num_valid_queries"] == 2
    assert result["cmc"].dtype == np.float64
    assert isinstance(result["mAP"], float) and isinstance(result["mINP"], float)


def test_junk_gallery_items_are_ignored():
    # Ranked: g0 (junk, pid -1) g1 (pid 1) g2 (pid 3). Without g0 the match is at rank 1.
    result = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), np.array([1]), np.array([-1, 1, 3]), np.array([0]),
                           np.array([1, 1, 1]), max_rank=2)
    np.testing.assert_allclose(result["cmc"], [1.0, 1.0])
    assert result["mAP"] == pytest.approx(1.0)
    assert result["mINP"] == pytest.approx(1.0)


def test_same_camera_same_id_gallery_items_are_ignored():
    # Ranked: g0 (pid 1, cam 0 = query camera: removed) g1 (pid 2) g2 (pid 1, cam 1) g3 (pid 1, cam 0: removed)
    # g4 (pid 1, cam 2). Kept list g1 g2 g4: matches at ranks 2, 3 -> AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3.
    result = evaluate_rank(np.array([[0.1, 0.2, 0.3, 0.4, 0.5]]), np.array([1]), np.array([1, 2, 1, 1, 1]),
                           np.array([0]), np.array([0, 1, 1, 0, 2]), max_rank=3)
    np.testing.assert_allclose(result["cmc"], [0.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(7 / 12, abs=1e-12)
    assert result["mINP"] == pytest.approx(2 / 3, abs=1e-12)


def test_same_id_from_another_camera_and_other_ids_from_the_same_camera_stay():
    # Only (same pid AND same camera) is removed: g0 has the query camera but another pid, g1 the query pid in
    # another camera. Kept list g0 g1: match at rank 2 -> AP = 1/2.
    result = evaluate_rank(np.array([[0.1, 0.2]]), np.array([4]), np.array([5, 4]), np.array([3]),
                           np.array([3, 1]), max_rank=2)
    np.testing.assert_allclose(result["cmc"], [0.0, 1.0])
    assert result["mAP"] == pytest.approx(0.5)


def test_distractors_count_as_non_matches():
    # Ranked: g0 (pid 0) g1 (pid 0) g2 (pid 1): match at rank 3 -> AP = INP = 1/3.
    result = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), np.array([1]), np.array([0, 0, 1]), np.array([0]),
                           np.array([1, 1, 1]), max_rank=3)
    np.testing.assert_allclose(result["cmc"], [0.0, 0.0, 1.0])
    assert result["mAP"] == pytest.approx(1 / 3)
    assert result["mINP"] == pytest.approx(1 / 3)


def test_query_without_a_remaining_true_match_is_skipped():
    # Query 0: pid 1 matched at rank 1 (AP 1). Query 1: pid 7 absent. Query 2: pid 2 only in its own camera.
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.1, 0.3]])
    result = evaluate_rank(distmat, np.array([1, 7, 2]), np.array([1, 2, 3]), np.array([0, 0, 1]),
                           np.array([1, 1, 1]), max_rank=3)
    assert result["num_valid_queries"] == 1
    np.testing.assert_allclose(result["cmc"], [1.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(1.0)
    assert result["mINP"] == pytest.approx(1.0)


def test_all_queries_skipped_raises_a_clear_error():
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(np.array([[0.1, 0.2]]), np.array([9]), np.array([1, 2]), np.array([0]), np.array([1, 1]),
                      max_rank=2)


def test_max_rank_larger_than_gallery_cuts_the_curve_to_the_gallery_size():
    # As torchreid: the curve has G entries (with a warning). Match at rank 2 of 3.
    with pytest.warns(UserWarning, match="only 3 items"):
        result = evaluate_rank(np.array([[0.1, 0.2, 0.3]]), np.array([1]), np.array([2, 1, 3]), np.array([0]),
                               np.array([1, 1, 1]), max_rank=50)
    np.testing.assert_allclose(result["cmc"], [0.0, 1.0, 1.0])


def test_inconsistent_shapes_are_rejected():
    with pytest.raises(ValueError, match="gallery columns"):
        evaluate_rank(np.zeros((2, 3)), np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="query rows"):
        evaluate_rank(np.zeros((2, 3)), np.array([1]), np.array([1, 2, 3]), np.array([0]), np.array([1, 1, 1]))


def random_problem(seed: int, num_query: int, num_gallery: int, num_ids: int, junk_fraction: float = 0.1,
                   decimals: int | None = None, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    distmat, q_pids, g_pids, q_camids, g_camids = make_market_like_problem(
        num_query=num_query, num_gallery=num_gallery, num_ids=num_ids, num_cameras=3, distractor_fraction=0.15,
        junk_fraction=junk_fraction, seed=seed)
    distmat = distmat.astype(dtype)
    if decimals is not None:  # many exact ties, ordered by numpy's default argsort in both implementations
        distmat = np.round(distmat, decimals)
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_same_metrics(result: dict, expected: dict) -> None:
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    assert result["cmc"].shape == expected["cmc"].shape
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=1e-9)
    assert result["mAP"] == pytest.approx(expected["mAP"], rel=0, abs=1e-9)
    assert result["mINP"] == pytest.approx(expected["mINP"], rel=0, abs=1e-9)


@pytest.mark.parametrize(("seed", "decimals", "dtype"),
                         [(0, None, np.float64), (1, None, np.float32), (2, 1, np.float64), (3, 1, np.float32),
                          (4, 2, np.float32)])
def test_random_problems_match_the_loop_reference(seed, decimals, dtype):
    args = random_problem(seed, num_query=60, num_gallery=400, num_ids=40, decimals=decimals, dtype=dtype)
    assert_same_metrics(evaluate_rank(*args, max_rank=20), evaluate_rank_loop(*args, max_rank=20))


def test_short_kept_lists_match_the_loop_reference():
    # 12 gallery items, max_rank 10: many queries keep fewer than 10 items after removal.
    args = random_problem(5, num_query=30, num_gallery=12, num_ids=4, junk_fraction=0.2, decimals=1)
    assert_same_metrics(evaluate_rank(*args, max_rank=10), evaluate_rank_loop(*args, max_rank=10))


def test_many_small_chunks_give_the_same_result(monkeypatch):
    args = random_problem(6, num_query=50, num_gallery=300, num_ids=30, decimals=1)
    expected = evaluate_rank_loop(*args)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7 * 300)  # 7 queries per chunk, the last one shorter
    assert_same_metrics(evaluate_rank(*args), expected)


def test_benchmark_reports_timings_of_agreeing_implementations():
    report = benchmark_evaluation(num_query=40, num_gallery=300, num_ids=20, loop_queries=10)
    assert report["loop_queries"] == 10 and report["loop_extrapolated"]
    assert report["loop_s"] == pytest.approx(report["loop_measured_s"] * 4)
    assert report["speedup"] == pytest.approx(report["loop_s"] / report["vectorised_s"])
    assert report["max_abs_diff"] <= 1e-9
    assert 0.0 <= report["mAP"] <= 1.0 and 0.0 <= report["rank1"] <= 1.0
