"""One checkpoint format for both stages: :class:`RunState`, saved atomically, loaded without executing code.

A checkpoint is a dict of tensors / numbers / strings / lists (everything ``torch.load(weights_only=True)``
accepts); :meth:`RunState.to_dict` / :meth:`RunState.from_dict` are its schema. Run folders keep
``checkpoints/last.pt`` (written after every epoch), ``source.pt`` (end of stage 1) and ``final.pt`` (last round of
stage 2, not the best on the test set).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
            writer = _WriteErrors(handle)
            try:
                torch.save(state, writer)
            except RuntimeError:
                # torch's zip writer turns a failed write (a full disk, a file-size limit) into an opaque
                # "unexpected pos ..." RuntimeError; the OSError behind it is what the user needs to see
                if writer.error is None:
                    raise
                raise writer.error from None
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error}{_free_space(path)} "
                                  "(the previous checkpoint, if any, is intact)") from None
        raise
    return path


class _WriteErrors:
    """A file wrapper for ``torch.save`` that remembers the first ``OSError`` a write raised."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:  # flush, fileno, ...: the real file's
        return getattr(self.handle, name)


def _free_space(path: Path) -> str:
    try:
        return f"; {shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free on its disk"
    except OSError:
        return ""


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



# Where a run stands, in order. Each checkpoint names the point it was written at.
STAGES = ("pretrain", "pretrained", "adapt", "done")
FORMAT = 2  # 1: before issue #16 (source.pt said stage "adapt"; no stage-1 metrics in stage-2 checkpoints)


@dataclass
class RunState:
    """What a checkpoint holds: everything needed to continue a run exactly, in one format for both stages.

    Attributes:
        stage: ``"pretrain"`` stage 1 in progress, ``epoch`` epochs done (``last.pt``); ``"pretrained"`` stage 1
            finished (``source.pt``, and ``last.pt`` until stage 2 writes); ``"adapt"`` stage 2 in progress:
            ``round`` rounds done, then ``epoch`` epochs of the next (``last.pt``); ``"done"`` stage 2 finished
            (``final.pt``; a resumed run with more ``adapt.rounds`` continues from it).
        model: the model's state dict (``module.`` prefixes removed); ``arch`` its ``model.arch``.
        trainer: :meth:`Trainer.state_dict` (optimizer, scheduler, AMP scaler, step) of the stage that wrote it.
        config: the resolved config of the run, as a dict.
        pretrain_metrics: the stage-1 evaluations ({"source": ..., "target": ...}); None when stage 1 did not run
            in this run folder (``pretrain.checkpoint``, ``pretrain.enabled: false``).
        gds: GDS-H buffers (stage 2). eps: the DBSCAN radius in use (the auto rule fixes it after round 0).
        history: target-test metrics per evaluated round. memory: the cluster memory's export, or None.
        pseudo_labels, core: (N,) int64 labels and bool DBSCAN core points of the target-train images, only in
            mid-round states (``epoch > 0``): a resume continues the round on the same labels.

    Example::

        state = RunState.from_dict(load_checkpoint("outputs/demo/checkpoints/last.pt"), source="last.pt")
        state.stage, state.round, state.epoch      # ('adapt', 2, 1)
    """

    stage: str
    model: dict[str, torch.Tensor]
    arch: str = "unknown"
    config: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    round: int = 0
    pretrain_metrics: dict[str, Any] | None = None
    gds: dict[str, torch.Tensor] | None = None
    eps: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    memory: Any = None
    pseudo_labels: torch.Tensor | None = None
    core: torch.Tensor | None = None
    format: int = FORMAT

    @classmethod
    def capture(cls, cfg: Any, model: torch.nn.Module, trainer: Any | None, *, stage: str, **fields: Any) -> RunState:
        """The state of a run now: ``model`` (DDP-wrapped or not), ``trainer`` (None: no optimizer state), the
        config ``cfg`` and the stage's own ``fields`` (``epoch=``, ``round=``, ``gds=``, ...)."""
        from reid.config import config_to_dict  # local: config imports nothing from the engine

        if stage not in STAGES:
            raise ValueError(f"stage {stage!r}: expected one of {STAGES}")
        model = getattr(model, "module", model)
        return cls(stage=stage, model=model.state_dict(), arch=cfg.model.arch, config=config_to_dict(cfg),
                   trainer=trainer.state_dict() if trainer is not None else {}, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint dict (shallow: the tensors are shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str = "checkpoint") -> RunState:
        """Read a checkpoint dict, also one written before this format (``format`` 1). Unknown keys are ignored.

        Raises CheckpointError when it is not a training checkpoint (e.g. a bare state dict has no ``stage``).
        """
        stage = state.get("stage")
        if stage not in STAGES or not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{source}: not a training checkpoint (stage {stage!r}, expected one of "
                                  f"{', '.join(STAGES)}, and a model state dict)")
        if stage == "adapt" and "gds" not in state:  # format 1 wrote the end of stage 1 as "adapt", round 0
            stage = "pretrained"
        names = {f.name for f in dataclasses.fields(cls)} - {"stage", "format"}
        return cls(stage=stage, format=int(state.get("format", 1)),
                   **{name: value for name, value in state.items() if name in names})


class SaveFn(Protocol):
    """How a stage hands its state to the run: ``save(state, "last.pt")`` writes ``checkpoints/last.pt`` (rank 0)."""

    def __call__(self, state: RunState, *names: str) -> None: ...


def training_state(cfg: Any, model: torch.nn.Module, trainer: Any | None, *, stage: str, epoch: int = 0,
                   round: int = 0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``RunState.capture(...).to_dict()``: a checkpoint dict of ``model`` at ``stage`` (tests, tools)."""
    return RunState.capture(cfg, model, trainer, stage=stage, epoch=epoch, round=round, **(extra or {})).to_dict()
