"""The ledger: what a leaderboard keeps once a step is done, small enough to commit.

A ledger folder (``LeaderboardConfig.ledger``) holds

* ``preset.json``: the preset it was made with; a later pipeline whose recorded fields
  (``LeaderboardConfig.recorded``), method entries or protocol overrides differ is refused;
* ``tuned.csv``: one row per searched dataset x method: the best trial's ``agg``, ``model``,
  the sampler's overrides (``params``, space-separated), the objective, its value and the
  number of trials;
* ``results.csv``: one row per rerun: ``column`` (protocol label), ``dataset``, ``method``,
  ``seed``, then ``fedca report``'s per-run columns (selected-round, best-test and final
  metrics, wall time) without the machine's run folder;
* ``per_user/<column>/<dataset>.csv``: ``user`` and one column per method: each user's test
  HR@10 of the selected round, averaged over the seeds (the per-user side of the significance).

A cell's reruns under one protocol are recorded together once every seed is complete, so
the ledger never holds part of a cell. Writes are atomic and serialised by a lock.
"""

import json
import threading
from pathlib import Path
from typing import Dict, Optional

import pandas as pd

from fedca.errors import FedcaError
from fedca.results.atomic import write_text, write_text_if_changed

PER_USER_METRIC = "hr@10"  # the per-user column kept: the significance tests' metric (test_hr@10)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return pd.DataFrame()
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise FedcaError(f"{path}: cannot read the ledger ({error})") from None


class Ledger:
    """The ledger folder of one leaderboard (module docstring)."""

    def __init__(self, folder: Path, preset: dict):
        self.folder = Path(folder)
        self.lock = threading.Lock()
        path = self.folder / "preset.json"
        if path.is_file():
            self._check_agrees(json.loads(path.read_text()), preset)
        write_text_if_changed(path, json.dumps(preset, indent=2) + "\n")  # in preset order: the tables keep it
        self.preset = preset

    @classmethod
    def read(cls, folder: Path) -> "Ledger":
        """The ledger in ``folder`` as recorded, for reading only (nothing is written)."""
        ledger = cls.__new__(cls)
        ledger.folder, ledger.lock = Path(folder), threading.Lock()
        try:
            ledger.preset = json.loads((ledger.folder / "preset.json").read_text())
        except (OSError, ValueError) as error:
            raise FedcaError(f"{folder}: no readable ledger ({error})") from None
        return ledger

    def _check_agrees(self, old: dict, new: dict) -> None:
        clashes = [key for key in new["recorded"] if old.get("recorded", {}).get(key) != new["recorded"][key]]
        clashes += [f"methods.{label}" for label in set(old["methods"]) & set(new["methods"])
                    if old["methods"][label] != new["methods"][label]]
        clashes += [f"protocols.{label}" for label in set(old["protocols"]) & set(new["protocols"])
                    if old["protocols"][label] != new["protocols"][label]]
        if clashes:
            raise FedcaError(f"{self.folder} was recorded with other {', '.join(sorted(clashes))}; give another "
                             f"ledger=... (and out=...) or remove that folder")

    # tuned configurations
    def tuned(self) -> pd.DataFrame:
        return _read_csv(self.folder / "tuned.csv")

    def best(self, dataset: str, method: str) -> Optional[dict]:
        tuned = self.tuned()
        if tuned.empty:
            return None
        rows = tuned[(tuned["dataset"] == dataset) & (tuned["method"] == method)]
        if rows.empty:
            return None
        row = rows.iloc[0]
        params = row["params"] if isinstance(row["params"], str) else ""
        return {"agg": row["agg"], "model": row["model"], "params": params.split(), "objective": row["objective"],
                "value": float(row["value"]), "trials": int(row["trials"])}

    def record_best(self, dataset: str, method: str, best: dict) -> None:
        with self.lock:
            row = {"dataset": dataset, "method": method, "agg": best["agg"], "model": best["model"],
                   "params": " ".join(best["params"]), "objective": best["objective"], "value": best["value"],
                   "trials": best["trials"]}
            tuned = self.tuned()
            if not tuned.empty:
                tuned = tuned[~((tuned["dataset"] == dataset) & (tuned["method"] == method))]
            write_text(self.folder / "tuned.csv", pd.concat([tuned, pd.DataFrame([row])]).to_csv(index=False))

    # reruns
    def results(self) -> pd.DataFrame:
        return _read_csv(self.folder / "results.csv")

    def has_runs(self, column: str, dataset: str, method: str) -> bool:
        results = self.results()
        if results.empty:
            return False
        rows = results[(results["column"] == column) & (results["dataset"] == dataset)
                       & (results["method"] == method)]
        return sorted(rows["seed"].astype(int)) == sorted(self.preset["seeds"])

    def per_user(self, column: str, dataset: str) -> pd.DataFrame:
        """users x methods: the recorded per-user test HR@10 (mean over seeds), indexed by user."""
        frame = _read_csv(self.folder / "per_user" / column / f"{dataset}.csv")
        return frame.set_index("user") if not frame.empty else frame

    def record_runs(self, column: str, dataset: str, method: str, rows: pd.DataFrame,
                    per_user: Optional[pd.Series]) -> None:
        """Record one cell's reruns under ``column``: ``rows`` (one per seed, report columns) and
        ``per_user`` (test HR@10 by user, mean over the seeds; None when the runs saved none)."""
        with self.lock:
            labels = pd.DataFrame({"column": column, "dataset": dataset, "method": method}, index=rows.index)
            new = pd.concat([labels, rows.drop(columns=[c for c in ("column", "dataset", "method", "run_dir")
                                                        if c in rows])], axis=1)
            results = self.results()
            if not results.empty:
                results = results[~((results["column"] == column) & (results["dataset"] == dataset)
                                    & (results["method"] == method))]
            merged = pd.concat([results, new], ignore_index=True)
            if per_user is not None:
                table = self.per_user(column, dataset)
                table = per_user.rename(method).to_frame() if table.empty else \
                    table.drop(columns=[method], errors="ignore").join(per_user.rename(method), how="outer")
                write_text(self.folder / "per_user" / column / f"{dataset}.csv",
                           table.rename_axis("user").reset_index().to_csv(index=False))
            write_text(self.folder / "results.csv", merged.to_csv(index=False))

    def per_user_reader(self):
        """run key ``column/dataset/method/seed`` -> that cell's per-user values (mean over its
        seeds) or None: the ``per_user`` argument of ``compare_to_baseline`` over ledger rows."""
        cache: Dict[tuple, pd.DataFrame] = {}

        def read(key: str) -> Optional[pd.Series]:
            column, dataset, method, _ = key.split("/")
            if (column, dataset) not in cache:
                cache[column, dataset] = self.per_user(column, dataset)
            table = cache[column, dataset]
            return table[method] if method in table else None

        return read
