"""``reid-search``: rank an embedded gallery (a ``reid-embed`` output folder) for query images.

    reid-search query.jpg more_queries/ --gallery outputs/gallery --top-k 10 [--exclude-same-camera]

The queries are embedded with the gallery's checkpoint, image size and camera rule (all read from its
embed.json), then searched exactly with a faiss inner-product index over the L2-normalised features. Distances
are Euclidean distances of the normalised features, ``sqrt(2 - 2 cos)`` in [0, 2] (the scale of eval's
distance histograms). Writes, into ``--out``: ``results.json`` (every query), ``ranked_lists.png`` and
``index.html`` (the first ``--show`` queries; thumbnails embedded, opens offline), and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.apps.common import (
    add_camera_options,
    add_model_options,
    camera_rule,
    cameras_of,
    file_sha256,
    find_images,
)
from reid.apps.embed import CHUNKS_DIR, FEATURES_FILE, MANIFEST_FILE, META_FILE
from reid.errors import CheckpointError, DatasetError, ReidError


@dataclass
class Gallery:
    """A ``reid-embed`` output: ``features`` (G, D) float32 L2-normalised, ``paths`` and ``cameras`` (G,) in
    the same order, and ``meta`` (embed.json)."""

    features: np.ndarray
    paths: list[str]
    cameras: list[str]
    meta: dict


def load_gallery(folder: str | Path) -> Gallery:
    """Read a ``reid-embed`` output folder.

    Raises:
        DatasetError: the folder is missing, is not a reid-embed output, is unfinished, or its files disagree.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--gallery: folder not found: {folder}")
    if not (folder / META_FILE).is_file():
        if (folder / CHUNKS_DIR).is_dir():
            raise DatasetError(f"--gallery {folder}: an unfinished reid-embed output (chunks/ only): run the same "
                               "reid-embed command again to finish it")
        raise DatasetError(f"--gallery {folder}: not a reid-embed output folder (no {META_FILE}; expected "
                           f"{FEATURES_FILE}, {MANIFEST_FILE} and {META_FILE})")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        features = np.load(folder / FEATURES_FILE, allow_pickle=False)
        with open(folder / MANIFEST_FILE, encoding="utf-8", newline="") as handle:
            manifest = list(csv.DictReader(handle))
        paths, cameras = [row["path"] for row in manifest], [row["camera"] for row in manifest]
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"--gallery {folder}: unreadable reid-embed output ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if features.ndim != 2 or features.shape[0] != len(paths) or "inputs" not in meta:
        raise DatasetError(f"--gallery {folder}: {FEATURES_FILE} {features.shape} does not match the "
                           f"{len(paths)} rows of {MANIFEST_FILE}")
    return Gallery(features.astype(np.float32), paths, cameras, meta)


def search_index(query: np.ndarray, gallery: np.ndarray, top_k: int, query_cameras: list[str] | None = None,
                 gallery_cameras: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine similarity of L2-normalised features) with a faiss flat index.

    Args:
        query: (Q, D) float32; gallery: (G, D) float32, both L2-normalised.
        top_k: matches per query.
        query_cameras, gallery_cameras: when given, gallery items from the query's camera are excluded (the
            search is widened by their number, so the result stays exact).

    Returns:
        indices (Q, top_k) int64 into the gallery, best first, -1 where fewer remain; similarities (Q, top_k)
        float32, NaN where the index is -1.
    """
    import faiss

    query, gallery = np.ascontiguousarray(query, np.float32), np.ascontiguousarray(gallery, np.float32)
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    indices = np.full((query.shape[0], top_k), -1, dtype=np.int64)
    similarities = np.full((query.shape[0], top_k), np.nan, dtype=np.float32)
    if query_cameras is None or gallery_cameras is None:
        groups = {None: np.arange(query.shape[0])}
    else:
        labels = np.asarray(query_cameras, dtype=object)
        groups = {camera: np.flatnonzero(labels == camera) for camera in dict.fromkeys(query_cameras)}
    gallery_labels = np.asarray(gallery_cameras if gallery_cameras is not None else [], dtype=object)
    for camera, rows in groups.items():
        excluded = gallery_labels == camera if camera is not None else np.zeros(gallery.shape[0], dtype=bool)
        width = min(gallery.shape[0], top_k + int(excluded.sum()))
        group_similarities, group_indices = index.search(query[rows], width)
        for row, found, scores in zip(rows, group_indices, group_similarities):
            keep = (found >= 0) & ~excluded[np.maximum(found, 0)]
            found, scores = found[keep][:top_k], scores[keep][:top_k]
            indices[row, :found.size], similarities[row, :found.size] = found, scores
    return indices, similarities


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-search", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank an embedded gallery (a reid-embed output folder) for query images: prints a table,\n"
                    "writes results.json, ranked_lists.png and index.html (thumbnails embedded, opens offline).",
        epilog="example:\n  reid-search query.jpg queries/ --gallery outputs/gallery --top-k 10 --exclude-same-camera")
    parser.add_argument("queries", nargs="+", help="query images, or folders of them (searched recursively)")
    parser.add_argument("--gallery", required=True, help="a reid-embed output folder")
    parser.add_argument("--top-k", type=int, default=10, help="matches per query (default 10)")
    parser.add_argument("--exclude-same-camera", action="store_true",
                        help="drop gallery images from the query's camera (needs a camera rule)")
    parser.add_argument("--out", default="outputs/search", help="output folder (default outputs/search)")
    parser.add_argument("--show", type=int, default=20,
                        help="queries drawn in ranked_lists.png and index.html (default 20; results.json has all)")
    add_model_options(parser, checkpoint_help="default: the checkpoint the gallery was embedded with (it must be "
                                              "that file; its config too)")
    add_camera_options(parser, default_help="the gallery's")
    return parser


def run(argv: list[str] | None = None) -> int:
    from reid.api import FeatureExtractor
    from reid.apps.report import write_html, write_ranked_png
    from reid.cli import check_writable

    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise ReidError(f"--top-k must be >= 1, got {args.top_k}")
    gallery = load_gallery(args.gallery)
    inputs = gallery.meta["inputs"]
    rule = (camera_rule(args.camera_rule, args.camera_regex) if args.camera_rule or args.camera_regex
            else camera_rule(inputs["camera_rule"], inputs["camera_regex"]))
    if args.exclude_same_camera and rule.kind == "none":
        raise ReidError("--exclude-same-camera needs camera labels: the gallery was embedded with --camera-rule "
                        "none (embed it again with a camera rule)")
    queries = find_images(args.queries, role="queries")
    query_cameras = cameras_of(queries, rule)
    checkpoint = _same_checkpoint(args.checkpoint, inputs)
    extractor = FeatureExtractor(checkpoint, device=args.device, config=args.config or inputs["config"] or None,
                                 batch_size=args.batch_size, workers=args.workers, flip=inputs["flip"])
    query_features = extractor([image.path for image in queries]).numpy()
    if query_features.shape[1] != gallery.features.shape[1]:
        raise ReidError(f"queries embed to {query_features.shape[1]} dimensions, the gallery has "
                        f"{gallery.features.shape[1]}: another --config than the gallery's?")
    out = Path(args.out)
    check_writable(out)
    exclude = args.exclude_same_camera
    indices, similarities = search_index(query_features, gallery.features, args.top_k,
                                         query_cameras if exclude else None, gallery.cameras if exclude else None)
    results = [_result(str(image.path), camera, found, scores, gallery)
               for image, camera, found, scores in zip(queries, query_cameras, indices, similarities)]
    _print_table(results)
    summary = (f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} against {len(gallery.paths)} gallery "
               f"images ({args.gallery}), top {args.top_k}{', same camera excluded' if exclude else ''}; "
               "distance = sqrt(2 - 2 cos)")
    with open(out / "results.json", "w", encoding="utf-8") as handle:
        json.dump({"gallery": str(Path(args.gallery).resolve()), "checkpoint": str(Path(checkpoint).resolve()),
                   "top_k": args.top_k, "exclude_same_camera": exclude, "camera_rule": rule.kind,
                   "camera_regex": rule.regex, "distance": "euclidean of L2-normalised features, sqrt(2 - 2 cos)",
                   "queries": results}, handle, indent=2)
    shown = results[:max(args.show, 0)]
    if shown:
        write_ranked_png(shown, out / "ranked_lists.png", args.top_k)
        write_html(shown, out / "index.html", title="reid-search", summary=summary)
    print(f"wrote {out}/results.json" + (", ranked_lists.png, index.html" if shown else "") + f" ({summary})")
    return 0


def main(argv: list[str] | None = None) -> None:
    from reid.cli import _run_cli

    sys.exit(_run_cli(run, argv))


def _same_checkpoint(given: str, inputs: dict) -> str:
    """The checkpoint to embed queries with: ``given`` or the gallery's, and it must be the gallery's file."""
    checkpoint = given or inputs["checkpoint"]
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}"
                              + ("" if given else " (the gallery's, from its embed.json): pass --checkpoint"))
    if file_sha256(checkpoint) != inputs["checkpoint_sha256"]:
        raise CheckpointError(f"{checkpoint} is not the checkpoint the gallery was embedded with ("
                              f"{inputs['checkpoint']}, sha256 {inputs['checkpoint_sha256'][:12]}): features "
                              "of different models cannot be compared; embed the gallery again")
    return checkpoint


def _result(path: str, camera: str, found: np.ndarray, scores: np.ndarray, gallery: Gallery) -> dict:
    matches = [{"rank": rank, "path": gallery.paths[index], "camera": gallery.cameras[index],
                "distance": round(float(np.sqrt(max(2.0 - 2.0 * float(score), 0.0))), 6),
                "similarity": round(float(score), 6), "gallery_index": int(index)}
               for rank, (index, score) in enumerate(zip(found.tolist(), scores.tolist()), start=1) if index >= 0]
    return {"path": path, "camera": camera, "matches": matches}


def _print_table(results: list[dict]) -> None:
    for query in results:
        camera = f" (camera {query['camera']})" if query["camera"] else ""
        print(f"query {query['path']}{camera}")
        print(f"  {'rank':>4} {'distance':>8} {'camera':>8}  path")
        for match in query["matches"]:
            print(f"  {match['rank']:>4} {match['distance']:8.4f} {match['camera'] or '-':>8}  {match['path']}")
