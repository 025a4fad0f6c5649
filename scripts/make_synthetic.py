"""Write the synthetic domains synth-a and synth-b in Market-1501 layout (and optionally a contact sheet).

Usage:
    python scripts/make_synthetic.py --out data/synthetic
    python scripts/make_synthetic.py --out data/synthetic --train-ids 200 --test-ids 100 --images-per-id 12 \\
        --seed 0 --contact-sheet docs/images/synthetic_domains.png

Folders that already hold the same parameters are left as they are (fast path).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from reid.errors import ReidError
from reid.synthetic import DOMAINS, ensure_synthetic, render_contact_sheet, split_counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("data/synthetic"), help="writes <out>/synth-a, <out>/synth-b"
    )
    parser.add_argument("--train-ids", type=int, default=200, help="identities in bounding_box_train")
    parser.add_argument("--test-ids", type=int, default=100, help="identities in query + bounding_box_test")
    parser.add_argument("--images-per-id", type=int, default=12, help="images per identity (>= 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--contact-sheet", type=Path, default=None, help="also save a PNG grid of test identities"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    roots = {}
    for name in DOMAINS:
        start = time.perf_counter()
        roots[name] = ensure_synthetic(
            name,
            args.out / name,
            num_train_ids=args.train_ids,
            num_test_ids=args.test_ids,
            images_per_id=args.images_per_id,
            seed=args.seed,
        )
        counts = ", ".join(f"{split} {count}" for split, count in split_counts(roots[name]).items())
        print(f"{name}: {roots[name]}  {counts}  ({time.perf_counter() - start:.1f} s)")
    if args.contact_sheet is not None:
        print(f"contact sheet: {render_contact_sheet(roots, args.contact_sheet)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReidError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
