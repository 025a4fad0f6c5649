"""The one table of names that config validation, the model builder and the dataset readers share (no imports:
``reid.config`` reads it without loading torch).

- :data:`ARCHITECTURES`: ``model.arch`` values (:func:`reid.models.backbones.build_backbone`).
- :data:`DATASETS`: names :func:`reid.data.datasets.build_dataset` reads.
- :data:`SYNTHETIC_DOMAINS`: the built-in generated domains (Market layout, generated on first use).
- :data:`UNLABELLED`: target-only names without identities (``folder``: :mod:`reid.data.folder`).
"""

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
DATASETS = ("market1501", "dukemtmcreid", "msmt17", "market-format")
SYNTHETIC_DOMAINS = ("synth-a", "synth-b")
UNLABELLED = ("folder",)
SOURCE_NAMES = DATASETS + SYNTHETIC_DOMAINS
TARGET_NAMES = SOURCE_NAMES + UNLABELLED
