"""The built wheel works outside the checkout, and the `all` extra really is all of them.

The wheel test builds the wheel, installs it into a fresh venv in a temp folder (torch first,
the CPU build, as the README says), and runs the installed `fedca` from a folder outside the
checkout: `--help`, then a one-round ML-100K run that must find its config tree inside the
installed package.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def extras() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["optional-dependencies"]


def test_the_all_extra_holds_every_other_extra():
    groups = extras()
    union = {req for name, reqs in groups.items() if name != "all" for req in reqs}
    assert set(groups["all"]) == union


def run(command: list, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
@pytest.mark.heavy
def test_the_wheel_installed_outside_the_checkout_runs(tmp_path, data_dir):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(FEDCA_DATA_DIR=str(data_dir), FEDCA_CACHE_DIR=str(tmp_path / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    work = tmp_path / "work"
    work.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(ROOT)],
        work, env, 600)
    wheel = next((tmp_path / "wheel").glob("fedca-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], work, env, 300)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", TORCH], work, env, 900)
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], work, env, 900)

    where = run([str(python), "-c", "import fedca, fedca.config.paths as p; print(fedca.__file__); print(p.conf_dir())"],
                work, env, 120).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), where  # not the checkout's package or conf/

    helped = run([str(venv / "bin" / "fedca"), "--help"], work, env, 120)
    assert "run" in helped.stdout and "data" in helped.stdout

    out = tmp_path / "run"
    run([str(venv / "bin" / "fedca"), "run", "dataset=ml100k", "rounds=1", "progress=false", f"hydra.run.dir={out}"],
        work, env, 600)
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "ml100k" and summary["final"]["round"] == 1
    assert not (ROOT / "fedca" / "_conf").exists()  # the build copies conf/ into its own folder only
