"""Installs the repository's folders under one package name, `cnnlab`, and ships the top-level
templates/ and static/ folders inside the wheel. All other metadata is in pyproject.toml.

    cnnlab/  ->  cnnlab          the library's front door (cnnlab/__init__.py) and `python -m cnnlab`
    core/    ->  cnnlab.core     the NumPy engine
    app/     ->  cnnlab.app      the web app; templates/ and static/ go to cnnlab/app/templates, …/static

So an installed CNN Lab puts one name into site-packages, never generic ones such as `app` or
`core`. A source checkout or an editable install reads templates/ and static/ from the repository
root instead (see app/templating.py).
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

FOLDERS = {"cnnlab": "cnnlab", "cnnlab.app": "app", "cnnlab.core": "core"}
WEB_ASSETS = ("templates", "static")


def packages() -> list[str]:
    found = ["cnnlab"]
    for name in ("app", "core"):
        found += [f"cnnlab.{name}"] + [f"cnnlab.{name}.{sub}" for sub in find_packages(name)]
    return found


class BuildPyWithWebAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in WEB_ASSETS:
            shutil.copytree(root / name, Path(self.build_lib) / "cnnlab" / "app" / name, dirs_exist_ok=True)


setup(packages=packages(), package_dir=FOLDERS, cmdclass={"build_py": BuildPyWithWebAssets})
