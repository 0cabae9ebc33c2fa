"""The installed package, proved on a real wheel in a fresh virtual environment.

The wheel is built from a copy of the working tree (offline: no build isolation, no index), once
straight from the tree and once from its sdist (MANIFEST.in must bring the web assets along), and
the second is installed with pip into a new venv. The venv sees the system's site-packages (NumPy, FastAPI, …
need no download), where the project itself is installed too, editable: every check first makes
sure ``cnnlab`` comes from the venv's copy. Then, from an empty folder:

- the wheel holds one name, ``cnnlab`` (and its dist-info), with the templates, static files,
  datasets and catalogs inside it;
- ``import cnnlab, cnnlab.app.main, cnnlab.core.conv`` work, and generic names (``app``, ``core``)
  are not importable;
- the installed ``cnnlab`` command: --help, ``worker --help``, ``train``, and a server that
  answers /healthz, a page (templates) and a static file on the loopback address.

Why a copy: an in-tree build writes build/ into the repository and reuses it, so a module deleted
since an earlier build would still ship, and two builds at once would share one folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.serverproc import ROOT, child_env, free_port

IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache",
                                 ".hypothesis", ".ruff_cache", ".benchmarks", ".venv", "node_modules", "tests",
                                 "docs", "benchmarks", ".ci")
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
           "PIP_NO_CACHE_DIR": "1"}


PROBE = """
import importlib.metadata, json, sys
import cnnlab, cnnlab.app.main, cnnlab.core.conv
from cnnlab.app.templating import STATIC_DIR, TEMPLATES_DIR
missing = []
for name in ("app", "core"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        missing.append(name)
import cnnlab.app.commands, cnnlab.app.notebooks, cnnlab.core.onnx_export
# Every cnnlab module loaded (the app imports nearly all): the system's editable finder would
# quietly serve one the wheel lacks from the checkout.
loaded = [m.__file__ for name, m in sorted(sys.modules.items()) if name.split(".")[0] == "cnnlab"]
print(json.dumps({"files": [*loaded, str(TEMPLATES_DIR), str(STATIC_DIR)], "modules": len(loaded),
                  "version": importlib.metadata.version("cnnlab"), "prefix": sys.prefix,
                  "missing": missing, "seed": cnnlab.conv_step(cnnlab.SEED_INPUT, cnnlab.SEED_KERNEL, step=1).value}))
"""

RUNS = {
    "probe": ["python", "-c", PROBE],
    "help": ["cnnlab", "--help"],
    "worker_help": ["cnnlab", "worker", "--help"],
    "train": ["cnnlab", "train", "--dataset", "digits", "--epochs", "1"],
}


def check(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=180, **kwargs)
    assert result.returncode == 0, (args, result.returncode, result.stdout[-2000:], result.stderr[-4000:])
    return result


class Installed:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        source = folder / "src"
        shutil.copytree(ROOT, source, ignore=IGNORED)
        offline = {**os.environ, **OFFLINE}
        # Two routes to a wheel: pip from the tree (`pip install .`), and pip from the sdist (what
        # `python -m build` does, and pip with a source release): they must give the same files.
        check([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(folder / 'sdist')!r})"],
              cwd=source, env=offline)
        (self.sdist,) = (folder / "sdist").glob("cnnlab-*.tar.gz")
        wheels = {}
        for route, what in (("tree", source), ("sdist", self.sdist)):
            check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "-w", str(folder / route), str(what)], env=offline)
            (wheels[route],) = (folder / route).glob("cnnlab-*.whl")
        self.wheel, self.tree_wheel = wheels["sdist"], wheels["tree"]
        self.venv = folder / "venv"
        check([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(self.venv)])
        self.python = self.venv / "bin" / "python"
        # The system's pip, run by the venv's Python, installs into the venv. --ignore-installed:
        # the editable install it can see outside the venv is neither used nor touched.
        check([str(self.python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
               str(self.wheel)], env=offline)
        self.cwd = folder / "cwd"
        self.cwd.mkdir()
        self.env = child_env(folder, {})
        self.env.pop("PYTHONPATH", None)
        # Everything the tests run, started at once (each test then waits for its own).
        self.port = free_port()
        self.log = folder / "server.log"
        with open(self.log, "wb") as out:
            self.server = subprocess.Popen([str(self.venv / "bin" / "cnnlab"), "--port", str(self.port)],
                                           cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.runs = {name: self.start(args) for name, args in RUNS.items()}

    def start(self, args: list[str]) -> subprocess.Popen:
        """``args`` (a venv command, e.g. ["cnnlab", "--help"]) started in the empty folder."""
        return subprocess.Popen([str(self.venv / "bin" / args[0]), *args[1:]], cwd=self.cwd, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        for proc in [self.server, *self.runs.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    venv = Installed(tmp_path_factory.mktemp("wheel"))
    yield venv
    venv.close()


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (proc.args, proc.returncode, out[-2000:], err[-4000:])
    assert "Traceback" not in err, err
    return out


def test_the_wheel_holds_one_name_and_everything_the_app_reads(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    version = installed.wheel.name.split("-")[1]
    tops = {name.split("/")[0] for name in names}
    assert tops == {"cnnlab", f"cnnlab-{version}.dist-info"}, tops
    files = set(names)
    for needed in ("cnnlab/__init__.py", "cnnlab/__main__.py", "cnnlab/app/main.py", "cnnlab/app/commands.py",
                   "cnnlab/core/conv.py", "cnnlab/app/notebooks/cells.py",
                   "cnnlab/app/templates/base.html", "cnnlab/app/templates/error.html",
                   "cnnlab/app/static/css/app.css", "cnnlab/app/static/js/app.js",
                   "cnnlab/core/data/digits.npz", "cnnlab/core/data/mnist.npz",
                   "cnnlab/app/locale/es/LC_MESSAGES/messages.po", "cnnlab/app/locale/en/LC_MESSAGES/messages.po"):
        assert needed in files, needed
    # Every template and static file of the repository, and every module of app/ and core/.
    for folder, inside in (("templates", "cnnlab/app/templates"), ("static", "cnnlab/app/static"),
                           ("app", "cnnlab/app"), ("core", "cnnlab/core")):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".mo"):
                relative = path.relative_to(ROOT / folder).as_posix()
                if folder in ("app", "core") and path.suffix != ".py":
                    continue  # package data: listed in pyproject.toml, checked above
                assert f"{inside}/{relative}" in files, f"{folder}/{relative} is not in the wheel"
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert sorted(zipfile.ZipFile(installed.tree_wheel).namelist()) == sorted(names)
    entry_points = zipfile.ZipFile(installed.wheel).read(f"cnnlab-{version}.dist-info/entry_points.txt").decode()
    assert "cnnlab = cnnlab.app.cli:main" in entry_points




def test_the_venv_imports_the_wheels_cnnlab_and_no_generic_name(installed):
    probe = json.loads(finish(installed.runs["probe"]))
    venv = installed.venv.resolve()
    assert Path(probe["prefix"]).resolve() == venv
    for file in probe["files"]:  # not the editable checkout the system site-packages points at
        assert Path(file).resolve().is_relative_to(venv), file
    assert probe["modules"] > 50
    assert probe["missing"] == ["app", "core"]
    assert probe["seed"] == 87.0


def test_the_installed_command(installed):
    text = finish(installed.runs["help"])
    assert all(word in text for word in ("cnnlab worker", "cnnlab train", "cnnlab notebook")), text
    assert "--burst" in finish(installed.runs["worker_help"])
    assert finish(installed.runs["train"]).startswith("held-out accuracy: ")


def test_the_installed_server_answers_on_loopback(installed):
    proc, log = installed.server, installed.log
    base = f"http://127.0.0.1:{installed.port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        with urllib.request.urlopen(base + "/conv?lang=es", timeout=10) as response:  # templates + catalog
            page = response.read().decode()
        assert response.status == 200 and "<html" in page and 'lang="es"' in page
        with urllib.request.urlopen(base + "/static/css/app.css", timeout=10) as response:
            assert response.status == 200 and response.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
