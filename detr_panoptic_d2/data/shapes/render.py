"""Draws one sample of the synthetic shapes dataset: 2-3 textured stuff regions with smooth
irregular borders, under 1-5 shapes (things) that may touch or overlap, also within a class.

Colour alone does not give the class: shapes take any hue and are shaded, stuff classes
differ by texture as well as by a broad hue family, and the whole image gets pixel noise.
"""

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# COCO panoptic categories, as written into the dataset's JSON files.
CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 82, 200]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [250, 170, 30]},
    {"id": 11, "name": "water", "isthing": 0, "color": [70, 130, 180]},
    {"id": 12, "name": "sand", "isthing": 0, "color": [210, 180, 120]},
    {"id": 13, "name": "grass", "isthing": 0, "color": [60, 160, 60]},
]
CIRCLE, SQUARE, TRIANGLE, WATER, SAND, GRASS = (c["id"] for c in CATEGORIES)
THING_IDS = (CIRCLE, SQUARE, TRIANGLE)
STUFF_IDS = (WATER, SAND, GRASS)
# Centre of each stuff class's hue family (0..1); actual hues vary by +-STUFF_HUE_JITTER.
STUFF_HUES = {WATER: 0.58, SAND: 0.11, GRASS: 0.30}
STUFF_HUE_JITTER = 0.08

# Shape "radius" as a fraction of the image's shorter side; squares and triangles are drawn
# with a larger circumradius so that the three classes have similar areas.
RADIUS_RANGE = (0.12, 0.24)
CIRCUMRADIUS_SCALE = {SQUARE: 1.25, TRIANGLE: 1.5}
MAX_THINGS = 5
# A new shape is rejected when it would leave any shape with fewer visible pixels than this
# fraction of the image or of its own drawn area.
MIN_VISIBLE_IMAGE_FRACTION = 0.015
MIN_VISIBLE_OWN_FRACTION = 0.5
# Probability that a new shape copies an earlier one's class and sits against it.
NEIGHBOUR_PROB = 0.4
# Stuff regions below this fraction of the image are merged into the largest stuff region.
MIN_STUFF_FRACTION = 0.03
PIXEL_NOISE_STD = 6.0


@dataclass
class Shape:
    category_id: int
    cx: float
    cy: float
    radius: float
    angle: float
    hue: float


def panoptic_id(category_id, index):
    """Segment id of the ``index``-th (1-based) instance of a thing, or of a stuff class (0)."""
    return category_id * 1000 + index


def render_sample(rng, height, width):
    """Draws one sample from ``rng`` (a ``np.random.Generator``).

    Returns: image (height x width x 3 uint8 RGB), segment ids (height x width int32, every
    pixel labelled; see ``panoptic_id``) and a list of ``(segment id, category id)``.
    """
    stuff = _stuff_layout(rng, height, width)
    shapes, owner = _place_shapes(rng, height, width)
    stuff = _merge_small_stuff(stuff, owner < 0)

    ids = np.zeros((height, width), np.int32)
    segments = []
    image = np.zeros((height, width, 3), np.float32)
    for category_id in STUFF_IDS:
        mask = (stuff == category_id) & (owner < 0)
        if mask.any():
            ids[mask] = panoptic_id(category_id, 0)
            segments.append((panoptic_id(category_id, 0), category_id))
            image[mask] = _stuff_texture(rng, category_id, height, width)[mask]
    count = dict.fromkeys(THING_IDS, 0)
    for index, shape in enumerate(shapes):
        count[shape.category_id] += 1
        mask = owner == index
        ids[mask] = panoptic_id(shape.category_id, count[shape.category_id])
        segments.append(
            (panoptic_id(shape.category_id, count[shape.category_id]), shape.category_id)
        )
        image[mask] = _shape_texture(rng, shape, height, width)[mask]
    image += rng.normal(0.0, PIXEL_NOISE_STD, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def _smooth_noise(rng, height, width, cells):
    """height x width float32 field: a cells x cells normal grid, bicubically upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _stuff_layout(rng, height, width):
    """height x width map of stuff category ids: 2 or 3 classes, each on at least 12% of the
    image (best of 20 tries), as the argmax of one smooth random field per class."""
    classes = rng.choice(STUFF_IDS, size=rng.integers(2, 4), replace=False)
    for _ in range(20):
        fields = [
            _smooth_noise(rng, height, width, 3) + 0.3 * _smooth_noise(rng, height, width, 7)
            for _ in classes
        ]
        label = np.argmax(fields, axis=0)
        if np.bincount(label.ravel(), minlength=len(classes)).min() >= 0.12 * height * width:
            break
    return classes[label]


def _merge_small_stuff(stuff, visible):
    """Gives the pixels of stuff classes barely ``visible`` to the most visible stuff class."""
    areas = {c: int(np.count_nonzero((stuff == c) & visible)) for c in np.unique(stuff)}
    largest = max(areas, key=areas.get)
    small = [c for c, a in areas.items() if a < MIN_STUFF_FRACTION * stuff.size]
    return np.where(np.isin(stuff, small), largest, stuff)


def _propose_shape(rng, shapes, height, width):
    short = min(height, width)
    radius = rng.uniform(*RADIUS_RANGE) * short
    angle = rng.uniform(0, 2 * math.pi)
    if shapes and rng.random() < NEIGHBOUR_PROB:
        ref = shapes[rng.integers(len(shapes))]
        direction = rng.uniform(0, 2 * math.pi)
        distance = (ref.radius + radius) * rng.uniform(0.6, 0.95)
        return Shape(
            ref.category_id,
            ref.cx + distance * math.cos(direction),
            ref.cy + distance * math.sin(direction),
            radius,
            angle,
            (ref.hue + rng.uniform(-0.06, 0.06)) % 1.0,
        )
    return Shape(
        int(rng.choice(THING_IDS)),
        rng.uniform(0.5 * radius, width - 0.5 * radius),
        rng.uniform(0.5 * radius, height - 0.5 * radius),
        radius,
        angle,
        rng.uniform(0, 1),
    )


def _shape_mask(shape, height, width):
    """height x width bool mask of ``shape`` (clipped to the image)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape.category_id == CIRCLE:
        r = shape.radius
        draw.ellipse([shape.cx - r, shape.cy - r, shape.cx + r, shape.cy + r], fill=1)
    else:
        corners = 4 if shape.category_id == SQUARE else 3
        r = shape.radius * CIRCUMRADIUS_SCALE[shape.category_id]
        draw.polygon(
            [
                (
                    shape.cx + r * math.cos(shape.angle + 2 * math.pi * k / corners),
                    shape.cy + r * math.sin(shape.angle + 2 * math.pi * k / corners),
                )
                for k in range(corners)
            ],
            fill=1,
        )
    return np.asarray(canvas, dtype=bool)


def _place_shapes(rng, height, width):
    """Shapes in depth order (later ones on top) and the height x width map of the index of
    the shape owning each pixel (-1: none). Every shape keeps a visible share (see
    MIN_VISIBLE_*); a proposal that would break this is redrawn, at most 10 times."""
    owner = np.full((height, width), -1, np.int64)
    shapes, drawn_areas = [], []
    min_area = MIN_VISIBLE_IMAGE_FRACTION * height * width
    for _ in range(rng.integers(1, MAX_THINGS + 1)):
        for _ in range(10):
            shape = _propose_shape(rng, shapes, height, width)
            mask = _shape_mask(shape, height, width)
            candidate = np.where(mask, len(shapes), owner)
            visible = np.bincount(candidate.ravel() + 1, minlength=len(shapes) + 2)[1:]
            areas = np.array(drawn_areas + [np.count_nonzero(mask)])
            if np.all(visible >= np.maximum(min_area, MIN_VISIBLE_OWN_FRACTION * areas)):
                shapes.append(shape)
                drawn_areas.append(int(areas[-1]))
                owner = candidate
                break
    return shapes, owner


def _rgb(hue, saturation, value):
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255


def _stuff_texture(rng, category_id, height, width):
    """height x width x 3 float image of a stuff class's texture: waves (water), speckle
    (sand) or vertical streaks (grass), over a colour of its hue family."""
    hue = (STUFF_HUES[category_id] + rng.uniform(-STUFF_HUE_JITTER, STUFF_HUE_JITTER)) % 1.0
    color = _rgb(hue, rng.uniform(0.35, 0.8), rng.uniform(0.45, 0.9))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if category_id == WATER:
        wobble = rng.uniform(2, 5) * np.sin(2 * math.pi * xx / rng.uniform(20, 40))
        pattern = 0.25 * np.sin(
            2 * math.pi * (yy + wobble) / rng.uniform(6, 12) + rng.uniform(0, 6.3)
        )
    elif category_id == SAND:
        pattern = 0.2 * rng.standard_normal((height, width)) + 0.15 * _smooth_noise(
            rng, height, width, 6
        )
    else:
        streaks = rng.standard_normal((max(2, height // 8), width)).astype(np.float32)
        pattern = 0.3 * np.asarray(Image.fromarray(streaks).resize((width, height), Image.BILINEAR))
        pattern = pattern + 0.05 * rng.standard_normal((height, width))
    return color * (1.0 + pattern[..., None])


def _shape_texture(rng, shape, height, width):
    """height x width x 3 float image of a shape's colour, shaded by a linear gradient."""
    color = _rgb(shape.hue, rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (
        (xx - shape.cx) * math.cos(direction) + (yy - shape.cy) * math.sin(direction)
    ) / shape.radius
    return color * (1.0 + 0.25 * np.clip(ramp, -1, 1)[..., None])
