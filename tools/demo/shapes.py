"""The demo world's vocabulary and how its pictures are drawn.

A picture is a flat background colour with one to three flat shapes on it. Everything here is
pure geometry on numpy/PIL: no randomness (the dataset module decides what to draw and passes
exact numbers), so a scene description always renders to the same pixels.

Shapes are drawn at `SUPERSAMPLE` times the target size and box-filtered down, which gives the
soft edges a real image has without blurring the flat colours inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "ring": "rings",
           "cross": "crosses"}

# Named colours, far apart in RGB so that a nearest-colour rule separates them with a wide margin.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (245, 220, 40),
    "orange": (245, 135, 25),
    "purple": (135, 50, 175),
    "white": (242, 242, 242),
    "black": (20, 20, 20),
}
COLORS = tuple(PALETTE)

SIZES = ("small", "big")
# Shape radius (circumradius for polygons) as a fraction of the image side.
SIZE_RADIUS = {"small": 0.11, "big": 0.21}

# Nine places on a 3x3 grid; the one-word names are the middle of each edge.
POSITIONS = ("center", "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right")
# (column, row) in thirds-of-a-grid units: 0 = left/top, 1 = middle, 2 = right/bottom.
POSITION_CELL: dict[str, tuple[int, int]] = {
    "center": (1, 1),
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "top left": (0, 0),
    "top right": (2, 0),
    "bottom left": (0, 2),
    "bottom right": (2, 2),
}
CELL_POSITION = {cell: name for name, cell in POSITION_CELL.items()}
# Cell centres as a fraction of the side: a quarter, half and three quarters of the way across.
CELL_CENTER = (0.25, 0.5, 0.75)

SUPERSAMPLE = 4


@dataclass(frozen=True)
class PlacedShape:
    """One shape as drawn: what it is and exactly where (pixel units of the final image)."""

    shape: str
    color: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[int, int, int]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive end, of the pixels the shape may touch."""
        r = self.radius
        return (max(0, math.floor(self.cx - r)), max(0, math.floor(self.cy - r)),
                math.ceil(self.cx + r) + 1, math.ceil(self.cy + r) + 1)


def position_center(position: str, size_px: int) -> tuple[float, float]:
    """The nominal centre of a named position in pixels."""
    col, row = POSITION_CELL[position]
    return CELL_CENTER[col] * size_px, CELL_CENTER[row] * size_px


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    inner = 0.45 * r
    points = []
    for i in range(10):
        angle = -math.pi / 2 + i * math.pi / 5
        rad = r if i % 2 == 0 else inner
        points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
    return points


def _triangle_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    # Equilateral, pointing up, circumradius r: its centroid is (cx, cy).
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
               fill: tuple[int, int, int], background: tuple[int, int, int]) -> None:
    """Draw one shape on a (supersampled) canvas; coordinates are in the canvas' pixels."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.8 * r  # a square of the same visual weight as the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon(_triangle_points(cx, cy, r), fill=fill)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        hole = 0.55 * r
        draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=background)
    elif shape == "cross":
        arm = 0.32 * r
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def render(size_px: int, background_rgb: tuple[int, int, int], shapes: list[PlacedShape]) -> np.ndarray:
    """The picture as a (size, size, 3) uint8 array."""
    big = size_px * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), background_rgb)
    draw = ImageDraw.Draw(canvas)
    s = SUPERSAMPLE
    for shape in shapes:
        # Pixel centres: pixel i covers [i, i+1), so scale about the origin and the centre lands exactly.
        draw_shape(draw, shape.shape, shape.cx * s, shape.cy * s, shape.radius * s, shape.rgb, background_rgb)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.uint8)
