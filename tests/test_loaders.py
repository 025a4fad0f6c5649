"""Tests for reid/data/loaders.py and reid/data/transforms.py: image reading, transforms, P x K loaders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from reid.data.datasets import build_dataset
from reid.data.loaders import ImageDataset, build_test_loader, build_train_loader, read_image, validate_images
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from reid.errors import DatasetError

HEIGHT, WIDTH = 64, 32  # small, to keep the tests fast


# --- transforms -------------------------------------------------------------------------------------------


def test_test_transform_of_a_constant_image_is_the_normalised_colour() -> None:
    image = Image.new("RGB", (50, 120), (200, 100, 50))
    output = build_transforms(HEIGHT, WIDTH, is_train=False)(image)
    assert output.shape == (3, HEIGHT, WIDTH) and output.dtype == torch.float32
    # (value / 255 - mean) / std, per channel
    expected = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    assert expected == pytest.approx([1.307047, -0.285014, -0.932985], abs=1e-6)
    for channel in range(3):
        assert torch.allclose(output[channel], torch.full((HEIGHT, WIDTH), expected[channel]), atol=1e-5)


def test_train_transform_with_flip_probability_one_mirrors_the_image() -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, WIDTH // 2, HEIGHT))  # left half white
    train = build_transforms(HEIGHT, WIDTH, is_train=True, flip_prob=1.0, pad=0, random_erasing_prob=0.0)
    test = build_transforms(HEIGHT, WIDTH, is_train=False)
    assert torch.equal(train(image), torch.flip(test(image), dims=[2]))


def test_train_transform_pads_with_black_and_crops_back_to_size() -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    train = build_transforms(HEIGHT, WIDTH, is_train=True, flip_prob=0.0, pad=10, random_erasing_prob=0.0)
    white = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1)
    black = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1)
    torch.manual_seed(0)
    saw_black = False
    for _ in range(10):
        output = train(image).view(3, -1)
        assert output.shape == (3, HEIGHT * WIDTH)
        is_white = torch.isclose(output, white, atol=1e-5).all(dim=0)
        is_black = torch.isclose(output, black, atol=1e-5).all(dim=0)
        assert (is_white | is_black).all()
        saw_black |= bool(is_black.any())
    assert saw_black


def test_random_erasing_fills_a_rectangle_with_the_mean_colour() -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    train = build_transforms(HEIGHT, WIDTH, is_train=True, flip_prob=0.0, pad=0, random_erasing_prob=1.0)
    torch.manual_seed(0)
    output = train(image)
    erased = (output == 0).all(dim=0)  # 0 after Normalize = the mean colour
    assert 0.02 * HEIGHT * WIDTH * 0.5 <= erased.sum() <= 0.4 * HEIGHT * WIDTH
    rows, cols = erased.nonzero(as_tuple=True)
    box = erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.all()  # one filled rectangle


# --- read_image / validate_images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "suffix"), [("L", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg")]
)
def test_read_image_converts_other_modes_to_rgb(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"0001_c1s1_000001_01{suffix}"
    image = Image.new(mode, (WIDTH, HEIGHT), 0 if mode in ("L", "P") else (0, 0, 0, 255)[: len(mode)])
    if mode == "P":
        image.info["transparency"] = 0
        image.save(path, transparency=0)
    else:
        image.save(path)
    loaded = read_image(path)
    assert loaded.mode == "RGB" and loaded.size == (WIDTH, HEIGHT)
    assert build_transforms(HEIGHT, WIDTH, is_train=False)(loaded).shape == (3, HEIGHT, WIDTH)


def test_read_image_of_a_real_jpeg(mini_market: Path) -> None:
    image = read_image(mini_market / "query" / "0004_c2s3_059152_00.jpg")
    assert image.mode == "RGB" and image.size == (64, 128)


def _bad_files(folder: Path, mini_market: Path) -> dict[str, Path]:
    real = (mini_market / "query" / "0004_c2s3_059152_00.jpg").read_bytes()
    files = {
        "empty file (0 bytes)": b"",
        "truncated file": real[: len(real) // 2],
        "not an image file": b"pid camid\n0001 1\n",
    }
    paths = {}
    for index, (reason, data) in enumerate(files.items()):
        paths[reason] = folder / f"000{index + 1}_c1s1_000001_01.jpg"
        paths[reason].write_bytes(data)
    paths["file not found"] = folder / "0009_c1s1_000001_01.jpg"
    return paths


def test_bad_images_raise_dataset_error_naming_the_file_and_the_reason(
    tmp_path: Path, mini_market: Path
) -> None:
    for reason, path in _bad_files(tmp_path, mini_market).items():
        with pytest.raises(DatasetError) as error:
            read_image(path)
        message = str(error.value)
        assert message.startswith(f"cannot read image {path}: {reason}")
        assert "\n" not in message


def test_validate_images_skips_or_fails_on_bad_files(tmp_path: Path, mini_market: Path) -> None:
    good = [(str(path), 4, 1) for path in sorted((mini_market / "query").glob("0004_*.jpg"))]
    bad_paths = _bad_files(tmp_path, mini_market)
    items = good[:1] + [(str(path), 1, 0) for path in bad_paths.values()] + good[1:]
    kept, bad = validate_images(items, on_bad_image="skip")
    assert kept == good
    assert [Path(path) for path, _ in bad] == list(bad_paths.values())
    assert all(reason.startswith(expected) for (_, reason), expected in zip(bad, bad_paths))
    with pytest.raises(
        DatasetError, match=rf"cannot read image {bad_paths['empty file (0 bytes)']}: empty file"
    ):
        validate_images(items, on_bad_image="fail")
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        validate_images(items, on_bad_image="ignore")


def test_a_bad_image_fails_the_loader_with_its_name(tmp_path: Path, mini_market: Path) -> None:
    truncated = _bad_files(tmp_path, mini_market)["truncated file"]
    loader = build_test_loader([(str(truncated), 1, 0)], HEIGHT, WIDTH, batch_size=1, workers=0)
    with pytest.raises(DatasetError, match=rf"cannot read image {truncated}: truncated file"):
        next(iter(loader))


# --- datasets and loaders on real images --------------------------------------------------------------------


def test_image_dataset_returns_tensor_pid_camid_index(mini_market: Path) -> None:
    query = build_dataset("market-format", mini_market).query
    dataset = ImageDataset(query, build_transforms(HEIGHT, WIDTH, is_train=False))
    image, pid, camid, index = dataset[3]
    assert image.shape == (3, HEIGHT, WIDTH)
    assert (pid, camid, index) == (query[3][1], query[3][2], 3)
    assert len(dataset) == 32


def test_test_loader_keeps_the_order_and_the_last_partial_batch(mini_market: Path) -> None:
    gallery = build_dataset("market-format", mini_market).gallery
    batches = list(build_test_loader(gallery, HEIGHT, WIDTH, batch_size=10, workers=0))
    assert [len(batch[0]) for batch in batches] == [10, 10, 10, 2]
    images, pids, camids, indices = (torch.cat(parts) for parts in zip(*batches))
    assert images.shape == (32, 3, HEIGHT, WIDTH) and images.dtype == torch.float32
    assert pids.dtype == torch.int64 and camids.dtype == torch.int64
    assert pids.tolist() == [pid for _, pid, _ in gallery]
    assert camids.tolist() == [camid for _, _, camid in gallery]
    assert indices.tolist() == list(range(32))


def test_train_loader_yields_pk_batches_of_real_images(mini_market: Path) -> None:
    train = build_dataset("market-format", mini_market).train
    loader = build_train_loader(train, HEIGHT, WIDTH, batch_size=8, num_instances=4, workers=0, seed=0)
    assert len(loader) == len(loader.sampler) // 8 == 8  # 16 identities x one chunk of 4
    num_batches = 0
    for images, pids, camids, indices in loader:
        num_batches += 1
        assert images.shape == (8, 3, HEIGHT, WIDTH) and images.dtype == torch.float32
        assert sorted(Counter(pids.tolist()).values()) == [4, 4]
        assert pids.tolist() == [train[i][1] for i in indices.tolist()]
        assert camids.tolist() == [train[i][2] for i in indices.tolist()]
    assert num_batches == 8


def test_train_loaders_with_the_same_seed_give_identical_batches(mini_market: Path) -> None:
    train = build_dataset("market-format", mini_market).train

    def first_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = build_train_loader(train, HEIGHT, WIDTH, batch_size=8, num_instances=4, workers=0, seed=seed)
        images, pids, _, _ = next(iter(loader))
        return images, pids

    global_state = torch.get_rng_state()
    images_a, pids_a = first_batch(0)
    torch.manual_seed(1234)  # the global torch RNG must not matter
    images_b, pids_b = first_batch(0)
    images_c, _ = first_batch(1)
    assert torch.equal(images_a, images_b) and torch.equal(pids_a, pids_b)
    assert not torch.equal(images_a, images_c)
    torch.set_rng_state(global_state)


def test_augmentation_does_not_consume_the_global_torch_rng(mini_market: Path) -> None:
    train = build_dataset("market-format", mini_market).train
    loader = build_train_loader(train, HEIGHT, WIDTH, batch_size=8, num_instances=4, workers=0, seed=0)
    before = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)


def test_train_loaders_with_workers_are_reproducible(mini_market: Path) -> None:
    train = build_dataset("market-format", mini_market).train
    first_batches = []
    for _ in range(2):
        loader = build_train_loader(train, HEIGHT, WIDTH, batch_size=8, num_instances=4, workers=2, seed=3)
        iterator = iter(loader)
        first_batches.append([next(iterator)[0] for _ in range(2)])  # one batch from each worker
        del iterator, loader
    for batch_a, batch_b in zip(*first_batches):
        assert torch.equal(batch_a, batch_b)


def test_distributed_train_loaders_give_each_rank_different_identities(mini_market: Path) -> None:
    train = build_dataset("market-format", mini_market).train
    loaders = [
        build_train_loader(train, HEIGHT, WIDTH, 16, 4, workers=0, seed=0, num_replicas=2, rank=rank)
        for rank in range(2)
    ]
    assert len(loaders[0]) == len(loaders[1]) == 4
    for batch_0, batch_1 in zip(*loaders):
        assert batch_0[0].shape == (8, 3, HEIGHT, WIDTH)
        pids_0, pids_1 = Counter(batch_0[1].tolist()), Counter(batch_1[1].tolist())
        assert sorted(pids_0.values()) == sorted(pids_1.values()) == [4, 4]
        assert not set(pids_0) & set(pids_1)
