"""Config composition: every choice composes, names map as documented, ranges are checked."""

import pytest

from hydra import compose, initialize_config_dir

from fedca.config.compose import available, compose_run_config
from fedca.config.paths import conf_dir
from fedca.config.schema import register_configs
from fedca.aggregators.composite import CompositeAggConfig
from fedca.errors import FedcaError


@pytest.mark.parametrize("method", available("method"))
def test_every_method_preset_pairs_an_aggregator_with_its_backbone(method):
    cfg = compose_run_config([f"+method={method}"])
    expected = {"fedncf": ("fedavg", "ncf"), "fedper": ("fedper", "ncf"), "pfedrec": ("pfedrec", "pfedrec"),
                "gpfedrec": ("gpfedrec", "ncf"),
                "composite_sim_only": ("composite", "fcf"), "composite_comp_only": ("composite", "fcf")}
    assert (cfg.agg.name, cfg.model.name) == expected.get(method, (method, "fcf"))


def test_the_ablation_presets_zero_one_term_of_the_composite_weights():
    sim_only, comp_only = (compose_run_config([f"+method=composite_{term}_only"]).agg for term in ("sim", "comp"))
    assert sim_only.w_comp == 0.0 and sim_only.w_sim > 0
    assert comp_only.w_sim == 0.0 and comp_only.w_comp > 0


def test_official_alpha_beta_map_to_complementarity_and_similarity():
    cfg = compose_run_config(["agg=composite", "agg.alpha=0.7", "agg.beta=0.2"])
    assert isinstance(cfg.agg, CompositeAggConfig)
    scheduled = cfg.agg.scheduled_values()
    assert (scheduled["w_comp"], scheduled["w_sim"]) == (0.7, 0.2)
    assert (cfg.agg.alpha, cfg.agg.beta, cfg.agg.w_comp, cfg.agg.w_sim) == (0.7, 0.2, 0.3, 0.3)  # not rewritten
    from fedca.schedules.registry import build_schedule
    assert build_schedule(cfg).values(0) == {"w_sim": 0.2, "w_comp": 0.7, "interpolation": 0.9}


def test_ablation_configs_switch_off_one_term():
    assert compose_run_config(["agg=composite_sim_only"]).agg.w_comp == 0.0
    assert compose_run_config(["agg=composite_comp_only"]).agg.w_sim == 0.0


def test_composite_defaults_are_the_official_code_defaults():
    agg = compose_run_config([]).agg
    assert (agg.w_sim, agg.w_comp, agg.k_principal, agg.agg_clients_ratio, agg.interpolation) == (
        0.3, 0.3, 4, 0.1, 0.9)
    assert (agg.comp_sign, agg.comp_metric, agg.pca_sign_rule) == (1, "greedy_signed", "scores")


@pytest.mark.parametrize("override,key", [
    ("agg.agg_clients_ratio=0", "agg.agg_clients_ratio"), ("agg.interpolation=1.5", "agg.interpolation"),
    ("agg.k_principal=17", "agg.k_principal"), ("agg.comp_sign=2", "agg.comp_sign"),
    ("protocol.ks=[0]", "protocol.ks"), ("protocol.select_k=5", "protocol.select_k"), ("batch_size=0", "batch_size"),
    ("model.mlp_layers=[30,1]", "model.mlp_layers"), ("protocol.ties=random", "protocol.ties"),
    ("device=tpu", "device"), ("local_epochs=0", "local_epochs"), ("model.lr_embedding=0", "model.lr_embedding"),
])
def test_out_of_range_values_fail_naming_the_key(override, key):
    extra = ["model=ncf"] if override.startswith("model.mlp") else []
    with pytest.raises(FedcaError, match=key.replace(".", r"\.")):
        compose_run_config([override, *extra])


@pytest.mark.parametrize("overrides,key", [
    (["agg=pfedgraph", "agg.alpha=0"], "agg.alpha"), (["agg=pfedgraph", "agg.reg_sign=0"], "agg.reg_sign"),
    (["agg=pfedgraph", "agg.similarity=fc"], "agg.similarity"),
    (["agg=fedfast", "agg.delegates_ratio=0"], "agg.delegates_ratio"),
    (["agg=fedfast", "clients_sample_ratio=0.5"], "clients_sample_ratio"),
    (["agg=perfedrec", "agg.clusters=0"], "agg.clusters"), (["agg=perfedrec", "agg.cluster_on=items"], "agg.cluster_on"),
    (["model=pfedrec", "agg=fedavg"], "agg.name"), (["model=pfedrec", "agg=pfedrec", "model.item_lr_eta=-1"],
                                                    "model.item_lr_eta"),
    (["model.optimizer=rmsprop"], "model.optimizer"), (["model.local_epochs=0"], "model.local_epochs"),
    (["kernel=fast"], "kernel"), (["device=cuda", "kernel=numba"], "kernel"),
    (["model=pfedrec", "agg=pfedrec", "kernel=numba"], "kernel"),
    (["agg=fedper", "model=ncf", "agg.personal_layers=4"], "agg.personal_layers"),  # NCF's MLP has 3 layers
])
def test_baseline_settings_out_of_range_fail_naming_the_key(overrides, key):
    with pytest.raises(FedcaError, match=key.replace(".", r"\.")):
        compose_run_config(overrides)


def test_fedper_may_make_every_ncf_layer_personal_but_no_more():
    assert compose_run_config(["agg=fedper", "model=ncf", "agg.personal_layers=3"]).agg.personal_layers == 3


def test_pfedrec_backbone_trains_one_epoch_whatever_the_top_level_says():
    from fedca.run import simulation_settings
    cfg = compose_run_config(["model=pfedrec", "agg=pfedrec", "local_epochs=10"])
    local = simulation_settings(cfg).local
    assert (local.epochs, local.optimizer, local.item_lr_eta) == (1, "alternating_sgd", 80.0)


def test_unknown_key_and_wrong_type_fail_with_one_line():
    for override in ("agg.nope=1", "rounds=many"):
        with pytest.raises(FedcaError) as info:
            compose_run_config([override])
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("preset", [p.stem for p in (conf_dir() / "experiment").glob("*.yaml")])
def test_experiment_presets_compose_and_name_their_seeds(preset):
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["seed"] == "0,1,2"
    for group in ("dataset", "model", "agg"):
        for choice in str(params.get(group, getattr(cfg, group).name)).split(","):
            assert choice in available(group) or choice == getattr(cfg, group).name
    assert compose_run_config([f"+experiment={preset}"]).rounds >= 1
