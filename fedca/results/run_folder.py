"""A run folder is the record of one run.

* ``config.yaml``: the composed, validated config;
* ``status.json``: ``running`` from the start, then ``complete``, ``failed`` (with the error)
  or ``interrupted``; written first and last, so an unfinished run is always marked;
* ``rounds.csv``: one tidy row per evaluated round and split (val, test) with the protocol
  fields, plus the training loss, timings, schedule values and aggregation statistics;
* ``summary.json``: the selected round (by ``protocol.select_by``), its val and test metrics,
  the best-test and final-round metrics, wall time and the protocol record.

Every file is replaced atomically, so a killed run never leaves a half-written file.
"""

import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from fedca.results.atomic import write_json, write_text


USER_METRICS = "per_user_test.csv"



def read_status(folder: Path) -> Optional[str]:
    """The ``status`` field of ``folder``'s status.json; None when the file is absent or unreadable."""
    try:
        return json.loads((Path(folder) / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

class RunFolder:
    """Writes the files of one run into ``path``."""

    def __init__(self, path: Path, run_id: str, protocol_columns: Dict[str, object]):
        self.path = Path(path)
        self.run_id = run_id
        self.protocol_columns = dict(protocol_columns)
        self.rows: List[dict] = []

    def write_status(self, status: str, **extra) -> None:
        write_json(self.path / "status.json", {"status": status, "run_id": self.run_id, **extra})

    def write_config(self, yaml_text: str) -> None:
        write_text(self.path / "config.yaml", yaml_text)

    def add_round(self, record: dict) -> None:
        """Append the rows of one round record (one per evaluated split) and rewrite rounds.csv."""
        common = {"run_id": self.run_id, "round": record["round"], "train_loss": record["train_loss"],
                  "local_epochs_mean": record["local_epochs_mean"], "seconds": record["seconds"],
                  "train_seconds": record["train_seconds"], "agg_seconds": record["agg_seconds"],
                  "eval_seconds": record["eval_seconds"]}
        common.update({f"schedule_{k}": v for k, v in record["schedule"].items()})
        common.update({f"agg_{k}": v for k, v in record["stats"].items()})
        common.update({f"privacy_{k}": v for k, v in record.get("privacy", {}).items()})
        for split in ("val", "test", "unseen_test"):
            if split in record:
                row = dict(common, split=split, **record[split])
                row.update({f"protocol_{k}": v for k, v in self.protocol_columns.items()})
                self.rows.append(row)
        buffer = io.StringIO()
        pd.DataFrame(self.rows).to_csv(buffer, index=False)
        write_text(self.path / "rounds.csv", buffer.getvalue())

    def write_user_metrics(self, round_number: int, clients, values: Dict[str, object]) -> None:
        """Write ``per_user_test.csv``: one row per client (``user``: its index in the data,
        ``clients`` [U]) with the per-user test metrics ``values`` ({name: [U]}) of round
        ``round_number`` (the selected round; ``fedca report --baseline`` pairs users by it)."""
        frame = pd.DataFrame({"round": round_number, "user": clients.tolist(),
                              **{name: per_user.tolist() for name, per_user in values.items()}})
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        write_text(self.path / USER_METRICS, buffer.getvalue())

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)


def select_rounds(rows: List[dict], select_by: str, metric: str) -> Optional[dict]:
    """Pick rounds from the tidy rows: the one the protocol selects (best ``metric`` on
    ``select_by``'s split, the latest among equals, as the official ``>=`` rule), the best-test
    round and the final round, each with its val and test metrics."""
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    metric_columns = [c for c in frame.columns if c.startswith(("hr@", "ndcg@"))]
    wide = frame.pivot_table(index="round", columns="split", values=metric_columns, aggfunc="first")

    splits = [split for split in ("val", "test", "unseen_test") if split in set(frame["split"])]

    def at(round_number: int) -> dict:
        values = {split: {m: float(wide.loc[round_number, (m, split)]) for m in metric_columns}
                  for split in splits}
        return {"round": int(round_number),
                **{split: scores for split, scores in values.items() if not any(map(math.isnan, scores.values()))}}

    def best(split: str) -> int:
        values = wide[(metric, split)]
        return int(values[values == values.max()].index.max())

    return {"selected": at(best(select_by)), "best_test": at(best("test")), "final": at(int(wide.index.max()))}
