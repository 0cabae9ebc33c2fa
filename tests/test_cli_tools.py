"""`cnnlab train` and `cnnlab notebook` (app/commands.py), run as real processes (`python -m cnnlab …`)
from an empty folder, as a person runs them.

- train prints the held-out accuracy of exactly the model it saves (cnnlab.evaluate agrees), the
  same model the engine trains in process with the dataset's defaults, and its ONNX file too;
- notebook writes the bytes the page's link serves (GET /notebook/<page>?<query>), in either
  language, and a refused state is the page's message on stderr with exit code 1;
- `cnnlab --help` names every subcommand, and each has its own --help.

The processes start together (one fixture), so the file costs about one start-up and a training.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

import cnnlab
from cnnlab.core.train import default_setup, train
from tests.serverproc import child_env

ACCURACY = re.compile(r"^held-out accuracy: (\d\.\d{4}) \((\d+)/(\d+)\)$")
REFUSED = "/conv?preset=seed&stride=abc"

COMMANDS = {
    "train": ["train", "--dataset", "digits", "--epochs", "1", "--save", "m.npz", "--onnx", "m.onnx"],
    "train_bad": ["train", "--dataset", "digits", "--epochs", "0"],
    "notebook_es": ["notebook", "/conv?preset=seed"],
    "notebook_en": ["notebook", "http://127.0.0.1:8000/conv?preset=seed&step=4", "--lang", "en", "-o", "en.ipynb"],
    "refused": ["notebook", REFUSED],
    "help": ["--help"],
    "train_help": ["train", "--help"],
    "notebook_help": ["notebook", "--help"],
}


class Runs:
    """Every command of COMMANDS started at once in ``folder``; ``runs["train"]`` waits for one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = child_env(folder, {})
        self.procs = {name: self._start(args) for name, args in COMMANDS.items()}
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def _start(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], cwd=self.folder, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, name: str, args: list[str]) -> subprocess.CompletedProcess:
        """One more command, after the ones it needs have finished."""
        self.procs[name] = self._start(args)
        return self[name]

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            proc = self.procs[name]
            out, err = proc.communicate(timeout=120)
            self.done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err.decode())
        return self.done[name]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def client():
    """The app in process, as the command asks it: without its lifespan (the training runner and
    the sweeper, which no notebook needs; conftest's client starts them, at a cost)."""
    from cnnlab.app.main import app
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    started = Runs(tmp_path_factory.mktemp("cli"))
    yield started
    started.close()


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.args, result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


# ---------------------------------------------------------------- cnnlab train ----------


def test_train_prints_the_held_out_accuracy_of_the_model_it_saves(runs):
    result = ok(runs["train"])
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    match = ACCURACY.match(lines[0])
    assert match, lines[0]
    shown, correct, n = match.group(1), int(match.group(2)), int(match.group(3))

    data = cnnlab.load_dataset("digits")
    model = cnnlab.load_model(runs.folder / "m.npz")
    result_now = cnnlab.evaluate(model, data.x_test, data.y_test)
    assert n == result_now.n == len(data.y_test)
    assert correct == int(np.trace(result_now.confusion))
    assert shown == f"{result_now.accuracy:.4f}"

    # The dataset's defaults (core.train.DEFAULTS), one epoch: the very model the engine trains here.
    same, optimizer, settings = default_setup(data)
    for _ in train(same, data, optimizer, **{**settings, "epochs": 1}):
        pass
    for (name, saved, _), (_, trained, _) in zip(model.parameters(), same.parameters(), strict=True):
        np.testing.assert_array_equal(saved, trained, err_msg=name)

    # Not a terminal: one progress line per epoch, no carriage returns.
    assert "\r" not in result.stderr
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1 "), result.stderr


def test_train_writes_an_onnx_file_that_answers_like_the_model(runs):
    import onnxruntime

    ok(runs["train"])
    data = cnnlab.load_dataset("digits")
    model = cnnlab.load_model(runs.folder / "m.npz")
    session = onnxruntime.InferenceSession(str(runs.folder / "m.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: np.ascontiguousarray(data.x_test, dtype=np.float32)})[0]
    np.testing.assert_allclose(logits, model.forward(data.x_test, train=False), rtol=1e-4, atol=1e-4)


def test_train_refuses_a_bad_setting_as_a_usage_error(runs):
    result = runs["train_bad"]
    assert result.returncode == 2 and "--epochs must be at least 1" in result.stderr, result.stderr
    assert result.stdout == b""


# ---------------------------------------------------------------- cnnlab notebook ----------


def test_notebook_is_byte_for_byte_the_pages_link(runs, client):
    result = ok(runs["notebook_es"])
    web = client.get("/notebook/conv?preset=seed")
    assert web.status_code == 200
    assert result.stdout == web.content
    nb = nbformat.reads(result.stdout.decode("utf-8"), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[-1].cell_type == "code"


def test_notebook_speaks_the_language_asked_and_takes_a_full_address(runs, client):
    result = ok(runs["notebook_en"])
    assert result.stdout == b""
    written = (runs.folder / "en.ipynb").read_bytes()
    client.cookies.set("cnnlab_lang", "en")
    english = client.get("/notebook/conv?preset=seed&step=4")
    assert english.status_code == 200 and written == english.content
    client.cookies.set("cnnlab_lang", "es")
    assert written != client.get("/notebook/conv?preset=seed&step=4").content  # the language did change it
    nbformat.validate(nbformat.reads(written.decode("utf-8"), as_version=4))


def test_a_refused_state_is_the_pages_message_and_exit_code_1(runs, client, html):
    result = runs["refused"]
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == b"" and "Traceback" not in result.stderr
    web = client.get("/notebook" + REFUSED)
    assert web.status_code == 422
    messages = [" ".join(node.get_text().split()) for node in html(web).select("[data-refusal-message]")]
    assert messages
    assert result.stderr.strip().splitlines() == [f"cnnlab notebook: error: {messages[0]}", *messages[1:]]


def test_a_trained_models_notebook_from_its_weights(runs):
    from cnnlab.app.i18n import use_locale
    from cnnlab.app.notebooks import train as train_notebook

    ok(runs["train"])
    result = ok(runs.run("from_weights", ["notebook", "/train", "--weights", "m.npz"]))
    with use_locale("es"):
        expected = train_notebook.model_notebook(cnnlab.load_model(runs.folder / "m.npz"), "digits", "/train")
    assert result.stdout.decode("utf-8") == nbformat.writes(expected)
    nbformat.validate(nbformat.reads(result.stdout.decode("utf-8"), as_version=4))


# ---------------------------------------------------------------- help ----------


def test_help_names_every_subcommand_and_each_has_its_own(runs):
    text = ok(runs["help"]).stdout.decode()
    for word in ("cnnlab worker", "cnnlab train", "cnnlab notebook", "--port"):
        assert word in text, text
    train_help = ok(runs["train_help"]).stdout.decode()
    assert "--dataset" in train_help and "--save" in train_help and "--onnx" in train_help
    notebook_help = ok(runs["notebook_help"]).stdout.decode()
    assert "--lang" in notebook_help and "--weights" in notebook_help and "-o" in notebook_help


def test_on_a_terminal_the_progress_is_one_line_rewritten():
    import io

    from cnnlab.app.commands import ProgressBar
    from cnnlab.core.train import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(screen)
    bar.INTERVAL = 0.0
    for batch in (1, 2, 3):
        bar.update(Progress("batch", 1, 2, batch, 3, batch, 0.5, 0.5, 0.75, 0.1))
    bar.update(Progress("epoch", 1, 2, 3, 3, 3, 0.5, 0.5, 0.75, 0.2, 0.4, 0.9))
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # only the epoch's line stays
    assert text.count("\r") == 4 and "[" + "#" * ProgressBar.WIDTH + "] 3/3" in text
    assert text.rstrip().rsplit("\r", 1)[1].startswith("epoch 1/2  loss 0.5000  train  75.00%  held-out  90.00%")
