"""Applications built on a trained checkpoint: ``reid-embed`` (a folder of images -> features), ``reid-search``
(query images against an embedded gallery) and ``reid-export`` (the retrieval embedding as ONNX).

Each module has ``run(argv) -> int`` (raises :class:`~reid.errors.ReidError` on bad input) and ``main(argv)``,
which prints such errors as one line and exits with code 2 (the same way as ``reid-train``).
"""
