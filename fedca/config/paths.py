"""Where the conf/ tree is: inside the installed package, or beside it in a source checkout.

A wheel carries the tree as package data ``fedca/_conf/`` (copied in at build time, see
setup.py); a source checkout (editable install, tests) uses the top-level ``conf/``.
"""

from importlib.resources import files
from pathlib import Path


def conf_dir() -> Path:
    """Directory holding config.yaml and the config groups."""
    packaged = Path(str(files("fedca") / "_conf"))
    checkout = Path(__file__).resolve().parents[2] / "conf"
    for candidate in (packaged, checkout):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in the package ({packaged}) or the checkout ({checkout})")
