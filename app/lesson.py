"""The lesson's sections, in the order of the seed slides (Ayudantía 13).

Titles and summaries are English msgids marked with ``N_`` and translated when rendered.
A section links to its page once a router serves that path; until then the home page lists
it as coming soon, so the home page never shows a dead link.

Every section is a stop of the walk through the lesson, even where two sections share a page
(3 and 4 on /conv, 5 and 8 on /pipeline): "next" always goes to the section numbered one more,
so the walk visits 1, 2, …, 9 in the slides' order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.routing import Match

from cnnlab.app.i18n import N_


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

    @property
    def anchor(self) -> str:
        """The part of the page the section starts at ("" for the top)."""
        return urlsplit(self.href).fragment


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
        "/conv?image=chelsea&size=16&color=rgb",
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


def neighbours(app: FastAPI, number: int) -> tuple[Section | None, Section | None]:
    """The sections before and after section ``number`` in the walk through the lesson; None
    where there is none (the page links home instead). Only sections whose page is served count."""
    served = [s for s in SECTIONS if is_served(app, s.path)]
    before = [s for s in served if s.number < number]
    after = [s for s in served if s.number > number]
    return (before[-1] if before else None), (after[0] if after else None)


def nav_context(app: FastAPI, number: int) -> dict[str, Any]:
    """What ``_lesson_nav.html`` needs for section ``number``."""
    prev_section, next_section = neighbours(app, number)
    return {"here_section": section(number), "prev_section": prev_section, "next_section": next_section,
            "total": len(SECTIONS)}


def section(number: int) -> Section:
    return next(s for s in SECTIONS if s.number == number)


def is_served(app: FastAPI, path: str) -> bool:
    """True when a GET on ``path`` reaches a route of ``app`` (asked through routing itself,
    so routes inside included routers count)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)
