"""One checkpoint format for both stages: saved atomically, loaded without executing code.

A checkpoint is a dict of tensors / numbers / strings / lists (everything ``torch.load(weights_only=True)``
accepts): ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``gds`` (GDS buffers), ``stage`` ("pretrain" |
"adapt" | "done"), ``epoch`` (epochs completed in the current stage or round), ``round``, ``step``, ``rng``,
``config``, ``pseudo_labels`` (adapt), ``eps`` (adapt), ``history`` (metrics so far), ``arch``.
Run folders keep ``checkpoints/last.pt`` (written after every epoch), ``source.pt`` (end of stage 1) and
``final.pt`` (last round of stage 2, not the best on the test set).
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid.errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A crash or a full disk while writing leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoint to {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error} "
                                  "(the previous checkpoint, if any, is intact)") from None
        raise
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip archive holding data.pkl and the tensors
# The legacy (``_use_new_zipfile_serialization=False``) format opens with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _file_kind(head: bytes) -> str:
    """What the first bytes of a file say it is: zip | legacy (torch files) | pickle | empty | text | binary."""
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[:1] == b"\x80" and head[2:14] == _LEGACY_MAGIC:
        return "legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # a binary pickle, but not one written by torch.save
    if not head:
        return "empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        text = head[: error.start].decode("utf-8") if error.start >= len(head) - 3 else ""
    if text and all(ch.isprintable() or ch in "\t\n\r" for ch in text):
        return "text"
    return "binary"


def _not_a_torch_file(kind: str, head: bytes) -> str:
    if kind == "empty":
        return "the file is empty"
    if kind == "text":
        first = next((line.strip() for line in head.decode("utf-8", errors="ignore").splitlines() if line.strip()), "")
        return f"text starting {first[:40]!r}"
    if kind == "pickle":
        return "a plain pickle, not written by torch.save"
    if kind == "zip":
        return "a zip archive without torch's data.pkl"
    return f"unrecognised header {head[:8]!r}"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (a pickle that would run code is refused).

    A file that is not a torch file at all (text, an image, ...) is reported as such without being unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read checkpoint: {error.strerror or error}") from None
    kind = _file_kind(head)
    if kind not in ("zip", "legacy", "pickle"):
        raise CheckpointError(f"{path}: not a checkpoint (not a torch file: {_not_a_torch_file(kind, head)})")
    try:
        with warnings.catch_warnings():
            if kind == "pickle":  # "Detected pickle protocol 4": a plain pickle gets its own one-line error below
                warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = str(error)
        first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
        # Only a genuine pickle can ask for a global: torch files (whose pickle torch wrote), or a binary pickle
        # that names a disallowed global
        if ("unsupported global" in message.lower()
                or (kind in ("zip", "legacy") and "weights_only" in message)):
            raise CheckpointError(f"{path}: refused to load: it contains objects that would execute code "
                                  "(only plain tensors and containers are accepted)") from None
        if kind == "pickle" or (kind == "zip" and ("data.pkl" in message or "not in a subdirectory" in message)):
            raise CheckpointError(f"{path}: not a checkpoint (not a torch file: "
                                  f"{_not_a_torch_file(kind, head)})") from None
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first_line[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


def model_state_from(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint, or the dict itself when it is a bare state dict."""
    model = state.get("model", state)
    if not isinstance(model, dict):
        raise CheckpointError("checkpoint has no model state dict")
    return {k.removeprefix("module."): v for k, v in model.items()}


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], source: str,
                       skip_classifier: bool = False) -> None:
    """Load model weights strictly (classifier optional); a different architecture is a one-line error."""
    weights = model_state_from(state)
    if skip_classifier:
        weights = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    own = model.state_dict()
    for key, value in weights.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(own[key].shape)}: checkpoint of a different architecture "
                                  f"({state.get('arch', 'unknown')})?")
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith("classifier.")]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not fit the model: {len(missing)} missing keys (e.g. "
                              f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
                              f"checkpoint arch {state.get('arch', 'unknown')!r}")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as checkpoint-safe values."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((state["python_version"], tuple(int(v) for v in python[:-1]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resume(run_dir: str | os.PathLike, resume: str) -> Path | None:
    """``resume="auto"``: ``<run_dir>/checkpoints/last.pt`` if present (None otherwise); else the given path."""
    if not resume:
        return None
    if resume == "auto":
        candidate = Path(run_dir) / "checkpoints" / "last.pt"
        return candidate if candidate.is_file() else None
    if not Path(resume).is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {resume}")
    return Path(resume)


def training_state(cfg: Any, model: torch.nn.Module, trainer: Any | None, *, stage: str, epoch: int = 0,
                   round: int = 0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to continue a run: weights, optimizer/scheduler/scaler, counters, RNG, config."""
    from reid.config import config_to_dict  # local: config imports nothing from the engine

    model = getattr(model, "module", model)
    return {
        "format": 1,
        "model": model.state_dict(),
        "arch": cfg.model.arch,
        "trainer": trainer.state_dict() if trainer is not None else {},
        "stage": stage,
        "epoch": epoch,
        "round": round,
        "rng": rng_state(),
        "config": config_to_dict(cfg),
        **(extra or {}),
    }
