"""Reliability and safety of the training command: SIGKILL at any point + ``--resume auto`` reproduces the
uninterrupted run bit for bit; bad inputs are one-line errors that lose nothing already written; same seed,
same bits; no code-executing calls in the package.

Cases already pinned elsewhere are not repeated here: grayscale / RGBA / palette images are converted
(tests/test_loaders.py), save_checkpoint's own full-disk cases (tests/test_checkpoint.py; the command-line case
is here), config errors as exceptions (tests/test_config.py), dataset layout errors as exceptions
(tests/test_datasets.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import tiny_args, tiny_train

from reid.cli import eval_main, train_main
from reid.config import load_config
from reid.data.datasets import build_dataset
from reid.data.loaders import build_train_loader, set_train_epoch
from reid.engine.checkpoint import load_checkpoint, save_checkpoint, training_state
from reid.engine.logging import RunLogger
from reid.engine.trainer import Trainer
from reid.errors import TrainingError
from reid.models import build_model
from reid.synthetic import ensure_synthetic

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = {"num_train_ids": 12, "num_test_ids": 6, "images_per_id": 6, "seed": 0}


# One stage-1 epoch of 2 steps, one round of one 1-step epoch, no stage-1 evaluation: a few seconds.
SHORT = ["pretrain.epochs=1", "pretrain.iters_per_epoch=2", "pretrain.eval_source=false",
         "pretrain.eval_target=false", "adapt.rounds=1", "adapt.epochs_per_round=1", "adapt.iters_per_epoch=1"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("synthetic")
    for name in ("synth-a", "synth-b"):
        ensure_synthetic(name, data / name, **SYNTHETIC)
    return data


@pytest.fixture(autouse=True)
def one_thread():
    """Runs in this process use one thread: faster on a shared 2-core machine, and bit-reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_failing(capsys: pytest.CaptureFixture, argv: list[str], main=train_main) -> str:
    """Run a command that must fail as a user error: exit status 2 and exactly one ``XError: ...`` line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if re.match(r"^\w+Error: ", line)]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_unchanged(folder: Path, before: dict[str, bytes]) -> None:
    """Every file that was there is still there, byte for byte (a new, empty TensorBoard file may appear)."""
    after = snapshot(folder)
    assert {name: after.get(name) for name in before} == before


@pytest.fixture
def previous_run(tmp_path: Path) -> Path:
    """A run folder holding what an earlier run wrote; a failing command pointed at it must not change it."""
    out = tmp_path / "previous"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text("# the earlier run's config\n")
    (out / "metrics.jsonl").write_text('{"kind": "pretrain_epoch", "epoch": 1}\n')
    save_checkpoint({"model": {"w": torch.ones(3)}, "stage": "pretrain", "epoch": 1}, out / "checkpoints" / "last.pt")
    return out


# ------------------------------------------------------------------------------------------ crash + resume
KILLER = r'''
"""Run a script, SIGKILLing this process at a chosen point: REID_TEST_KILL_AT=step:N (before the N-th optimizer
step), cluster:N (on entering the N-th clustering), save:N (half-way through writing the N-th checkpoint)."""
import io
import os
import runpy
import signal
import sys

point, _, nth = os.environ.get("REID_TEST_KILL_AT", "").partition(":")
calls = 0


def due() -> bool:
    global calls
    calls += 1
    return calls == int(nth)


def die(where: str) -> None:
    print(f"SIGKILL {point}:{nth} {where}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if point == "step":
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def before_step(optimizer, args, kwargs):
        if due():
            die("before an optimizer step")

    register_optimizer_step_pre_hook(before_step)
elif point == "cluster":
    import reid.engine.pseudo_label as pseudo_label

    clustering = pseudo_label.generate_pseudo_labels

    def generate_pseudo_labels(*args, **kwargs):
        if due():
            die("while clustering")
        return clustering(*args, **kwargs)

    pseudo_label.generate_pseudo_labels = generate_pseudo_labels
elif point == "save":
    import torch

    torch_save = torch.save

    def save(obj, f, *args, **kwargs):
        if due():
            buffer = io.BytesIO()
            torch_save(obj, buffer)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            die(f"half-way through a checkpoint (stage {obj['stage']} round {obj['round']} epoch {obj['epoch']})")
        return torch_save(obj, f, *args, **kwargs)

    torch.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def train_subprocess(args: list[str], kill_at: str = "", killer: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REID_TEST_KILL_AT": kill_at}
    command = [sys.executable] + ([str(killer)] if kill_at else []) + [str(REPO / "scripts" / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def comparable_records(path: Path) -> dict[tuple, dict]:
    """The last record of each epoch / clustering / evaluation, wall times left out."""
    keys = {"pretrain_epoch": ("epoch",), "adapt_epoch": ("round", "epoch"), "cluster": ("round",),
            "eval": ("stage", "split", "round"), "summary": ()}
    records = {}
    for row in read_jsonl(path):
        if row["kind"] in keys:
            key = (row["kind"], *(row.get(k) for k in keys[row["kind"]]))
            records[key] = {k: v for k, v in row.items() if k not in ("time", "seconds")}
    return records


def assert_same_final_state(expected_run: Path, run: Path) -> None:
    expected = load_checkpoint(expected_run / "checkpoints" / "final.pt")
    final = load_checkpoint(run / "checkpoints" / "final.pt")
    assert expected["model"].keys() == final["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key, value in expected["gds"].items():
        assert torch.equal(final["gds"][key], value), key
    for group, other in zip(expected["trainer"]["optimizer"]["state"].values(),
                            final["trainer"]["optimizer"]["state"].values()):
        for key, value in group.items():
            assert torch.equal(torch.as_tensor(other[key]), torch.as_tensor(value)), key
    assert final["trainer"]["step"] == expected["trainer"]["step"]
    assert final["history"] == expected["history"] and final["eps"] == expected["eps"]
    assert comparable_records(run / "metrics.jsonl") == comparable_records(expected_run / "metrics.jsonl")
    assert json.loads((run / "summary.json").read_text()) == json.loads((expected_run / "summary.json").read_text())


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_auto_reproduces_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    # Kill points are armed inside the process (a SIGKILL it sends itself), so each lands exactly where
    # intended however fast or slow the machine is; the run is killed four times, resuming after each.
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    data, reference, run = tmp_path / "data", tmp_path / "reference", tmp_path / "killed"
    done = train_subprocess(tiny_args(data, reference))
    assert done.returncode == 0, done.stderr[-3000:]

    # (kill point, where last.pt must then stand: (stage, round, epoch))
    chain = [
        ("step:5", ("pretrain", 0, 1)),   # stage 1, epoch 2 of 2, before its 2nd of 3 steps
        ("cluster:1", ("pretrained", 0, 0)),  # (resumed in stage 1) stage 2 round 0, clustering: source.pt
        ("save:2", ("adapt", 0, 1)),      # round 0: writing last.pt after epoch 2; last.pt of epoch 1 survives
        ("step:4", ("adapt", 1, 0)),      # (resumed mid-round, saved pseudo-labels) round 1 epoch 1, 2nd step
    ]
    checkpoints = run / "checkpoints"
    for index, (kill_at, expected_last) in enumerate(chain):
        resume = ["--resume", "auto"] if index else []
        killed = train_subprocess(tiny_args(data, run) + resume, kill_at=kill_at, killer=killer)
        assert killed.returncode == -signal.SIGKILL, f"{kill_at} not reached:\n{killed.stderr[-3000:]}"
        assert f"SIGKILL {kill_at}" in killed.stderr
        for path in checkpoints.glob("*.pt"):
            load_checkpoint(path)  # never truncated
        last = load_checkpoint(checkpoints / "last.pt")
        assert (last["stage"], last["round"], last["epoch"]) == expected_last, kill_at
        if kill_at.startswith("save"):
            assert list(checkpoints.glob(".last.pt.*.tmp")), "the kill did not land inside a checkpoint write"

    resumed = train_subprocess(tiny_args(data, run) + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["final.pt", "last.pt", "source.pt"]  # no temp files
    assert_same_final_state(reference, run)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_of_the_train_loader_does_not_depend_on_the_epochs_before(workers: int, tiny_data: Path) -> None:
    # the cause of inexact resumes found here: the augmentation stream ran on from epoch to epoch
    items = build_dataset("market-format", tiny_data / "synth-a").train

    def epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
        set_train_epoch(loader, epoch, seed=100 + epoch)
        return [images for images, *_ in loader]

    def loader():
        return build_train_loader(items, 32, 16, batch_size=16, num_instances=4, workers=workers, seed=0)

    uninterrupted = loader()
    epoch_batches(uninterrupted, 0)
    expected = epoch_batches(uninterrupted, 1)
    resumed = epoch_batches(loader(), 1)
    assert len(resumed) == len(expected) > 0
    assert all(torch.equal(a, b) for a, b in zip(resumed, expected))


# ------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("override, message", [
    ("cluster.epss=0.5", "unknown key 'cluster.epss' (did you mean 'cluster.eps'?)"),
    ("data.batch_size=abc", "data.batch_size: expected int, got 'abc'"),
    ("data.batch_size=-4", "data.batch_size: expected a value >= 2, got -4"),
    ("data.batch_size=30", "data.batch_size=30 must be a multiple of data.num_instances=4"),
    ("model.arch=resnet5", "model.arch: expected one of"),
    ("cluster.eps=0", "cluster.eps: expected 'auto' or a number in (0, 1), got 0"),
])
def test_config_errors_through_the_command_line(override: str, message: str, previous_run: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    before = snapshot(previous_run)
    line = run_failing(capsys, ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(previous_run),
                                "--set", override])
    assert line.startswith("ConfigError: ") and "demo.yaml" in line and message in line
    assert_unchanged(previous_run, before)


def market_copy(tiny_data: Path, tmp_path: Path, images_per_train_id: int = 6) -> Path:
    """A writable copy of synth-a as a plain market-format folder (optionally fewer train images per id)."""
    root = tmp_path / "market"
    shutil.copytree(tiny_data / "synth-a", root)
    seen: dict[str, int] = {}
    for path in sorted((root / "bounding_box_train").glob("*.jpg")):
        pid = path.name.split("_")[0]
        seen[pid] = seen.get(pid, 0) + 1
        if seen[pid] > images_per_train_id:
            path.unlink()
    return root


def market_overrides(source_root: Path, *extra: str) -> list[str]:
    return ["data.source=market-format", f"data.source_root={source_root}", *extra]


def market_args(tiny_data: Path, out: Path, source_root: Path, *extra: str) -> list[str]:
    return tiny_args(tiny_data, out, *market_overrides(source_root, *extra))


@pytest.mark.parametrize("case, message", [
    ("missing", "DatasetError: dataset root not found: {root}"),
    ("empty split", "DatasetError: no images matching '*.jpg' under {root}/bounding_box_train"),
    ("unparsable name", "DatasetError: cannot parse identity and camera from file name "
                        "{root}/bounding_box_train/IMG_0001.jpg: expected PPPP_cC...jpg"),
])
def test_dataset_errors_through_the_command_line(case: str, message: str, tiny_data: Path, tmp_path: Path,
                                                 previous_run: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "nope"
    if case == "empty split":
        root = market_copy(tiny_data, tmp_path)
        for path in (root / "bounding_box_train").iterdir():
            path.unlink()
    elif case == "unparsable name":
        root = market_copy(tiny_data, tmp_path)
        shutil.copy(next((root / "query").glob("*.jpg")), root / "bounding_box_train" / "IMG_0001.jpg")
    before = snapshot(previous_run)
    line = run_failing(capsys, market_args(tiny_data, previous_run, root))
    assert line.startswith(message.format(root=root)), line
    assert_unchanged(previous_run, before)


def damage(path: Path, how: str) -> None:
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("<html>not an image</html>")


@pytest.mark.parametrize("how, reason, workers", [
    ("zero-byte", "empty file (0 bytes)", 0),
    ("truncated", "truncated file", 0),
    ("not-an-image", "not an image file", 0),
    ("truncated", "truncated file", 1),  # raised in a DataLoader worker: still one line
])
def test_a_bad_train_image_fails_the_run_naming_the_file(how: str, reason: str, workers: int, tiny_data: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 4 images per identity = K: one stage-1 pass (iters_per_epoch=0) reads every train image
    root = market_copy(tiny_data, tmp_path, images_per_train_id=4)
    bad = sorted((root / "bounding_box_train").glob("*.jpg"))[5]
    damage(bad, how)
    line = run_failing(capsys, market_args(tiny_data, tmp_path / "run", root, "pretrain.iters_per_epoch=0",
                                           f"data.workers={workers}"))
    assert line.startswith(f"DatasetError: cannot read image {bad}: {reason}"), line


def test_on_bad_image_skip_drops_unreadable_train_images_with_a_warning(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = market_copy(tiny_data, tmp_path, images_per_train_id=4)
    target = tmp_path / "target"
    shutil.copytree(tiny_data / "synth-b", target)
    source_train = sorted((source / "bounding_box_train").glob("*.jpg"))
    for path, how in zip(source_train[:4], ("zero-byte", "truncated", "not-an-image", "truncated")):
        damage(path, how)  # the first identity loses all its images: train pids are relabelled 0..10
    damage(sorted((target / "bounding_box_train").glob("*.jpg"))[3], "truncated")
    out = tmp_path / "run"
    tiny_train(tiny_data, out, *market_overrides(source, f"data.target_root={target}", "data.on_bad_image=skip",
                                                 "pretrain.iters_per_epoch=0", *SHORT[3:]))
    printed = capsys.readouterr().out
    assert re.search(r"warning: source train: skipped 4 unreadable image\(s\)", printed), printed
    assert re.search(r"warning: target train: skipped 1 unreadable image\(s\)", printed), printed
    assert load_checkpoint(out / "checkpoints" / "final.pt")["stage"] == "done"


def test_fewer_source_identities_than_a_batch_needs_is_a_one_line_error(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = run_failing(capsys, tiny_args(tiny_data, tmp_path / "run", "data.batch_size=64"))
    assert line.startswith("DatasetError: ") and "12 train identities" in line and "16" in line, line


def make_checkpoint(path: Path, arch: str) -> Path:
    cfg = load_config(None, [f"model.arch={arch}"])
    model = build_model(arch=arch, pretrained="none", num_classes=12)
    return save_checkpoint(training_state(cfg, model, None, stage="pretrain", epoch=1), path)


class _WritesAFile:
    def __reduce__(self):
        return (open, ("pwned-by-checkpoint", "w"))


@pytest.mark.parametrize("case, message", [
    ("missing", "CheckpointError: --resume: checkpoint not found: {path}"),
    ("truncated", "CheckpointError: {path}: unreadable or truncated checkpoint"),
    ("other architecture", "CheckpointError: {path}: bnneck.weight has shape (1280,), the model expects (512,): "
                           "checkpoint of a different architecture (mobilenet_v2)?"),
    ("executes code", "CheckpointError: {path}: refused to load: it contains objects that would execute code"),
])
def test_bad_resume_checkpoints_are_one_line_errors_that_change_nothing(
        case: str, message: str, tiny_data: Path, tmp_path: Path, previous_run: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "given.pt"
    if case == "truncated":
        data = make_checkpoint(path, "resnet18").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "other architecture":
        make_checkpoint(path, "mobilenet_v2")
    elif case == "executes code":
        torch.save({"model": _WritesAFile()}, path)
    before = snapshot(previous_run)
    line = run_failing(capsys, tiny_args(tiny_data, previous_run) + ["--resume", str(path)])
    assert line.startswith(message.format(path=path)), line
    assert_unchanged(previous_run, before)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_output_folder_under_a_file_is_a_one_line_error(tiny_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # tests run as root, so a chmod-ed folder would not block: use a file as parent
    line = run_failing(capsys, tiny_args(tiny_data, blocker / "run"))
    assert line == f"ReidError: output folder {blocker / 'run'} is not writable: Not a directory (set output.dir or --out)"
    line = run_failing(capsys, ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(blocker / "eval"),
                                "--set", f"data.target_root={tiny_data}/synth-b", "--set", "model.arch=resnet18",
                                "--set", "model.pretrained=none", "--set", "device=cpu",
                                "--set", "data.synthetic_train_ids=12", "--set", "data.synthetic_test_ids=6",
                                "--set", "data.synthetic_images_per_id=6"], main=eval_main)
    assert line.startswith(f"ReidError: output folder {blocker / 'eval'} is not writable"), line


def test_clustering_into_only_outliers_skips_every_round_and_finishes(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    tiny_train(tiny_data, out, "cluster.eps=0.001", "cluster.min_samples=80", "pretrain.epochs=0")
    printed = capsys.readouterr().out
    assert printed.count("training skipped this round. If this persists, raise cluster.eps") == 2, printed
    skipped = [row for row in read_jsonl(out / "metrics.jsonl") if row["kind"] == "round_skipped"]
    assert [(row["round"], row["num_clusters"]) for row in skipped] == [(0, 0), (1, 0)]
    final = load_checkpoint(out / "checkpoints" / "final.pt")
    assert final["stage"] == "done" and len(final["history"]) == 2


def test_a_diverging_learning_rate_stops_with_the_last_good_checkpoint_intact(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    small = ["data.batch_size=8", *SHORT]  # P = 2 identities per batch: clustering after one epoch suffices
    tiny_train(tiny_data, out, *small)  # round 0 done; last.pt holds its state
    capsys.readouterr()
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    # the config's learning rate applies on resume (also after a checkpoint that stored another one)
    line = run_failing(capsys, tiny_args(tiny_data, out, *small, "adapt.rounds=2", "adapt.lr=1e30",
                                         "adapt.iters_per_epoch=2") + ["--resume", "auto"])
    assert line.startswith("TrainingError: round 1 epoch 1: loss became nan") and "learning rate" in line, line
    assert last.read_bytes() == before
    state = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # the advice works: a sane learning rate and --resume auto finish the run
    tiny_train(tiny_data, out, *small, "adapt.rounds=2", resume="auto")
    assert load_checkpoint(out / "checkpoints" / "final.pt")["round"] == 2

    fresh = tmp_path / "fresh"
    line = run_failing(capsys, tiny_args(tiny_data, fresh, *small, "pretrain.lr=1e30"))
    assert line.startswith("TrainingError: pretrain 1/1: loss became") and "learning rate" in line, line
    assert not (fresh / "checkpoints" / "last.pt").exists()


def _file_size_limit(limit: int):
    """preexec_fn for a child whose writes past ``limit`` bytes per file fail (EFBIG), as on a full disk."""
    def apply() -> None:
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ as on Linux")
def test_a_checkpoint_the_disk_refuses_stops_the_run_with_one_line_and_resume_finishes_it(
        tiny_data: Path, tmp_path: Path) -> None:
    """The train command, not just save_checkpoint: resumed with a per-file size limit (16 MiB: below the
    checkpoint's size, asserted; above every log file), its first checkpoint write fails for real. One line names
    the file and the reason, exit status 2, every checkpoint stays byte for byte as it was and no temp file is
    left; without the limit, --resume auto finishes."""
    out = tmp_path / "run"
    tiny_train(tiny_data, out, *SHORT)  # both stages done: last.pt holds round 0
    last = out / "checkpoints" / "last.pt"
    assert last.stat().st_size > 16 * 2**20
    before = snapshot(out)
    args = tiny_args(tiny_data, out, *SHORT, "adapt.rounds=2") + ["--resume", "auto"]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *args], capture_output=True,
                          text=True, cwd=REPO, preexec_fn=_file_size_limit(16 * 2**20))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "unexpected pos" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if re.match(r"^\w+Error: ", line)]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"CheckpointError: cannot write checkpoint {last}: File too large; "), lines[0]
    assert lines[0].endswith("MiB free on its disk (the previous checkpoint, if any, is intact)"), lines[0]
    checkpoints = {name: data for name, data in before.items() if name.startswith("checkpoints/")}
    assert "checkpoints/last.pt" in checkpoints
    assert snapshot(out / "checkpoints") == {name.removeprefix("checkpoints/"): data
                                             for name, data in checkpoints.items()}  # no .tmp left either
    tiny_train(tiny_data, out, *SHORT, "adapt.rounds=2", resume="auto")
    assert load_checkpoint(out / "checkpoints" / "final.pt")["round"] == 2


def test_an_epoch_never_ends_with_non_finite_weights(tmp_path: Path) -> None:
    # A finite loss whose gradient is NaN: the step poisons the weights, the next loss check would come too
    # late for the checkpoint written at the end of this epoch.
    model = torch.nn.Linear(4, 2)

    def forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"before": model(images.flatten(1))}

    net = torch.nn.Module()
    net.forward = forward
    net.linear = model

    def loss_fn(outputs, pids, camids, indices=None):
        return torch.sqrt(outputs["before"].sum() * 0), {}  # value 0, gradient NaN

    loader = [(torch.randn(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), None, None)]
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), None, torch.device("cpu"), amp=False,
                      logger=RunLogger(tmp_path, enabled=False))
    with pytest.raises(TrainingError, match="weights became non-finite"):
        trainer.train_epoch(loader, loss_fn, iters=1, tag="pretrain 1/1")


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bits_other_seed_other_weights(tiny_data: Path, tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = tmp_path / name
        tiny_train(tiny_data, runs[name], *SHORT, f"seed={seed}")
    finals = {name: load_checkpoint(path / "checkpoints" / "final.pt")["model"] for name, path in runs.items()}
    for key, value in finals["a"].items():
        assert torch.equal(finals["b"][key], value), key
    assert not all(torch.equal(finals["c"][k], v) for k, v in finals["a"].items() if v.is_floating_point())

    def numbers(path: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in ("time", "seconds")}
                for row in read_jsonl(path / "metrics.jsonl")]

    assert numbers(runs["a"]) == numbers(runs["b"])
    assert numbers(runs["a"]) != numbers(runs["c"])


# ------------------------------------------------------------------------------------------ safety
UNSAFE = {
    "eval(": re.compile(r"(?<![\w.])eval\("),
    "exec(": re.compile(r"(?<![\w.])exec\("),
    "yaml.load(": re.compile(r"\byaml\.(?:load|unsafe_load|full_load)\("),
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "os.system": re.compile(r"\bos\.system\b|\bos\.popen\b"),
    "pickle.load": re.compile(r"\b(?:pickle|marshal)\.loads?\("),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
}


def test_package_source_has_no_code_executing_calls() -> None:
    files = [path for folder in ("reid", "scripts", "benchmarks") for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 20
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [f"{path.relative_to(REPO)}:{number}: {name}: {line.strip()}"
                      for name, pattern in UNSAFE.items() if pattern.search(code)]
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_sigkill_mid_round_with_the_cluster_memory_then_resume_auto_restores_the_memory_exactly(
        tmp_path: Path) -> None:
    # The camera-aware recipe with the memory loss: a mid-round resume must restore the centroids from last.pt
    # (re-initialising them from a fresh clustering would change the rest of the round).
    # Optimizer steps: stage 1 = 2 epochs x 3 = 6 (1-6); round 0 = 2 epochs x 2 = 4 (7-10); round 1 epoch 1 =
    # steps 11-12, then last.pt is written at (adapt, round 1, epoch 1); step 13 is round 1 epoch 2's first.
    recipe = ["adapt.loss=both", "cluster.camera_norm=center", "adapt.camera_balanced=true"]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    data, reference, run = tmp_path / "data", tmp_path / "reference", tmp_path / "killed"
    done = train_subprocess(tiny_args(data, reference, *recipe))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = train_subprocess(tiny_args(data, run, *recipe), kill_at="step:13", killer=killer)
    assert killed.returncode == -signal.SIGKILL, f"step:13 not reached:\n{killed.stderr[-3000:]}"
    assert "SIGKILL step:13" in killed.stderr
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["stage"], last["round"], last["epoch"]) == ("adapt", 1, 1)
    assert last["memory"] is not None and last["pseudo_labels"] is not None  # a mid-round state, memory saved

    resumed = train_subprocess(tiny_args(data, run, *recipe) + ["--resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage 2: resuming at round 1, epoch 1" in resumed.stdout + resumed.stderr
    assert_same_final_state(reference, run)
    expected = load_checkpoint(reference / "checkpoints" / "final.pt")["memory"]
    final = load_checkpoint(run / "checkpoints" / "final.pt")["memory"]
    assert expected is not None and final is not None
    assert torch.equal(final, expected)

    # a mid-round checkpoint of a triplet-only run holds no memory: switching adapt.loss on resume initialises
    # the memory from the saved pseudo-labels instead of failing
    plain = tmp_path / "plain"
    killed = train_subprocess(tiny_args(data, plain), kill_at="step:13", killer=killer)
    assert killed.returncode == -signal.SIGKILL and load_checkpoint(plain / "checkpoints" / "last.pt")["memory"] is None
    switched = train_subprocess(tiny_args(data, plain, "adapt.loss=both") + ["--resume", "auto"])
    assert switched.returncode == 0, switched.stderr[-3000:]
    assert "holds no cluster memory (adapt.loss was triplet); initialising it" in switched.stdout
    assert load_checkpoint(plain / "checkpoints" / "final.pt")["memory"].shape[0] > 0


def test_a_text_file_given_as_checkpoint_is_not_a_checkpoint(tiny_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("Training notes\nlr 0.1, 40 epochs\n")
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), "--checkpoint", "notes.txt", "--out", "eval"]
    for item in (f"data.target_root={tiny_data}/synth-b", "model.arch=resnet18", "model.pretrained=none",
                 "device=cpu", "data.synthetic_train_ids=12", "data.synthetic_test_ids=6",
                 "data.synthetic_images_per_id=6"):
        argv += ["--set", item]
    line = run_failing(capsys, argv, main=eval_main)
    assert line == "CheckpointError: notes.txt: not a checkpoint (not a torch file: text starting 'Training notes')"


def test_a_config_that_is_not_a_mapping_names_the_file_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("- data\n- model\n")
    line = run_failing(capsys, ["--config", str(path), "--out", str(tmp_path / "run")])
    assert line == f"ConfigError: {path}: expected a mapping at the top level, got list"


@pytest.mark.parametrize("case", ["dataset root", "pretrain checkpoint"])
def test_a_run_failing_at_start_up_writes_nothing_into_a_fresh_folder(
        case: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    if case == "dataset root":
        argv = market_args(tiny_data, out, tmp_path / "nope")
        message = f"DatasetError: dataset root not found: {tmp_path / 'nope'}"
    else:
        (tmp_path / "notes.txt").write_text("Training notes\n")
        argv = tiny_args(tiny_data, out, f"pretrain.checkpoint={tmp_path / 'notes.txt'}")
        message = (f"CheckpointError: {tmp_path / 'notes.txt'}: not a checkpoint "
                   "(not a torch file: text starting 'Training notes')")
    line = run_failing(capsys, argv)
    assert line.startswith(message), line
    assert not out.exists() or list(out.rglob("*")) == []  # no events file, no config.yaml, nothing


def test_run_logger_log_writes_console_jsonl_and_tensorboard_together(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from reid.engine.logging import read_metrics

    logger = RunLogger(tmp_path, quiet=True)
    logger.log("adapt_epoch", {"loss": 1.5, "triplet": 0.25}, at=3, line="round 0 epoch 1/1", round=0, step=40)
    logger.close()
    assert capsys.readouterr().out.rstrip().endswith("round 0 epoch 1/1 loss 1.5000 triplet 0.2500")
    (row,) = read_metrics(tmp_path, "adapt_epoch")
    assert {k: row[k] for k in ("round", "step", "loss", "triplet")} == {"round": 0, "step": 40, "loss": 1.5,
                                                                          "triplet": 0.25}
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["adapt_epoch/loss", "adapt_epoch/triplet"]
    (point,) = events.Scalars("adapt_epoch/loss")
    assert (point.step, point.value) == (3, 1.5)
    silent = RunLogger(tmp_path / "rank1", enabled=False)
    silent.log("adapt_epoch", {"loss": 1.0}, at=1, line="x")
    assert not (tmp_path / "rank1").exists() and capsys.readouterr().out == ""
