"""Two synthetic pedestrian domains, ``synth-a`` and ``synth-b``, written in Market-1501 layout.

They are the built-in default data: small, made in seconds, with no download. Each identity is a sampled
combination of parts (upper clothing colour and pattern, lower garment, skin, hair, build, shoes, bag, hat)
drawn from a small colour palette, so many people share a colour and only the combination tells them apart.
Every image adds viewpoint, scale/crop jitter, stride, occlusion, lighting, a per-camera colour cast and a
per-camera background. The domains differ in camera count, colour cast, saturation, backgrounds, sharpness and
resolution, so a model trained on one loses accuracy on the other.

Example::

    root = ensure_synthetic("synth-a", "data/synthetic/synth-a", num_train_ids=200, num_test_ids=100)
    # root/bounding_box_train/0001_c3s1_000002_01.jpg ...

Output is deterministic: each image has its own RNG seeded from (seed, domain, identity, image index), so the
bytes do not depend on generation order.

Modules: :mod:`~reid.synthetic.style` (domain styles, camera backgrounds), :mod:`~reid.synthetic.identity`
(identity attributes), :mod:`~reid.synthetic.drawing` (a person, occluders), :mod:`~reid.synthetic.generate`
(the plan of a domain, rendering each image, writing the folders, ``ensure_synthetic``).
"""

from __future__ import annotations

from reid.synthetic.generate import (
    ImageSpec,
    ensure_synthetic,
    generate_domain,
    plan_domain,
    render_contact_sheet,
    render_image,
    split_counts,
)
from reid.synthetic.identity import Identity, sample_identity
from reid.synthetic.style import DOMAINS, DomainStyle

__all__ = [
    "DOMAINS",
    "DomainStyle",
    "Identity",
    "ImageSpec",
    "ensure_synthetic",
    "generate_domain",
    "plan_domain",
    "render_contact_sheet",
    "render_image",
    "sample_identity",
    "split_counts",
]
