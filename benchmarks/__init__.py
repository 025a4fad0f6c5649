"""Benchmarks, and the reference implementations the library is checked against: not part of the library.

Not installed with ``reid``: run them through ``scripts/benchmark.py`` (which puts the repository root on
``sys.path``) or from the repository root (``python -m benchmarks.clustering``); the tests import them through
pytest's ``pythonpath`` (pyproject.toml).

- :mod:`benchmarks.evaluation`  ``evaluate_rank`` vs. the per-query loop on a Market-sized random problem
- :mod:`benchmarks.clustering`  Jaccard + eps + DBSCAN time and peak memory on ReID-like synthetic features
- :mod:`benchmarks.reference`   ``evaluate_rank_loop``, the torchreid-style per-query reference
"""
