"""Exceptions that carry a one-line, user-facing message.

Scripts catch :class:`ReidError` at the top level and print ``ClassName: message`` without a traceback.
"""

from __future__ import annotations


class ReidError(Exception):
    """Base class for errors caused by user input (config, data, checkpoints, file system)."""


class ConfigError(ReidError):
    """A configuration key, type or value is wrong."""


class DatasetError(ReidError):
    """A dataset folder, split or image is missing or malformed."""


class CheckpointError(ReidError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class TrainingError(ReidError):
    """Training cannot go on (non-finite loss, degenerate clustering)."""
