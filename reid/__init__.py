"""gds-reid: unsupervised domain-adaptive person re-identification with GDS-H.

The Python API, imported on first use so that ``import reid`` stays light (no torch):

- ``reid.train(cfg, out=..., resume="auto")``: both training stages into a run folder
  (:func:`reid.engine.run.train`; :class:`reid.engine.run.Run` for more control); returns the summary.
- ``reid.evaluate(cfg, checkpoint, ...)``: a checkpoint's CMC / mAP / mINP, metrics.json, figures and report.html
  (:func:`reid.engine.evaluate.evaluate_checkpoint`).
- ``reid.read_metrics(run_dir, kind)``: the rows of a run's metrics.jsonl (:func:`reid.engine.logging.read_metrics`).
- ``reid.FeatureExtractor(checkpoint)``: embed person images with a trained checkpoint (:mod:`reid.api`).

Example::

    import reid
    from reid.config import load_config, resolve_paths

    cfg = resolve_paths(load_config("configs/demo.yaml", ["adapt.rounds=2"]))
    reid.train(cfg, out="outputs/short")
    maps = [row["mAP"] for row in reid.read_metrics("outputs/short", "eval") if row["stage"] == "adapt"]
"""

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "Run", "__version__", "evaluate", "read_metrics", "train"]

_LAZY = {
    "FeatureExtractor": ("reid.api", "FeatureExtractor"),
    "Run": ("reid.engine.run", "Run"),
    "train": ("reid.engine.run", "train"),
    "evaluate": ("reid.engine.evaluate", "evaluate_checkpoint"),
    "read_metrics": ("reid.engine.logging", "read_metrics"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'reid' has no attribute {name!r}")
