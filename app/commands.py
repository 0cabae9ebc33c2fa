"""``cnnlab train`` and ``cnnlab notebook``: the engine and the pages' notebooks without a browser.

    cnnlab train --dataset digits [--epochs N] [--batch-size B] [--lr LR] [--optimizer sgd|momentum|adam]
                 [--seed S] [--save model.npz] [--onnx model.onnx]
    cnnlab notebook "/conv?preset=seed" [-o FILE] [--lang es|en]
    cnnlab notebook /train --weights model.npz [-o FILE] [--lang es|en]

``train`` runs core.train with the dataset's defaults (core.train.DEFAULTS, what /train starts
from), shows its progress on stderr and prints the held-out accuracy on stdout. ``notebook``
asks the app's own route ``GET /notebook/<page>?<query>`` in this process (one ASGI call, no
server), so the file is byte for byte the one the page's "Open as notebook" link gives.

Exit codes: 0 done; 1 the page refused the state, or a file could not be read or written;
2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import sys
import time
import zipfile
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

FAILED = 1
LOCALES = ("es", "en")  # cnnlab.app.i18n.LOCALES, without importing the web app for --help


def _fail(command: str, message: str) -> int:
    print(f"cnnlab {command}: error: {message}", file=sys.stderr, flush=True)
    return FAILED


# ============================================================================ cnnlab train


def train_parser() -> argparse.ArgumentParser:
    from cnnlab.core.train import DEFAULTS

    def default(key: str, sub: str | None = None) -> str:
        values = {name: (d[key][sub] if sub else d[key]) for name, d in DEFAULTS.items()}
        return ", ".join(f"{value} for {name}" for name, value in values.items())

    parser = argparse.ArgumentParser(
        prog="cnnlab train",
        description="Train the lab's tiny CNN on a dataset shipped with CNN Lab (what /train runs), "
                    "then print its held-out accuracy. Settings left out are the dataset's defaults "
                    "(core.train.DEFAULTS, the /train page's starting values).",
        epilog="Progress goes to stderr; stdout gets one line: `held-out accuracy: 0.9833 (353/359)`.")
    parser.add_argument("--dataset", required=True, choices=tuple(DEFAULTS),
                        help="8×8 digits (1,797 images, seconds) or an MNIST subset (10,000 images of 28×28)")
    parser.add_argument("--epochs", type=int, metavar="N", help=f"passes over the training set (default: {default('epochs')})")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help=f"images per optimizer step (default: {default('batch_size')})")
    parser.add_argument("--lr", type=float, metavar="LR", help=f"learning rate (default: {default('optimizer', 'lr')})")
    parser.add_argument("--optimizer", choices=("sgd", "momentum", "adam"),
                        help=f"(default: {default('optimizer', 'name')})")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="draws the initial weights and the order of the images, as /train's seed "
                             f"(default: {default('seed')}); the same settings and seed give the same model")
    parser.add_argument("--save", metavar="MODEL.npz", type=Path,
                        help="write the trained model (architecture and weights; cnnlab.load_model reads it)")
    parser.add_argument("--onnx", metavar="MODEL.onnx", type=Path,
                        help="write the trained model as an ONNX file too")
    return parser


class ProgressBar:
    """Training progress on ``stream``: on a terminal one line rewritten with ``\\r`` as batches
    go by; otherwise (a log, a pipe) one line per epoch."""

    WIDTH = 24
    INTERVAL = 0.1  # seconds between two redraws of the live line

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.drawn = 0.0
        self.last_width = 0

    def update(self, p: Any) -> None:  # p: core.train.Progress
        if p.kind == "epoch":
            held_out = "" if p.test_accuracy is None else f"  held-out {p.test_accuracy:7.2%}"
            self._line(f"epoch {p.epoch:>{len(str(p.epochs))}}/{p.epochs}  loss {p.epoch_loss:.4f}  "
                       f"train {p.train_accuracy:7.2%}{held_out}  {p.elapsed:6.1f} s", final=True)
        elif self.live and p.kind == "batch":
            now = time.monotonic()
            if now - self.drawn < self.INTERVAL and p.batch != p.batches_per_epoch:
                return
            self.drawn = now
            done = round(self.WIDTH * p.batch / p.batches_per_epoch)
            bar = "#" * done + "-" * (self.WIDTH - done)
            self._line(f"epoch {p.epoch}/{p.epochs} [{bar}] {p.batch}/{p.batches_per_epoch}  "
                       f"loss {p.epoch_loss:.4f}  train {p.train_accuracy:7.2%}", final=False)

    def _line(self, text: str, *, final: bool) -> None:
        if self.live:
            pad = " " * max(0, self.last_width - len(text))
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self.last_width = 0 if final else len(text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


def train(argv: Sequence[str]) -> int:
    """``cnnlab train``: returns the exit code."""
    parser = train_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error("--lr must be a positive number")
    if args.onnx is not None:
        try:
            from cnnlab.core.onnx_export import save_onnx
        except ImportError as exc:
            return _fail("train", f"--onnx needs the ONNX exporter: {exc}")

    from cnnlab.core.datasets import load
    from cnnlab.core.model import tiny_cnn
    from cnnlab.core.optim import make_optimizer
    from cnnlab.core.train import DEFAULTS, default_setup, evaluate
    from cnnlab.core.train import train as train_loop

    dataset = load(args.dataset)
    model, optimizer, settings = default_setup(dataset)
    d = DEFAULTS[args.dataset]
    if args.seed is not None:  # one seed for the weights and the order, as on /train
        model = tiny_cnn(input_shape=dataset.image_shape, classes=dataset.classes, **{**d["model"], "seed": args.seed})
        settings["seed"] = args.seed
    if args.optimizer is not None or args.lr is not None:
        optimizer = make_optimizer(args.optimizer or d["optimizer"]["name"],
                                   lr=args.lr if args.lr is not None else d["optimizer"]["lr"])
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size

    _, H, W = dataset.image_shape
    epochs = f"{settings['epochs']} epoch{'s' if settings['epochs'] != 1 else ''}"
    print(f"cnnlab train: {dataset.name}, {len(dataset.y_train):,} training and {len(dataset.y_test):,} held-out "
          f"images of {H}×{W}; {epochs} of batches of {settings['batch_size']}, {type(optimizer).__name__} "
          f"lr {optimizer.lr:g}, seed {settings['seed']}; {model.n_params:,} parameters", file=sys.stderr, flush=True)
    bar = ProgressBar(sys.stderr)
    try:
        for record in train_loop(model, dataset, optimizer, **settings):
            bar.update(record)
    except KeyboardInterrupt:
        print("\ncnnlab train: interrupted; nothing saved", file=sys.stderr, flush=True)
        return 130

    result = evaluate(model, dataset.x_test, dataset.y_test, classes=dataset.classes)
    correct = int(result.confusion.trace())
    print(f"held-out accuracy: {result.accuracy:.4f} ({correct}/{result.n})", flush=True)
    try:
        if args.save is not None:
            model.save(args.save)
            print(f"cnnlab train: saved the model to {args.save}", file=sys.stderr, flush=True)
        if args.onnx is not None:
            save_onnx(model, args.onnx)
            print(f"cnnlab train: saved the ONNX model to {args.onnx}", file=sys.stderr, flush=True)
    except OSError as exc:
        return _fail("train", f"cannot write {exc.filename}: {exc.strerror}")
    return 0


# ============================================================================ cnnlab notebook


def notebook_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab notebook",
        description="Write a lesson page's Jupyter notebook: the same file as the page's \"Open as "
                    "notebook\" link (GET /notebook/<page>?<query>, answered in this process).",
        epilog='Examples: cnnlab notebook "/conv?preset=seed&step=1" > conv.ipynb;  '
               "cnnlab notebook /train --weights model.npz -o model.ipynb (a model saved by cnnlab train --save)")
    parser.add_argument("page", metavar="PAGE",
                        help='the page\'s address as the browser shows it: "/conv?preset=seed", "/pool?size=3", '
                             "/train, … (a full http://… address works too)")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path, help="write the notebook here (default: stdout)")
    parser.add_argument("--lang", choices=LOCALES, default="es", help="language of the explanations (default: %(default)s)")
    parser.add_argument("--weights", metavar="MODEL.npz", type=Path,
                        help="only with /train: the notebook of this trained model (from cnnlab train --save "
                             "or the page's download) instead of the page's state")
    return parser


def page_target(page: str) -> tuple[str, str]:
    """("conv", "preset=seed") from "/conv?preset=seed", "conv?…", "http://host/conv?…" or "/notebook/conv?…"."""
    parts = urlsplit(page.strip())
    path = parts.path.strip("/").removeprefix("notebook/")
    # What a browser would send: non-ASCII and spaces escaped, escapes kept as they are.
    return quote(path, safe="/%"), quote(parts.query, safe="=&%+;/?:@,$!*'()~")


class _RefusalText(HTMLParser):
    """The text of the error page's ``data-refusal-message`` elements (templates/error.html):
    the message, and one line per refused value."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._depth = 0  # > 0 inside a data-refusal-message element
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif any(name == "data-refusal-message" for name, _ in attrs):
            self._depth = 1
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1
            if not self._depth:
                self.lines.append(" ".join("".join(self._text).split()))

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._text.append(data)


def refusal_message(status: int, headers: dict[str, str], body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("application/json"):
        try:
            return str(json.loads(text)["detail"])
        except (ValueError, KeyError, TypeError):
            pass
    parser = _RefusalText()
    parser.feed(text)
    lines = [line for line in parser.lines if line]
    return "\n".join(lines) if lines else f"the server answered {status}"


def page_notebook(page: str, query: str, lang: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of ``GET /notebook/<page>?<query>`` asked of the app in this process."""
    # Settings would otherwise make (and keep) a secret key on disk; nothing signed here leaves
    # this process.
    os.environ.setdefault("CNNLAB_SECRET_KEY", secrets.token_urlsafe(32))
    from cnnlab.app.inprocess import asgi_get
    from cnnlab.app.main import app
    from cnnlab.app.settings import settings_for

    cookie = f"{settings_for(app).locale_cookie}={lang}".encode("latin-1")
    return asyncio.run(asgi_get(app, f"/notebook/{page}", query, [(b"cookie", cookie)]))


def model_notebook_bytes(weights: Path, page_url: str, lang: str) -> bytes:
    """The notebook of a trained model (cnnlab.app.notebooks.train.model_notebook), as the route writes notebooks."""
    import nbformat

    from cnnlab.app.i18n import use_locale
    from cnnlab.app.notebooks.train import model_notebook
    from cnnlab.core.model import load_model

    what = "not a CNN Lab model (a .npz from cnnlab train --save, or model.save)"
    if not zipfile.is_zipfile(weights):  # np.load would try it as a pickle
        with open(weights, "rb"):  # a missing file: OSError, said as such
            raise ValueError(what)
    try:
        model = load_model(weights)
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what}: {exc}") from exc
    shape = tuple(model.input_shape or ())
    datasets = {(1, 8, 8): "digits", (1, 28, 28): "mnist"}
    if shape not in datasets:
        raise ValueError(f"this model reads images of shape {shape}: /train's models read 8×8 digits (1, 8, 8) "
                         "or MNIST (1, 28, 28)")
    with use_locale(lang):
        nb = model_notebook(model, datasets[shape], page_url)
    return nbformat.writes(nb).encode("utf-8")


def notebook(argv: Sequence[str]) -> int:
    """``cnnlab notebook``: returns the exit code."""
    parser = notebook_parser()
    args = parser.parse_args(argv)
    page, query = page_target(args.page)
    if not page:
        parser.error('name a page: "/conv?preset=seed", /pool, /activation, /pipeline, /practice, /train')
    if args.weights is not None:
        if page != "train":
            parser.error("--weights goes with /train (a trained model's notebook)")
        try:
            body = model_notebook_bytes(args.weights, f"/{page}" + (f"?{query}" if query else ""), args.lang)
        except OSError as exc:
            return _fail("notebook", f"cannot read {args.weights}: {exc.strerror or exc}")
        except ValueError as exc:
            return _fail("notebook", f"{args.weights}: {exc}")
    else:
        try:
            status, headers, body = page_notebook(page, query, args.lang)
        except Exception as exc:  # noqa: BLE001 (the app's 500: say what broke, in one line)
            return _fail("notebook", f"the notebook of /{page} could not be made ({type(exc).__name__}: {exc})")
        if status != 200:
            message = refusal_message(status, headers, body)
            if page == "train":  # the page's runs live in a server; here, a saved model is the way
                message += "\nA model saved by `cnnlab train --save model.npz`: cnnlab notebook /train --weights model.npz"
            return _fail("notebook", message)
    try:
        if args.output is None:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        else:
            args.output.write_bytes(body)
    except OSError as exc:
        return _fail("notebook", f"cannot write {exc.filename or 'the notebook'}: {exc.strerror}")
    return 0


COMMANDS = {"train": train, "notebook": notebook}
