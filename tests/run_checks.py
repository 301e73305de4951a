"""What every complete short run folder must hold, shared by the smoke runs on real and generated data."""

import json
from pathlib import Path

import pandas as pd


def assert_complete_two_round_folder(folder: Path) -> pd.DataFrame:
    """rounds.csv holds rounds 1 and 2 for val and test with HR@10 in [0, 1] and NDCG@10 <= HR@10,
    and status.json says complete; returns rounds.csv."""
    rounds = pd.read_csv(folder / "rounds.csv")
    assert sorted(rounds["round"].unique()) == [1, 2]
    assert set(rounds["split"]) == {"val", "test"}
    assert rounds["hr@10"].between(0, 1).all() and rounds["ndcg@10"].le(rounds["hr@10"]).all()
    assert json.loads((folder / "status.json").read_text())["status"] == "complete"
    return rounds
