"""Hydra callback: after a multirun, say which jobs did not complete and exit non-zero.

A failing job never stops the others (each writes its own ``status.json``); this callback
reads them once the sweep is over.
"""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from fedca.results.run_folder import read_status


def _status(job_dir: Path) -> str:
    return read_status(job_dir) or "missing"


class SweepStatus(Callback):
    """Prints one line naming the jobs that failed or were interrupted, then exits with code 2."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name)
        broken = [f"{job.name} ({_status(job)})" for job in jobs if _status(job) != "complete"]
        if broken:
            print(f"error: {len(broken)} of {len(jobs)} jobs did not complete: {', '.join(broken)}; "
                  f"the others' results are in {sweep_dir}", file=sys.stderr)
            sys.exit(2)
