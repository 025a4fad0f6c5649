r"""``reid-embed``: embed every image under a folder with a checkpoint, resumably.

    reid-embed data/gallery --checkpoint outputs/demo/checkpoints/final.pt --out outputs/gallery
    reid-embed data/market/bounding_box_test --checkpoint final.pt --out outputs/market-gallery \
        --camera-rule regex --camera-regex '_c(\d+)' --float16

The output folder, ``--out``:

    features.npy   (N, D) float32 (float16 with --float16), rows L2-normalised, in manifest order
    manifest.csv   path,camera: absolute image paths, the camera label under the camera rule ("" for none)
    embed.json     what made it: checkpoint (+ sha256), image size, model, camera rule, counts, skipped images
    chunks/        while unfinished only: one .npz per --chunk-size images, each written atomically

A run killed part way keeps its finished chunks; the same command again embeds only the missing ones, then
writes features.npy, manifest.csv and embed.json (each atomically, embed.json last) and removes chunks/. Images
that cannot be decoded are skipped with a warning (listed in embed.json); none readable is an error.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from reid.apps.common import (
    CameraRule,
    ImageFile,
    add_camera_options,
    add_model_options,
    camera_rule,
    cameras_of,
    file_sha256,
    find_images,
    progress_bar,
    remove_stale_temp_files,
    write_atomic,
)
from reid.errors import DatasetError, ReidError

if TYPE_CHECKING:
    from reid.api import FeatureExtractor, ModelSpec

FEATURES_FILE, MANIFEST_FILE, META_FILE, CHUNKS_DIR = "features.npy", "manifest.csv", "embed.json", "chunks"
INPUTS_FILE = "inputs.json"  # in chunks/: the fingerprint of the inputs the chunks were computed from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-embed", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Embed every image under a folder with a checkpoint: <out>/features.npy (N x D, rows "
                    "L2-normalised),\nmanifest.csv (path,camera) and embed.json. Resumable: re-run the same "
                    "command after an interruption.",
        epilog="example:\n  reid-embed data/gallery --checkpoint outputs/demo/checkpoints/final.pt --out "
               "outputs/gallery \\\n      --camera-rule regex --camera-regex '_c(\\d+)'")
    parser.add_argument("images", help="folder of images (searched recursively: *.jpg, *.jpeg, *.png)")
    parser.add_argument("--out", required=True, help="output folder (features.npy, manifest.csv, embed.json)")
    add_model_options(parser)
    add_camera_options(parser)
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image (as eval --flip)")
    parser.add_argument("--float16", action="store_true", help="store features.npy as float16 (half the size)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="images per saved chunk (default 1024)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output folder that holds an embedding of other inputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(argv: list[str] | None = None) -> int:
    from reid.api import FeatureExtractor
    from reid.cli import check_writable

    args = build_parser().parse_args(argv)
    if args.chunk_size < 1 or args.batch_size < 1:
        raise ReidError("--chunk-size and --batch-size must be >= 1")
    rule = camera_rule(args.camera_rule, args.camera_regex)
    images = find_images([args.images], role="images")
    cameras = cameras_of(images, rule)
    extractor = FeatureExtractor(args.checkpoint, device=args.device, config=args.config or None,
                                 batch_size=args.batch_size, workers=args.workers, flip=args.flip)
    out = Path(args.out)
    check_writable(out)
    inputs = _inputs(args, images, extractor.spec, rule)
    if _is_up_to_date(out, inputs, args.overwrite):
        print(f"{out}: already holds this embedding ({inputs['count']} images); nothing to do")
        return 0
    chunks = _prepare_chunks(out / CHUNKS_DIR, inputs, args.overwrite)
    bar = progress_bar(len(images), args.quiet, "embedding")
    try:
        for index, start in enumerate(range(0, len(images), args.chunk_size)):
            _embed_chunk(extractor, images[start:start + args.chunk_size], start, _chunk_path(chunks, index), bar)
    except KeyboardInterrupt:
        done = len(list(chunks.glob("chunk_*.npz")))
        print(f"interrupted: {done} finished chunk(s) kept in {chunks}; run the same command again to go on",
              file=sys.stderr)
        return 130
    finally:
        bar.close()
    _assemble(out, images, cameras, inputs, float16=args.float16)
    return 0


def main(argv: list[str] | None = None) -> None:
    from reid.cli import _run_cli

    sys.exit(_run_cli(run, argv))


# ------------------------------------------------------------------------------------------------- inputs
def _inputs(args: argparse.Namespace, images: list[ImageFile], spec: ModelSpec, rule: CameraRule) -> dict:
    """Everything the output depends on; chunks and a finished folder are reused only when it is unchanged."""
    listing = hashlib.sha256()
    for image in images:
        stat = image.path.stat()
        listing.update(f"{image.path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"images_root": str(Path(args.images).resolve()), "count": len(images),
            "images_sha256": listing.hexdigest(), "checkpoint": str(Path(args.checkpoint).resolve()),
            "checkpoint_sha256": file_sha256(args.checkpoint),
            "config": str(Path(args.config).resolve()) if args.config else "",
            "height": spec.height, "width": spec.width, "model": dataclasses.asdict(spec.model),
            "flip": args.flip, "dtype": "float16" if args.float16 else "float32",
            "camera_rule": rule.kind, "camera_regex": rule.regex, "chunk_size": args.chunk_size}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_up_to_date(out: Path, inputs: dict, overwrite: bool) -> bool:
    """True when ``out`` holds the finished embedding of ``inputs``; raises if it holds another (no --overwrite)."""
    meta = _read_json(out / META_FILE)
    if meta is None:
        return False
    if meta.get("inputs") == inputs:
        if (out / FEATURES_FILE).is_file() and (out / MANIFEST_FILE).is_file():
            return True
        (out / META_FILE).unlink()  # a finished folder that lost a file: embed again
        return False
    if not overwrite:
        raise ReidError(f"{out} holds an embedding of other inputs (images, checkpoint or options differ): "
                        "pass --overwrite to replace it, or choose another --out")
    for name in (META_FILE, FEATURES_FILE, MANIFEST_FILE):
        (out / name).unlink(missing_ok=True)
    return False


def _prepare_chunks(chunks: Path, inputs: dict, overwrite: bool) -> Path:
    """``chunks/`` ready for this run: kept when made from the same inputs, else cleared (with --overwrite)."""
    stored = _read_json(chunks / INPUTS_FILE)
    if stored is not None and stored != inputs:
        if not overwrite:
            raise ReidError(f"{chunks} holds the chunks of an unfinished embedding of other inputs (images, "
                            "checkpoint or options differ): pass --overwrite to discard them, or choose another --out")
        shutil.rmtree(chunks)
    chunks.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(chunks)
    if stored != inputs:
        write_atomic(chunks / INPUTS_FILE, lambda handle: handle.write(json.dumps(inputs, indent=2).encode()))
    return chunks


# ------------------------------------------------------------------------------------------------- chunks
def _chunk_path(chunks: Path, index: int) -> Path:
    return chunks / f"chunk_{index:06d}.npz"


def _embed_chunk(extractor: FeatureExtractor, images: list[ImageFile], start: int, path: Path, bar: tqdm) -> None:
    """Embed one chunk into ``path`` (``features`` (n, D) float32, ``rows`` their global indices, and the
    unreadable files with their reasons); a chunk already on disk is complete (written atomically) and kept."""
    from reid.data.loaders import validate_images

    if path.is_file():
        bar.update(len(images))
        return
    readable, unreadable = validate_images([(str(image.path), start + i, 0) for i, image in enumerate(images)],
                                           on_bad_image="skip")
    features = extractor([item[0] for item in readable], progress=bar.update).numpy()
    bar.update(len(unreadable))
    arrays = {"features": features.astype(np.float32).reshape(len(readable), extractor.feature_dim),
              "rows": np.array([item[1] for item in readable], dtype=np.int64),
              "bad_paths": np.array([p for p, _ in unreadable], dtype=str),
              "bad_reasons": np.array([r for _, r in unreadable], dtype=str)}
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def _assemble(out: Path, images: list[ImageFile], cameras: list[str], inputs: dict, float16: bool) -> None:
    """features.npy, manifest.csv, then embed.json (the mark of a finished folder); chunks/ removed last."""
    chunks = out / CHUNKS_DIR
    parts, rows, bad = [], [], []
    for index in range(-(-len(images) // inputs["chunk_size"])):
        with np.load(_chunk_path(chunks, index), allow_pickle=False) as chunk:
            parts.append(chunk["features"])
            rows.append(chunk["rows"])
            bad += list(zip(chunk["bad_paths"].tolist(), chunk["bad_reasons"].tolist()))
    features, rows = np.concatenate(parts), np.concatenate(rows)
    if rows.size == 0:
        raise DatasetError(f"none of the {len(images)} images under {inputs['images_root']} can be read "
                           f"(e.g. {bad[0][0]}: {bad[0][1]})")
    features = features.astype(np.float16 if float16 else np.float32)
    write_atomic(out / FEATURES_FILE, lambda handle: np.save(handle, features))
    write_atomic(out / MANIFEST_FILE, lambda handle: handle.write(_manifest_csv(images, cameras, rows).encode()))
    meta = {"format": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "count": int(rows.size), "dim": int(features.shape[1]), "skipped": len(bad),
            "skipped_examples": [{"path": p, "reason": r} for p, r in bad[:20]], "inputs": inputs}
    write_atomic(out / META_FILE, lambda handle: handle.write(json.dumps(meta, indent=2).encode()))
    shutil.rmtree(chunks)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s), e.g. {bad[0][0]}: {bad[0][1]} "
              f"(all listed in {out / META_FILE})", file=sys.stderr)
    print(f"wrote {out / FEATURES_FILE} ({rows.size} x {features.shape[1]} {features.dtype}), "
          f"{MANIFEST_FILE}, {META_FILE}")


def _manifest_csv(images: list[ImageFile], cameras: list[str], rows: np.ndarray) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "camera"])
    writer.writerows([str(images[row].path), cameras[row]] for row in rows.tolist())
    return text.getvalue()
