"""The lesson's sections, in the order of the seed slides (Ayudantía 13).

Titles and summaries are English msgids marked with ``N_`` and translated when rendered.
A section links to its page once a router serves that path; until then the home page lists
it as coming soon, so the home page never shows a dead link.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.routing import Match

from app.i18n import N_


@dataclass(frozen=True)
class Section:
    number: int
    slug: str
    title: str
    summary: str
    href: str

    @property
    def path(self) -> str:
        return urlsplit(self.href).path


SECTIONS: tuple[Section, ...] = (
    Section(
        1,
        "grid",
        N_("What are they? Grid-shaped data"),
        N_("An image is a grid of numbers: point at any pixel to see its value; a colour image is three stacked grids."),
        "/grid",
    ),
    Section(
        2,
        "local",
        N_("Convolutional layer"),
        N_("Local connectivity: how many weights a dense layer would need compared with a convolutional layer, for the same image."),
        "/local",
    ),
    Section(
        3,
        "kernels",
        N_("Kernels and the worked example"),
        N_("The 5×5 matrix and 3×3 kernel from the slides, one position at a time: 35·(−2) + 40·(−1) + … = 78."),
        "/conv?preset=seed",
    ),
    Section(
        4,
        "convolution",
        N_("The convolution operation: height × width × depth"),
        N_("The dot product at every position of your own image, with stride, padding and dilation, and the output-size formula with your numbers."),
        "/conv",
    ),
    Section(
        5,
        "backprop",
        N_("Parameter sharing and backpropagation"),
        N_("The same weights at every position: the gradient of one kernel weight, written out as a sum over positions."),
        "/pipeline#backprop",
    ),
    Section(
        6,
        "pooling",
        N_("Pooling"),
        N_("Max, average and global average pooling: the window, the stride and which cell wins."),
        "/pool",
    ),
    Section(
        7,
        "dense",
        N_("Fully connected layer and ReLU"),
        N_("Flatten, dense layer and ReLU with the real numbers, and the ReLU curve with the current values on it."),
        "/activation",
    ),
    Section(
        8,
        "loss",
        N_("Loss functions: softmax and cross-entropy"),
        N_("Softmax turns scores into probabilities; cross-entropy H(p, q) = −Σ p(x) log q(x) compares them with the one-hot label."),
        "/pipeline#loss",
    ),
    Section(
        9,
        "training",
        N_("Training: SGD and Adam"),
        N_("Train a small CNN on real handwritten digits, live; one optimizer update written out; SGD and Adam on the same seed."),
        "/train",
    ),
)


def neighbours(app: FastAPI, numbers: tuple[int, ...]) -> tuple[Section | None, Section | None]:
    """The previous and next page of the lesson for the page holding sections ``numbers``;
    None where there is none (link home instead).

    Pages are ordered by their first section and only served ones count, so following "next"
    from the home page visits every page exactly once (a page holding sections 5 and 8 comes
    after 4 and before 6). Each neighbour is given as its first section.
    """
    firsts: list[Section] = []
    for s in SECTIONS:
        if all(s.path != f.path for f in firsts) and is_served(app, s.path):
            firsts.append(s)
    here = next(s for s in SECTIONS if s.number == min(numbers)).path
    paths = [s.path for s in firsts]
    if here not in paths:
        return None, None
    i = paths.index(here)
    return (firsts[i - 1] if i > 0 else None), (firsts[i + 1] if i + 1 < len(firsts) else None)


def is_served(app: FastAPI, path: str) -> bool:
    """True when a GET on ``path`` reaches a route of ``app`` (asked through routing itself,
    so routes inside included routers count)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)
