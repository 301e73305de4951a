"""Where the conf/ tree is: beside the package in a source checkout, inside it when installed."""

from pathlib import Path


def conf_dir() -> Path:
    """Directory holding config.yaml and the config groups."""
    package_dir = Path(__file__).resolve().parents[1]
    for candidate in (package_dir.parent / "conf", package_dir / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml beside or inside {package_dir}")
