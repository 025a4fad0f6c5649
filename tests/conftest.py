"""Shared fixtures: where the real data lives (overridable) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("REID_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$REID_SHARED/data``); skips the test where it is absent."""
    path = _shared_dir() / "data"
    if not (path / "real").is_dir():
        pytest.skip(f"real data not found at {path} (set REID_SHARED to the folder holding data/ and weights/)")
    return path


@pytest.fixture(scope="session")
def mini_market(shared_data: Path) -> Path:
    path = shared_data / "real" / "mini-market1501"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    path = _shared_dir() / "weights" / "mobilenet_v2_imagenet_features.pth"
    if not path.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {path}")
    return path
