"""Every rule of every aggregator's config (``check`` of the dataclass its module declares), at
its boundaries, with the exact one-line message; no Hydra, no data (fast enough for mutation
testing of the aggregator modules)."""

from types import SimpleNamespace

import pytest

from fedca.aggregators.base import AggConfig
from fedca.aggregators.composite import CompositeAggConfig
from fedca.aggregators.fedatt import FedAttAggConfig
from fedca.aggregators.fedfast import FedFastAggConfig
from fedca.aggregators.fedper import FedPerAggConfig
from fedca.aggregators.gpfedrec import GPFedRecAggConfig
from fedca.aggregators.perfedrec import PerFedRecAggConfig
from fedca.aggregators.pfedgraph import PFedGraphAggConfig
from fedca.errors import FedcaError


def _run(optimizer="adam", mlp_layers=(32, 16, 8, 1), ratio=1.0):
    model = SimpleNamespace(latent_dim=16, mlp_layers=list(mlp_layers), name="ncf", optimizer=optimizer)
    return SimpleNamespace(model=model, clients_sample_ratio=ratio)


def _range(key, value, rule):
    return f"{key}={value!r} is out of range: {rule}"


def _choice(key, value, allowed):
    return f"{key}={value!r} is not a known choice; use one of: {', '.join(map(str, allowed))}"


ACCEPTED = [
    (AggConfig, {"weighting": "uniform"}, {}), (AggConfig, {"weighting": "samples"}, {}),
    (CompositeAggConfig, {}, {}),
    (CompositeAggConfig, {"w_sim": 0.0, "w_comp": 0.0, "comp_sign": -1, "comp_metric": "svd",
                          "pca_sign_rule": "components", "k_principal": 1, "agg_clients_ratio": 1.0,
                          "interpolation": 0.0}, {}),
    (CompositeAggConfig, {"k_principal": 16, "interpolation": 1.0}, {}),
    (FedPerAggConfig, {"personal_layers": 0}, {}), (FedPerAggConfig, {"personal_layers": 3}, {}),
    (FedPerAggConfig, {"personal_layers": 7}, {"mlp_layers": ()}),  # FCF: no MLP layer to bound it
    (FedAttAggConfig, {"noise": 0.0, "att_norm": "fro"}, {}),
    (PFedGraphAggConfig, {"similarity": "mlp", "lam": 0.0, "reg_sign": 1}, {"optimizer": "sgd"}),
    (GPFedRecAggConfig, {}, {"optimizer": "sgd"}), (GPFedRecAggConfig, {"reg": 0.0}, {}),
    (GPFedRecAggConfig, {"similarity": "euclidean", "neighborhood_size": 0, "neighborhood_threshold": 0.0,
                         "mp_layers": 64}, {"optimizer": "sgd"}),
    (FedFastAggConfig, {"delegates_ratio": 1.0, "clusters": 0, "gamma0": 0.0, "gamma_decay": 0.0}, {}),
    (FedFastAggConfig, {"gamma_decay": 1.0}, {}),
    (PerFedRecAggConfig, {"clusters": 1, "cluster_on": "trained_items", "sampling": "stratified",
                          "cluster_start_round": 1}, {}),
]


@pytest.mark.parametrize("config,knobs,run", ACCEPTED)
def test_settings_inside_every_range_pass(config, knobs, run):
    config(name="x", **knobs).check(_run(**run))


REFUSED = [
    (AggConfig, {"weighting": "size"}, {}, _choice("agg.weighting", "size", ("samples", "uniform"))),
    (CompositeAggConfig, {"weighting": "size"}, {}, _choice("agg.weighting", "size", ("samples", "uniform"))),
    (CompositeAggConfig, {"w_sim": -0.1}, {}, _range("agg.w_sim", -0.1, "must be >= 0")),
    (CompositeAggConfig, {"w_comp": -0.1}, {}, _range("agg.w_comp", -0.1, "must be >= 0")),
    (CompositeAggConfig, {"alpha": -1.0}, {}, _range("agg.alpha", -1.0, "must be >= 0")),
    (CompositeAggConfig, {"beta": -1.0}, {}, _range("agg.beta", -1.0, "must be >= 0")),
    (CompositeAggConfig, {"comp_sign": 0}, {}, _choice("agg.comp_sign", 0, (1, -1))),
    (CompositeAggConfig, {"comp_metric": "l2"}, {}, _choice("agg.comp_metric", "l2", ("greedy_signed", "svd"))),
    (CompositeAggConfig, {"pca_sign_rule": "none"}, {}, _choice("agg.pca_sign_rule", "none", ("scores", "components"))),
    (CompositeAggConfig, {"k_principal": 0}, {}, _range("agg.k_principal", 0, "must be >= 1")),
    (CompositeAggConfig, {"k_principal": 17}, {}, _range("agg.k_principal", 17, "must be in [1, model.latent_dim=16]")),
    (CompositeAggConfig, {"agg_clients_ratio": 0.0}, {}, _range("agg.agg_clients_ratio", 0.0, "must be in (0, 1]")),
    (CompositeAggConfig, {"agg_clients_ratio": 1.5}, {}, _range("agg.agg_clients_ratio", 1.5, "must be in (0, 1]")),
    (CompositeAggConfig, {"interpolation": -0.01}, {}, _range("agg.interpolation", -0.01, "must be in [0, 1]")),
    (CompositeAggConfig, {"interpolation": 1.01}, {}, _range("agg.interpolation", 1.01, "must be in [0, 1]")),
    (FedPerAggConfig, {"personal_layers": -1}, {}, _range("agg.personal_layers", -1, "must be >= 0")),
    (FedPerAggConfig, {"personal_layers": 4}, {}, _range(
        "agg.personal_layers", 4, "the MLP of model=ncf has 3 layers; at most 3 can be personal")),
    (FedAttAggConfig, {"step_size": 0.0}, {}, _range("agg.step_size", 0.0, "must be > 0")),
    (FedAttAggConfig, {"noise": -0.5}, {}, _range("agg.noise", -0.5, "must be >= 0")),
    (FedAttAggConfig, {"att_norm": "max"}, {}, _choice("agg.att_norm", "max", ("spectral", "fro"))),
    (PFedGraphAggConfig, {"alpha": 0.0}, {}, _range("agg.alpha", 0.0, "must be > 0")),
    (PFedGraphAggConfig, {"similarity": "items"}, {}, _choice("agg.similarity", "items", ("all", "mlp"))),
    (PFedGraphAggConfig, {"lam": -0.1}, {}, _range("agg.lam", -0.1, "must be >= 0")),
    (PFedGraphAggConfig, {"reg_sign": 0}, {}, _choice("agg.reg_sign", 0, (1, -1))),
    (GPFedRecAggConfig, {"similarity": "jaccard"}, {"optimizer": "sgd"},
     _choice("agg.similarity", "jaccard", ("official", "cosine", "euclidean"))),
    (GPFedRecAggConfig, {"neighborhood_size": -1}, {"optimizer": "sgd"}, _range("agg.neighborhood_size", -1, "must be >= 0")),
    (GPFedRecAggConfig, {"neighborhood_threshold": -0.1}, {"optimizer": "sgd"},
     _range("agg.neighborhood_threshold", -0.1, "must be >= 0")),
    (GPFedRecAggConfig, {"mp_layers": 0}, {"optimizer": "sgd"}, _range("agg.mp_layers", 0, "must be in [1, 64]")),
    (GPFedRecAggConfig, {"mp_layers": 65}, {"optimizer": "sgd"},
     _range("agg.mp_layers", 65, "must be in [1, 64]")),
    (GPFedRecAggConfig, {"reg": -1.0}, {"optimizer": "sgd"}, _range("agg.reg", -1.0, "must be >= 0")),
    (FedFastAggConfig, {"delegates_ratio": 0.0}, {}, _range("agg.delegates_ratio", 0.0, "must be in (0, 1]")),
    (FedFastAggConfig, {"clusters": -1}, {}, _range("agg.clusters", -1, "must be >= 0")),
    (FedFastAggConfig, {"gamma0": -0.1}, {}, _range("agg.gamma0", -0.1, "must be >= 0")),
    (FedFastAggConfig, {"gamma_decay": -0.1}, {}, _range("agg.gamma_decay", -0.1, "must be in [0, 1]")),
    (FedFastAggConfig, {"gamma_decay": 1.1}, {}, _range("agg.gamma_decay", 1.1, "must be in [0, 1]")),
    (FedFastAggConfig, {}, {"ratio": 0.5}, _range(
        "clients_sample_ratio", 0.5, "FedFast picks its own delegates; set agg.delegates_ratio instead")),
    (PerFedRecAggConfig, {"clusters": 0}, {}, _range("agg.clusters", 0, "must be >= 1")),
    (PerFedRecAggConfig, {"cluster_on": "items"}, {}, _choice("agg.cluster_on", "items", ("user", "trained_items"))),
    (PerFedRecAggConfig, {"sampling": "uniform"}, {}, _choice("agg.sampling", "uniform", ("code", "stratified"))),
    (PerFedRecAggConfig, {"cluster_start_round": 0}, {}, _range("agg.cluster_start_round", 0, "must be >= 1")),
]


@pytest.mark.parametrize("config,knobs,run,message", REFUSED)
def test_each_rule_refuses_with_its_one_line(config, knobs, run, message):
    with pytest.raises(FedcaError) as caught:
        config(name="x", **knobs).check(_run(**run))
    assert str(caught.value) == message


def test_the_official_code_s_alpha_and_beta_are_the_scheduled_w_comp_and_w_sim():
    config = CompositeAggConfig(name="composite", alpha=0.7, beta=0)
    config.check(_run())
    assert config.scheduled_values() == {"w_sim": 0.0, "w_comp": 0.7, "interpolation": 0.9}
    assert all(isinstance(value, float) for value in config.scheduled_values().values())
    assert (config.w_comp, config.w_sim, config.alpha, config.beta) == (0.3, 0.3, 0.7, 0)  # the config stays as written
    untouched = CompositeAggConfig(name="composite", w_sim=0.25, w_comp=0.5, interpolation=0.8)
    untouched.check(_run())
    assert untouched.scheduled_values() == {"w_sim": 0.25, "w_comp": 0.5, "interpolation": 0.8}


def test_from_config_passes_the_fields_the_constructor_takes_and_the_mlp_widths():
    from dataclasses import dataclass

    from fedca.aggregators.base import Aggregator

    @dataclass
    class ProbeConfig(AggConfig):
        strength: float = 0.5
        unused: int = 3

    class Probe(Aggregator):
        name = "probe"
        config = ProbeConfig

        def __init__(self, *, strength, mlp_layers, weighting="samples"):
            self.received = {"strength": strength, "mlp_layers": mlp_layers, "weighting": weighting}

    built = Probe.from_config(ProbeConfig(name="probe", strength=0.25, weighting="uniform"), (32, 16, 1))
    assert built.received == {"strength": 0.25, "mlp_layers": [32, 16, 1], "weighting": "uniform"}


@pytest.mark.parametrize("config,knobs,term", [
    (PFedGraphAggConfig, {}, ("pull", "agg.lam")), (PFedGraphAggConfig, {"lam": 0.0}, None),
    (GPFedRecAggConfig, {}, ("proximal", "agg.reg")), (GPFedRecAggConfig, {"reg": 0.0}, None),
    (CompositeAggConfig, {}, None), (AggConfig, {}, None),
])
def test_the_local_term_each_config_adds(config, knobs, term):
    assert config(name="x", **knobs).local_term() == term
