"""Ships the top-level templates/ and static/ folders inside the wheel, as app/templates and
app/static, so a plain `pip install .` runs anywhere. All other metadata is in pyproject.toml.

A source checkout or an editable install reads them from the repository root instead
(see app/templating.py).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEB_ASSETS = ("templates", "static")


class BuildPyWithWebAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in WEB_ASSETS:
            shutil.copytree(root / name, Path(self.build_lib) / "app" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithWebAssets})
