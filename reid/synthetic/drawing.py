"""Drawing a synthetic person and occluders with PIL shapes (on the supersampled canvas of ``render_image``).

:func:`draw_person` computes the body geometry once (:class:`_Body`), then paints the parts back to front, one
named step each: what the body hides, legs, lower garment, torso, arms, shoulder bag, head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from reid.synthetic.identity import PALETTE, Identity


@dataclass(frozen=True)
class _Body:
    """Where the parts of one drawn person sit, in canvas pixels (y grows downwards)."""

    view: str  # "front", "back", "left" or "right"
    side: bool  # a profile view
    facing: float  # +1 walking right, -1 otherwise
    centre_x: float
    top: float
    height: float
    stride: float  # -1..1, walking phase
    head_r: float  # head radius
    head_cy: float  # head centre y
    shoulder_y: float
    hip_y: float
    foot_y: float
    half_w: float  # half the torso width
    limb: float  # arm and leg thickness
    torso: tuple[float, float, float, float]  # the box the upper-clothing pattern fills


def _body(person: Identity, view: str, centre_x: float, top: float, height: float, stride: float) -> _Body:
    h, cx = height, centre_x
    side = view in ("left", "right")
    head_r = 0.062 * h
    shoulder_y = top + 2 * head_r + 0.012 * h
    hip_y = top + h - person.leg_ratio * h
    half_w = (0.1 if side else 0.15) * h * person.width
    return _Body(
        view=view,
        side=side,
        facing=1.0 if view == "right" else -1.0,
        centre_x=cx,
        top=top,
        height=h,
        stride=stride,
        head_r=head_r,
        head_cy=top + head_r,
        shoulder_y=shoulder_y,
        hip_y=hip_y,
        foot_y=top + h - 0.03 * h,
        half_w=half_w,
        limb=max(2.0, 0.055 * h * person.width),
        torso=(cx - half_w, shoulder_y + 0.02 * h, cx + half_w, hip_y),
    )


def draw_person(
    draw: ImageDraw.ImageDraw,
    person: Identity,
    view: str,
    centre_x: float,
    top: float,
    height: float,
    stride: float,
) -> None:
    """Draw ``person`` standing in a box of ``height`` px with its top at ``top``.

    Args:
        view: "front", "back", "left" or "right" (profile walking towards that side).
        stride: -1..1, how far apart the feet are (walking phase).
    """
    body = _body(person, view, centre_x, top, height, stride)
    _draw_behind_body(draw, person, body)
    _draw_legs(draw, person, body)
    _draw_lower_garment(draw, person, body)
    _draw_torso(draw, person, body)
    _draw_arms(draw, person, body)
    _draw_shoulder_bag(draw, person, body)
    _draw_head(draw, person, body)


def _draw_behind_body(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """What the body covers: long hair behind the shoulders (front view), a backpack seen in profile."""
    h, cx, head_r, shoulder_y = body.height, body.centre_x, body.head_r, body.shoulder_y
    if person.long_hair and body.view == "front":  # hair falling behind the shoulders
        draw.rectangle(
            (cx - 1.1 * head_r, body.head_cy, cx + 1.1 * head_r, shoulder_y + 0.1 * h), fill=person.hair
        )
    if person.bag == "backpack" and body.side:
        back_x = cx - body.facing * body.half_w
        draw.rectangle(
            (
                min(back_x, back_x - body.facing * 0.07 * h),
                shoulder_y + 0.03 * h,
                max(back_x, back_x - body.facing * 0.07 * h),
                body.hip_y - 0.03 * h,
            ),
            fill=person.bag_colour,
        )


def _draw_legs(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """Legs (skin, or the trousers), shorts over the thighs, shoes; spread by the stride."""
    h, cx, half_w, limb, stride = body.height, body.centre_x, body.half_w, body.limb, body.stride
    hip_y, foot_y = body.hip_y, body.foot_y
    # (hip x, foot x) per leg; the lower garment covers hip..knee (shorts) or hip..foot (trousers)
    if body.side:
        reach = np.sin(0.45 * stride) * person.leg_ratio * h
        legs = [(cx, cx + reach), (cx, cx - reach)]
    else:
        spread = 0.45 * half_w
        legs = [
            (cx - spread, cx - spread - 0.02 * h * stride),
            (cx + spread, cx + spread + 0.02 * h * stride),
        ]
    for hip_x, foot_x in legs:
        draw.line(
            (hip_x, hip_y, foot_x, foot_y),
            fill=person.skin if person.lower_type != "trousers" else person.lower,
            width=int(limb),
        )
        if person.lower_type == "shorts":
            draw.line(
                (hip_x, hip_y, hip_x + 0.45 * (foot_x - hip_x), hip_y + 0.45 * (foot_y - hip_y)),
                fill=person.lower,
                width=int(limb * 1.15),
            )
        shoe_front = 0.05 * h * body.facing if body.side else 0.0
        draw.ellipse(
            (
                foot_x - limb * 0.7 + min(0, shoe_front),
                foot_y - 0.02 * h,
                foot_x + limb * 0.7 + max(0, shoe_front),
                foot_y + 0.025 * h,
            ),
            fill=person.shoes,
        )


def _draw_lower_garment(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """A flared skirt, or the waistband of trousers and shorts."""
    h, cx, half_w, hip_y = body.height, body.centre_x, body.half_w, body.hip_y
    if person.lower_type == "skirt":
        flare = half_w * (1.35 if not body.side else 1.6)
        skirt_bottom = hip_y + 0.45 * person.leg_ratio * h
        draw.polygon(
            [
                (cx - half_w, hip_y - 1),
                (cx + half_w, hip_y - 1),
                (cx + flare, skirt_bottom),
                (cx - flare, skirt_bottom),
            ],
            fill=person.lower,
        )
    else:
        draw.rectangle((cx - half_w, hip_y - 1, cx + half_w, hip_y + 0.06 * h), fill=person.lower)


def _draw_torso(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """The upper clothing with its pattern, then a backpack seen from behind or its straps from the front."""
    h, cx, half_w, shoulder_y, hip_y = body.height, body.centre_x, body.half_w, body.shoulder_y, body.hip_y
    draw.polygon(
        [
            (cx - 0.8 * half_w, shoulder_y),
            (cx + 0.8 * half_w, shoulder_y),
            (cx + half_w, body.torso[1]),
            (cx + half_w, hip_y),
            (cx - half_w, hip_y),
            (cx - half_w, body.torso[1]),
        ],
        fill=person.upper,
    )
    _draw_upper_pattern(draw, person, body.view, body.torso)
    if person.bag == "backpack":
        if body.view == "back":
            draw.rectangle(
                (cx - 0.75 * half_w, shoulder_y + 0.03 * h, cx + 0.75 * half_w, hip_y - 0.03 * h),
                fill=person.bag_colour,
            )
        elif body.view == "front":
            for x in (cx - 0.55 * half_w, cx + 0.55 * half_w):
                draw.line(
                    (x, shoulder_y, x, shoulder_y + 0.14 * h),
                    fill=person.bag_colour,
                    width=max(1, int(body.limb / 3)),
                )


def _draw_arms(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """Arms in skin colour with the sleeves over them; in profile one arm, swinging against the stride."""
    h, cx, half_w, limb, shoulder_y = body.height, body.centre_x, body.half_w, body.limb, body.shoulder_y
    arm_len = 0.36 * h
    sleeve = 0.35 if person.short_sleeves else 1.0
    if body.side:
        swing = -0.5 * body.stride
        arms = [(cx, cx + np.sin(swing) * arm_len)]
    else:
        arms = [
            (cx - half_w - limb / 2, cx - half_w - limb / 2 - 0.01 * h),
            (cx + half_w + limb / 2, cx + half_w + limb / 2 + 0.01 * h),
        ]
    for shoulder_x, hand_x in arms:
        hand_y = shoulder_y + 0.02 * h + np.sqrt(max(arm_len**2 - (hand_x - shoulder_x) ** 2, 1.0))
        top_y = shoulder_y + 0.02 * h
        draw.line((shoulder_x, top_y, hand_x, hand_y), fill=person.skin, width=int(limb))
        draw.line(
            (
                shoulder_x,
                top_y,
                shoulder_x + sleeve * (hand_x - shoulder_x),
                top_y + sleeve * (hand_y - top_y),
            ),
            fill=person.upper,
            width=int(limb * 1.1),
        )


def _draw_shoulder_bag(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """A bag on the person's own side, seen from the front mirrored; in profile only from its side."""
    bag_side = {"left": 1.0, "right": -1.0}.get(person.bag)
    if bag_side is None:
        return
    h, cx, half_w, side, hip_y = body.height, body.centre_x, body.half_w, body.side, body.hip_y
    visible = not side or (body.view == "right") == (person.bag == "left")
    if visible:
        screen_side = bag_side if body.view == "front" else -bag_side
        bag_x = cx if side else cx + screen_side * (half_w + 0.05 * h)
        draw.rectangle(
            (bag_x - 0.05 * h, hip_y - 0.08 * h, bag_x + 0.05 * h, hip_y + 0.05 * h),
            fill=person.bag_colour,
        )
        if not side:
            draw.line(
                (cx - screen_side * 0.8 * half_w, body.shoulder_y, bag_x, hip_y - 0.08 * h),
                fill=person.bag_colour,
                width=max(1, int(body.limb / 3)),
            )


def _draw_head(draw: ImageDraw.ImageDraw, person: Identity, body: _Body) -> None:
    """Face, hair (all of the head from behind, a cap of it otherwise, its back in profile) and a hat."""
    h, cx, top, head_r, head_cy = body.height, body.centre_x, body.top, body.head_r, body.head_cy
    side, facing = body.side, body.facing
    head = (cx - 0.85 * head_r, top, cx + 0.85 * head_r, top + 2 * head_r)
    draw.ellipse(head, fill=person.skin)
    if body.view == "back":
        draw.ellipse(head, fill=person.hair)
        if person.long_hair:
            draw.rectangle(
                (cx - 0.9 * head_r, head_cy, cx + 0.9 * head_r, body.shoulder_y + 0.1 * h), fill=person.hair
            )
    else:
        draw.pieslice((head[0] - 1, head[1] - 1, head[2] + 1, head[3]), 180, 360, fill=person.hair)
        if side:  # back of the head
            back = cx - facing * 0.85 * head_r
            draw.rectangle(
                (
                    min(back, cx),
                    head_cy - head_r * 0.2,
                    max(back, cx),
                    head_cy + head_r * (1.6 if person.long_hair else 0.5),
                ),
                fill=person.hair,
            )
    if person.hat is not None:
        draw.rectangle((head[0], top - 0.2 * head_r, head[2], head_cy - 0.3 * head_r), fill=person.hat)
        brim = (
            (head[0] - 0.3 * head_r, head[2] + 0.3 * head_r)
            if not side
            else (min(cx, cx + facing * 1.5 * head_r), max(cx, cx + facing * 1.5 * head_r))
        )
        draw.rectangle((brim[0], head_cy - 0.45 * head_r, brim[1], head_cy - 0.25 * head_r), fill=person.hat)


def _draw_upper_pattern(
    draw: ImageDraw.ImageDraw, person: Identity, view: str, box: tuple[float, float, float, float]
) -> None:
    x0, y0, x1, y1 = box
    second = person.upper_second
    if person.upper_pattern == "stripes":
        band = (y1 - y0) / 7
        for i in range(1, 7, 2):
            draw.rectangle((x0, y0 + i * band, x1, y0 + (i + 1) * band), fill=second)
    elif person.upper_pattern == "checks":
        cell = (x1 - x0) / 4
        for row in range(int((y1 - y0) / cell) + 1):
            for col in range(4):
                if (row + col) % 2:
                    draw.rectangle(
                        (
                            x0 + col * cell,
                            y0 + row * cell,
                            x0 + (col + 1) * cell,
                            min(y0 + (row + 1) * cell, y1),
                        ),
                        fill=second,
                    )
    elif person.upper_pattern == "split":  # the person's left half is the second colour
        mid = (x0 + x1) / 2
        if view == "front":
            draw.rectangle((mid, y0, x1, y1), fill=second)
        elif view == "back":
            draw.rectangle((x0, y0, mid, y1), fill=second)
        elif view == "right":  # profile walking right: the person's left side faces the camera
            draw.rectangle(box, fill=second)
    elif person.upper_pattern == "logo" and view == "front":
        size = (x1 - x0) * 0.4
        cx, cy = (x0 + x1) / 2, y0 + (y1 - y0) * 0.35
        draw.rectangle((cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), fill=second)


def draw_occluder(
    draw: ImageDraw.ImageDraw, width: int, height: int, ground: np.ndarray, rng: np.random.Generator
) -> None:
    """Cover up to ~30% of the canvas with a low wall, a pole or a car."""
    kind = rng.choice(["wall", "pole", "car"])
    if kind == "wall":  # a low block in a background-ish colour
        colour = tuple(int(c) for c in np.clip(ground.astype(float) * rng.uniform(0.7, 1.2), 0, 255))
        draw.rectangle((0, height * (1 - rng.uniform(0.1, 0.3)), width, height), fill=colour)
    elif kind == "pole":
        pole_w, x = width * rng.uniform(0.08, 0.2), rng.uniform(0, width)
        shade = int(rng.integers(40, 110))
        draw.rectangle((x - pole_w / 2, 0, x + pole_w / 2, height), fill=(shade, shade, shade + 8))
    else:
        body = PALETTE[str(rng.choice(["white", "black", "grey", "red", "navy"]))]
        car_top = height * (1 - rng.uniform(0.15, 0.28))
        x0 = rng.uniform(-0.8, 0.2) * width
        draw.rounded_rectangle((x0, car_top, x0 + width * 1.2, height + 10), radius=width * 0.1, fill=body)
        draw.rectangle(
            (x0 + width * 0.2, car_top + 3, x0 + width * 0.6, car_top + height * 0.06), fill=(60, 70, 80)
        )
