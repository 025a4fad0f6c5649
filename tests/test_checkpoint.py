"""reid/engine/checkpoint.py: atomic writes, safe loading, the RunState schema (and the format before it),
architecture mismatch."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from reid.config import load_config
from reid.engine.checkpoint import (
    RunState,
    find_resume,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    training_state,
)
from reid.errors import CheckpointError
from reid.models import build_model

REPO = Path(__file__).resolve().parents[1]


def test_run_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.arch=resnet18"])
    model = build_model(arch="resnet18", pretrained="none")
    state = RunState.capture(cfg, model, None, stage="adapt", epoch=1, round=2, eps=0.5, history=[{"round": 0}],
                             gds={"mu_pos": torch.tensor(0.3)}, pseudo_labels=torch.tensor([0, -1, 0]),
                             core=torch.tensor([True, False, True]), pretrain_metrics={"target": {"mAP": 0.1}})
    save_checkpoint(state.to_dict(), tmp_path / "last.pt")
    loaded = RunState.from_dict(load_checkpoint(tmp_path / "last.pt"), "last.pt")
    assert (loaded.stage, loaded.round, loaded.epoch, loaded.eps, loaded.format) == ("adapt", 2, 1, 0.5, 2)
    assert loaded.history == [{"round": 0}] and loaded.pretrain_metrics == {"target": {"mAP": 0.1}}
    assert torch.equal(loaded.pseudo_labels, state.pseudo_labels) and torch.equal(loaded.core, state.core)
    assert loaded.config["model"]["arch"] == "resnet18" and loaded.memory is None and loaded.trainer == {}
    assert all(torch.equal(loaded.model[k], v) for k, v in model.state_dict().items())


def test_the_end_of_stage_1_of_the_format_before_issue_16_reads_as_pretrained() -> None:
    # format 1 wrote source.pt (and last.pt after stage 1) as stage "adapt", round 0, without the GDS state
    old_source = {"format": 1, "stage": "adapt", "epoch": 0, "round": 0, "model": {}, "rng": {},
                  "pretrain_metrics": {"source": {}}}
    state = RunState.from_dict(old_source)
    assert (state.stage, state.format, state.pretrain_metrics) == ("pretrained", 1, {"source": {}})
    old_last = {**old_source, "gds": {}, "eps": 0.5, "history": [], "pseudo_labels": None}  # written in stage 2
    assert RunState.from_dict(old_last).stage == "adapt"


@pytest.mark.parametrize("state", [{"w": torch.ones(2)}, {"stage": "finished", "model": {}}, {"stage": "adapt"}])
def test_what_is_not_a_training_checkpoint_is_a_one_line_error(state: dict) -> None:
    with pytest.raises(CheckpointError, match=r"^given.pt: not a training checkpoint \(stage "):
        RunState.from_dict(state, "given.pt")


def test_training_state_restores_weights_exactly(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.arch=resnet18"])
    model = build_model(arch="resnet18", pretrained="none", num_classes=3)
    save_checkpoint(training_state(cfg, model, None, stage="pretrain", epoch=2), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["stage"] == "pretrain" and state["epoch"] == 2 and state["config"]["model"]["arch"] == "resnet18"
    other = build_model(arch="resnet18", pretrained="none", num_classes=3)
    load_model_weights(other, state, "last.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.arch=resnet18"])
    save_checkpoint(training_state(cfg, build_model(arch="resnet18", pretrained="none"), None, stage="pretrain"),
                    tmp_path / "r18.pt")
    target = build_model(arch="resnet34", pretrained="none")
    with pytest.raises(CheckpointError, match="r18.pt: does not fit the model: .* checkpoint arch 'resnet18'"):
        load_model_weights(target, load_checkpoint(tmp_path / "r18.pt"), str(tmp_path / "r18.pt"))


def test_truncated_and_missing_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    save_checkpoint({"model": {"w": torch.randn(1000)}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: unreadable or truncated checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_pickle_that_would_execute_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as handle:
        torch.save({"model": _Exploit()}, handle, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint({"value": torch.tensor(1.0)}, tmp_path / "last.pt")

    class Unsaveable:  # torch.save fails midway, like a full disk
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint({"value": torch.tensor(2.0), "bad": Unsaveable()}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["value"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ as on Linux")
def test_a_write_the_disk_refuses_is_a_one_line_error_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A real failed write, not a simulated one: a child process whose file-size limit (RLIMIT_FSIZE, 1 MiB) the
    checkpoint exceeds, as on a full disk. torch's zip writer reports such a write as 'unexpected pos ...'; the
    error must name the file and the OS's reason instead, and the previous checkpoint must stay loadable."""
    child = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from reid.engine.checkpoint import save_checkpoint
        from reid.errors import CheckpointError
        save_checkpoint({{"value": torch.tensor(1.0)}}, {str(tmp_path / "last.pt")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 20, 2 ** 20))
        try:
            save_checkpoint({{"value": torch.zeros(2 ** 20)}}, {str(tmp_path / "last.pt")!r})  # 4 MiB
        except CheckpointError as error:
            print(error)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 3, done.stderr[-2000:]
    message = done.stdout.strip()
    assert "\n" not in message
    assert message.startswith(f"cannot write checkpoint {tmp_path / 'last.pt'}: File too large; ")
    assert "MiB free on its disk" in message and "previous checkpoint, if any, is intact" in message
    assert "unexpected pos" not in message
    assert load_checkpoint(tmp_path / "last.pt")["value"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the partial temp file was removed


def test_unwritable_checkpoint_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint({"a": 1}, blocker / "sub" / "last.pt")


def test_find_resume_auto(tmp_path: Path) -> None:
    assert find_resume(tmp_path, "auto") is None
    save_checkpoint({"a": 1}, tmp_path / "checkpoints" / "last.pt")
    assert find_resume(tmp_path, "auto") == tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="not found"):
        find_resume(tmp_path, str(tmp_path / "missing.pt"))


def test_a_file_that_is_not_a_torch_file_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("Training notes\nlr 0.1, 40 epochs\n")  # used to read as "would execute code"
    Path("empty.pt").write_bytes(b"")
    Path("image.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with open("plain.pkl", "wb") as handle:
        pickle.dump({"model": [1.0, 2.0]}, handle, protocol=4)
    cases = {
        "notes.txt": "notes.txt: not a checkpoint (not a torch file: text starting 'Training notes')",
        "empty.pt": "empty.pt: not a checkpoint (not a torch file: the file is empty)",
        "image.pt": "image.pt: not a checkpoint (not a torch file: unrecognised header b'\\x89PNG\\r\\n\\x1a\\n')",
        "plain.pkl": "plain.pkl: not a checkpoint (not a torch file: a plain pickle, not written by torch.save)",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(name)
        assert str(raised.value) == message


def test_a_plain_pickle_that_would_execute_code_is_still_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open("evil.pkl", "wb") as handle:
        pickle.dump({"model": _Exploit()}, handle, protocol=2)  # not torch.save, but a pickle naming os.system
    with pytest.raises(CheckpointError, match="evil.pkl: refused to load: it contains objects that would execute"):
        load_checkpoint("evil.pkl")
    assert not (tmp_path / "pwned-by-checkpoint").exists()
