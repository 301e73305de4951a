"""GPFedRec against a transcription of its official code (tests/oracle.py): whole rounds of the
engine (plain SGD with the proximal term) against the per-client loop on real data, a run, and
the settings it refuses. The server step alone: tests/test_math_gpfedrec.py."""

import json

import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.errors import FedcaError
from fedca.run import run

from oracle import OracleSettings
from test_engine_exactness import _assert_same_losses_and_epochs, _engine_and_oracle, _max_abs_difference

@pytest.fixture(scope="module")
def slice_20(real_data_env):
    cfg = compose_run_config(["dataset=ml100k"])
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(20)


def _oracle_settings(cfg, num_items: int) -> OracleSettings:
    model, agg = cfg.model, cfg.agg
    return OracleSettings(
        epochs=model.local_epochs, batch_size=cfg.batch_size, lr_embedding=model.lr_embedding,
        lr_structure=model.lr_structure, weight_decay=0.0, early_stop=False, threshold=0.0,
        mlp_layers=list(model.mlp_layers) if model.name == "ncf" else [], agg="gpfedrec", weighting=agg.weighting,
        optimizer="sgd", lr_user=model.lr_user,
        item_lr=model.lr_embedding * num_items * model.item_lr_eta + model.item_lr_offset,  # the official rule
        reg=agg.reg, similarity=agg.similarity, neighborhood_size=agg.neighborhood_size,
        neighborhood_threshold=agg.neighborhood_threshold, mp_layers=agg.mp_layers)


# float64, 3 rounds of 20 clients. Rounding: batched GEMMs against nn.Linear per client, the
# proximal step taken apart from the BCE step (two subtractions instead of one), and its
# closed-form decay (1 - c)^s of the rows a client never touches against s repeated steps.
# The FCF case uses moderate rates: at GPFedRec's item rate (lr * I * 80) FCF's dynamics are
# chaotic (parameters move by ~46 in two rounds) and round 1's 4e-14 gap grows to 1e-7 by round
# 3 (NCF at the same rate stays at ~4e-15). Measured: 2.2e-15 (official), 4.3e-14 (half the
# clients, two epochs, batches of 40), 4.9e-15 (FCF, top-k). Bound ~10x the largest.
BOUND = 5e-13
LOSS_BOUND = 2e-15  # the round's mean running-average BCE (values ~0.6); measured <= 2.3e-16


@pytest.mark.parametrize("extra", [[], ["clients_sample_ratio=0.5", "model.local_epochs=2", "batch_size=40"],
                                   ["model=fcf", "model.optimizer=sgd", "model.lr_user=0.5", "model.lr_embedding=0.05",
                                    "model.item_lr_eta=0.5", "model.item_lr_offset=-0.01", "model.lr_structure=0.1",
                                    "model.weight_decay=0", "agg.neighborhood_size=3", "agg.reg=3.0",
                                    "agg.similarity=cosine", "agg.mp_layers=2", "model.local_epochs=2"]],
                         ids=["official", "half_the_clients", "fcf_topk"])
def test_rounds_equal_the_official_per_client_loop(slice_20, monkeypatch, extra):
    cfg = compose_run_config(["+method=gpfedrec", "rounds=3", *extra])
    outcome = _engine_and_oracle(slice_20, cfg, monkeypatch, oracle_settings=_oracle_settings(cfg, slice_20.num_items))
    assert _max_abs_difference(outcome.start, outcome.engine) > 1e-2
    assert _max_abs_difference(outcome.engine, outcome.oracle) <= BOUND
    _assert_same_losses_and_epochs(outcome, LOSS_BOUND)


def test_two_round_run_writes_the_graph_statistics(real_data_env, tmp_path):
    summary = run(compose_run_config(["+method=gpfedrec", "rounds=2", "progress=false"]), tmp_path)
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert {"agg_w_self", "agg_w_entropy", "agg_global_change"} <= set(rounds.columns)
    assert rounds["hr@10"].between(0, 1).all()
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "complete"
    assert summary["agg"] == "gpfedrec"


@pytest.mark.parametrize("overrides,key", [
    (["agg=gpfedrec"], "model.optimizer"),
    (["+method=gpfedrec", "model.optimizer=adam", "model.item_lr_offset=0"], "model.optimizer"),
    (["model.lr_user=1.0"], "model.lr_user"),
    (["model.item_lr_offset=0.5"], "model.item_lr_offset"),
    (["+method=gpfedrec", "model.item_lr_offset=-1e9"], "model.item_lr_offset"),
    (["+method=gpfedrec", "agg.mp_layers=0"], "agg.mp_layers"),
    (["+method=gpfedrec", "agg.similarity=jaccard"], "agg.similarity"),
    (["agg=pfedgraph", "model.optimizer=sgd"], "model.optimizer"),
])
def test_settings_it_cannot_train_are_refused_in_one_line(overrides, key):
    with pytest.raises(FedcaError) as caught:
        compose_run_config(overrides)
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_the_optimiser_refusal_names_the_term_the_switch_and_the_preset():
    with pytest.raises(FedcaError) as caught:
        compose_run_config(["agg=gpfedrec"])
    assert str(caught.value) == ("model.optimizer='adam' cannot train the proximal term that agg=gpfedrec adds to the "
                                 "local loss; use model.optimizer=sgd or agg.reg=0, or +method=gpfedrec")
    with pytest.raises(FedcaError) as caught:
        compose_run_config(["agg=pfedgraph", "model.optimizer=alternating_sgd"])
    assert str(caught.value) == ("model.optimizer='alternating_sgd' cannot train the pull term that agg=pfedgraph adds "
                                 "to the local loss; use model.optimizer=adam or agg.lam=0, or +method=pfedgraph")
