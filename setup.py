"""Build hook: the wheel carries the top-level conf/ tree as package data, fedca/_conf/.

The repository keeps conf/ beside the package (the design card's layout); a built package has
no such neighbour, so ``build_py`` copies the tree in and ``fedca.config.paths`` finds it with
importlib.resources. Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    """build_py, then conf/ copied to <build>/fedca/_conf/ (not for editable installs)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree(CONF, Path(self.build_lib) / "fedca" / "_conf", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))


setup(cmdclass={"build_py": BuildPyWithConf})
