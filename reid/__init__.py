"""gds-reid: unsupervised domain-adaptive person re-identification with GDS-H.

``from reid import FeatureExtractor`` (see :mod:`reid.api`) is imported on first use, so ``import reid`` stays
light (no torch).
"""

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "__version__"]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from reid.api import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'reid' has no attribute {name!r}")
