"""Writes tests/drawings/digits.json: 180 hand-drawn-like digits as pen strokes.

    python3 tests/drawings/make_drawings.py

Each drawing is {"label", "style", "strokes": [[[x, y], ...], ...]} with x, y in 0..1 of the
drawing pad (0, 0 its top-left corner). They are made from skeletons of how people write
each digit (30 styles: a 1 with or without flag and base, open and closed 4s, 7s with and
without bar, 9s with straight and curved tails, 2s with and without a loop, one-stroke
cursive 3s and 8s, ...), then each is varied six times (fixed seed): size from small to
large, place (often off-centre), slant, rotation, width, a wobbling hand, and thin or thick
lines (a thick line is the stroke drawn again beside itself, as with a pen pressed twice).

The skeletons were written from how digits are written, before any model read them; the
file is generated once and kept, so the browser test reads a fixed set.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

OUT = Path(__file__).with_name("digits.json")
SEED = 11
VARIANTS = 6
STEP = 0.045  # distance between the pen's points, as a fraction of the pad

# A stroke is a list of pieces that join end to end: ("c", points) a smooth curve through
# the points (Catmull-Rom), ("l", points) straight lines (sharp corners). Skeleton
# coordinates: x from 0 to about 0.65 (the digit's width), y from 0 (top) to 1 (bottom).
TEMPLATES: dict[str, list[tuple[str, list]]] = {}


def t(label: int, style: str, *strokes) -> None:
    TEMPLATES[f"{label}-{style}"] = (label, [list(s) for s in strokes])


def C(*points):
    return ("c", list(points))


def L(*points):
    return ("l", list(points))


def ring(cx, cy, rx, ry, start_deg=-90, sweep=-380, n=12):
    """Points around an ellipse from start_deg (y down: -90 is the top), sweep < 0: counter-clockwise."""
    return [(cx + rx * math.cos(math.radians(start_deg + sweep * i / n)),
             cy + ry * math.sin(math.radians(start_deg + sweep * i / n))) for i in range(n + 1)]


t(0, "oval", [C(*ring(0.32, 0.5, 0.3, 0.5))])
t(0, "round", [C(*ring(0.38, 0.5, 0.36, 0.47, -80, -365))])
t(0, "narrow-clockwise", [C(*ring(0.25, 0.5, 0.2, 0.5, -100, 350))])
t(1, "stick", [L((0.3, 0.0), (0.3, 1.0))])
t(1, "flag", [L((0.1, 0.25), (0.33, 0.0), (0.33, 1.0))])
t(1, "flag-base", [L((0.08, 0.22), (0.32, 0.0), (0.32, 1.0))], [L((0.08, 1.0), (0.56, 1.0))])
t(2, "printed", [C((0.05, 0.25), (0.2, 0.04), (0.42, 0.02), (0.57, 0.18), (0.55, 0.38), (0.3, 0.68), (0.03, 0.98)),
                 L((0.03, 0.98), (0.62, 0.98))])
t(2, "loop", [C((0.05, 0.25), (0.2, 0.04), (0.42, 0.02), (0.57, 0.18), (0.55, 0.38), (0.3, 0.68), (0.12, 0.85),
                (0.06, 0.93), (0.1, 0.99), (0.18, 0.95), (0.16, 0.87), (0.08, 0.9), (0.1, 0.98), (0.3, 1.0),
                (0.5, 0.97), (0.64, 0.95))])
t(2, "straight", [C((0.04, 0.2), (0.25, 0.0), (0.52, 0.08), (0.55, 0.28)), L((0.55, 0.28), (0.02, 1.0), (0.6, 1.0))])
t(3, "round", [C((0.05, 0.1), (0.3, 0.0), (0.55, 0.12), (0.52, 0.33), (0.25, 0.47)),
               C((0.25, 0.47), (0.55, 0.58), (0.58, 0.82), (0.35, 1.0), (0.03, 0.9))])
t(3, "flat-top", [L((0.05, 0.02), (0.58, 0.02), (0.25, 0.42)),
                  C((0.25, 0.42), (0.55, 0.55), (0.6, 0.8), (0.35, 1.0), (0.03, 0.9))])
t(3, "cursive", [C((0.05, 0.12), (0.3, 0.0), (0.55, 0.12), (0.5, 0.35), (0.28, 0.46), (0.22, 0.5), (0.3, 0.5),
                   (0.55, 0.6), (0.58, 0.83), (0.35, 1.0), (0.03, 0.88))])
t(4, "open", [L((0.1, 0.0), (0.06, 0.6), (0.65, 0.6))], [L((0.48, 0.08), (0.48, 1.0))])
t(4, "closed", [L((0.45, 0.0), (0.02, 0.65), (0.65, 0.65))], [L((0.47, 0.02), (0.47, 1.0))])
t(4, "open-slanted", [L((0.2, 0.0), (0.02, 0.62), (0.62, 0.58))], [L((0.45, 0.2), (0.5, 1.0))])
t(5, "two-strokes", [L((0.1, 0.02), (0.07, 0.45)), C((0.07, 0.45), (0.3, 0.38), (0.55, 0.5), (0.58, 0.75),
                                                      (0.38, 0.98), (0.03, 0.9))],
  [L((0.1, 0.02), (0.58, 0.02))])
t(5, "one-stroke", [L((0.58, 0.02), (0.12, 0.02), (0.08, 0.45)),
                    C((0.08, 0.45), (0.3, 0.38), (0.56, 0.5), (0.58, 0.76), (0.38, 0.98), (0.03, 0.88))])
t(5, "round-belly", [L((0.12, 0.0), (0.06, 0.42)), C((0.06, 0.42), (0.35, 0.35), (0.6, 0.55), (0.5, 0.9),
                                                     (0.25, 1.0), (0.02, 0.85))],
  [L((0.14, 0.0), (0.6, -0.02))])
t(6, "curved", [C((0.52, 0.02), (0.25, 0.18), (0.06, 0.5), (0.08, 0.85), (0.3, 1.0), (0.53, 0.87), (0.55, 0.65),
                  (0.35, 0.52), (0.12, 0.6), (0.08, 0.72))])
t(6, "straight-stem", [C((0.45, 0.0), (0.22, 0.3), (0.07, 0.62), (0.12, 0.92), (0.32, 1.0), (0.52, 0.88),
                         (0.5, 0.66), (0.3, 0.58), (0.1, 0.68))])
t(6, "small-loop", [C((0.55, 0.0), (0.3, 0.1), (0.12, 0.4), (0.1, 0.8), (0.25, 1.0), (0.45, 0.92), (0.45, 0.75),
                      (0.28, 0.68), (0.12, 0.78))])
t(7, "plain", [L((0.02, 0.02), (0.6, 0.02), (0.22, 1.0))])
t(7, "bar", [L((0.02, 0.02), (0.6, 0.02), (0.22, 1.0))], [L((0.15, 0.52), (0.55, 0.52))])
t(7, "hook-curved", [L((0.02, 0.14), (0.04, 0.02), (0.6, 0.02)), C((0.6, 0.02), (0.45, 0.35), (0.3, 0.7), (0.28, 1.0))])
t(8, "one-stroke", [C((0.55, 0.12), (0.3, 0.0), (0.08, 0.12), (0.12, 0.33), (0.5, 0.62), (0.55, 0.85), (0.3, 1.0),
                      (0.05, 0.85), (0.1, 0.62), (0.48, 0.35), (0.52, 0.12), (0.32, 0.0))])
t(8, "two-rings", [C(*ring(0.3, 0.25, 0.2, 0.24, -90, -360))], [C(*ring(0.3, 0.72, 0.27, 0.27, -90, 360))])
t(8, "from-middle", [C((0.3, 0.48), (0.08, 0.3), (0.15, 0.05), (0.42, 0.04), (0.5, 0.25), (0.3, 0.48), (0.05, 0.7),
                       (0.15, 0.97), (0.45, 0.97), (0.55, 0.72), (0.3, 0.48))])
t(9, "straight-tail", [C((0.55, 0.2), (0.35, 0.02), (0.1, 0.08), (0.05, 0.3), (0.25, 0.45), (0.5, 0.35), (0.56, 0.15)),
                       L((0.56, 0.15), (0.55, 1.0))])
t(9, "curved-tail", [C((0.55, 0.2), (0.35, 0.02), (0.1, 0.08), (0.05, 0.3), (0.25, 0.45), (0.5, 0.35), (0.56, 0.15)),
                     C((0.56, 0.15), (0.55, 0.55), (0.45, 0.85), (0.25, 1.0))])
t(9, "ring-and-stick", [C(*ring(0.32, 0.25, 0.24, 0.24, -20, -370))], [L((0.56, 0.05), (0.5, 1.0))])


def catmull_rom(points, per_unit):
    """Points along a Catmull-Rom spline through ``points`` (ends repeated), ~per_unit per unit length."""
    pts = [points[0], *points, points[-1]]
    out = [points[0]]
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        n = max(2, math.ceil(math.dist(p1, p2) * per_unit))
        for k in range(1, n + 1):
            s = k / n
            out.append(tuple(0.5 * (2 * p1[j] + (-p0[j] + p2[j]) * s + (2 * p0[j] - 5 * p1[j] + 4 * p2[j] - p3[j]) * s * s
                                    + (-p0[j] + 3 * p1[j] - 3 * p2[j] + p3[j]) * s ** 3) for j in range(2)))
    return out


def polyline(points, per_unit):
    out = [points[0]]
    for a, b in zip(points, points[1:]):
        n = max(1, math.ceil(math.dist(a, b) * per_unit))
        out += [(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(1, n + 1)]
    return out


def skeleton_points(stroke, per_unit):
    out = []
    for kind, points in stroke:
        part = (catmull_rom if kind == "c" else polyline)(points, per_unit)
        out += part if not out else part[1:]
    return out


def vary(strokes, rng: random.Random):
    """One drawing of a skeleton: size, width, slant, rotation, place, wobble, thickness."""
    height = rng.choice([rng.uniform(0.28, 0.45), rng.uniform(0.45, 0.7), rng.uniform(0.65, 0.88)])
    widen = rng.uniform(0.8, 1.25)
    slant = rng.uniform(-0.15, 0.35)  # positive leans right, as most hands do
    turn = math.radians(rng.uniform(-10, 10))
    wobble = rng.choice([0.0, rng.uniform(0.003, 0.012)])
    passes = rng.choices([1, 2, 3], weights=[6, 3, 2])[0]
    per_unit = 1 / (STEP / height)  # a pen point every STEP of the pad
    shaped = []
    for stroke in strokes:
        pts = []
        for x, y in skeleton_points(stroke, per_unit):
            x, y = (x - 0.32) * widen, y - 0.5
            x += slant * -y
            x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
            pts.append((x * height, y * height))
        shaped.append(pts)
    xs = [x for s in shaped for x, _ in s]
    ys = [y for s in shaped for _, y in s]
    margin = 0.04
    cx = rng.uniform(margin - min(xs), 1 - margin - max(xs))
    cy = rng.uniform(margin - min(ys), 1 - margin - max(ys))
    phase = [rng.uniform(0, 2 * math.pi) for _ in range(4)]
    offset = rng.uniform(0.012, 0.02)
    angle = rng.uniform(0, 2 * math.pi)
    drawn = []
    for p in range(passes):
        dx, dy = p * offset * math.cos(angle), p * offset * math.sin(angle)
        for stroke in shaped:
            pts = []
            for i, (x, y) in enumerate(stroke):
                wx = wobble * math.sin(0.35 * i + phase[0]) + 0.5 * wobble * math.sin(0.9 * i + phase[1])
                wy = wobble * math.sin(0.3 * i + phase[2]) + 0.5 * wobble * math.sin(0.8 * i + phase[3])
                pts.append([round(min(1, max(0, x + cx + dx + wx)), 4), round(min(1, max(0, y + cy + dy + wy)), 4)])
            drawn.append(pts)
    return drawn


def make() -> list[dict]:
    rng = random.Random(SEED)
    drawings = []
    for style, (label, strokes) in TEMPLATES.items():
        for _ in range(VARIANTS):
            drawings.append({"label": label, "style": style, "strokes": vary(strokes, rng)})
    return drawings


if __name__ == "__main__":
    drawings = make()
    OUT.write_text(json.dumps(drawings, separators=(",", ":")) + "\n")
    print(f"{len(drawings)} drawings, {sum(len(s) for d in drawings for s in d['strokes'])} pen points -> {OUT}")
