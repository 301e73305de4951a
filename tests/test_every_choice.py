"""Every config group choice composes and passes ``fedca.config.validate.validate`` without any
data: each YAML file of conf/<group>/ (found by listing the folders, so a new file is covered
without editing this test), with the few companion overrides some choices need."""

import importlib.util

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedca.config.paths import conf_dir
from fedca.config.schema import register_configs
from fedca.config.validate import validate
from fedca.errors import FedcaError

GROUPS = ("agg", "model", "schedule", "protocol", "dataset", "tracking")
PRESETS = ("method",)  # added with +method=NAME; a preset sets keys of the groups above

# Overrides a whole group needs with any of its choices, and why.
GROUP_COMPANIONS = {
    # every schedule but constant schedules the composite weights (validate: "it needs agg=composite");
    # composite is the default aggregator today, named here so the test does not rest on that
    "schedule": ["agg=composite"],
}
# Overrides one choice needs, and why.
CHOICE_COMPANIONS = {
    # dataset=csv is a user's own file: dataset.file is mandatory (???); naming it reads nothing
    ("dataset", "csv"): ["dataset.file=ratings.csv"],
    # PFedRec's backbone keeps a personal bias b_i in the MLP block, which every aggregator that
    # averages MLPs would share (validate: agg.name must keep MLPs private)
    ("model", "pfedrec"): ["agg=pfedrec"],
    # GPFedRec's proximal term is trained by plain SGD only; the default backbone uses Adam
    ("agg", "gpfedrec"): ["model.optimizer=sgd"],
}


def _choices():
    for group in GROUPS + PRESETS:
        for path in sorted((conf_dir() / group).glob("*.yaml")):
            yield pytest.param(group, path.stem, id=f"{group}={path.stem}")


def _compose(overrides):
    """(the group choices Hydra recorded, the composed config without its hydra node)."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra")
    return choices, cfg


@pytest.mark.parametrize("group,choice", list(_choices()))
def test_every_choice_composes_and_validates_without_data(group, choice, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("composing and validating a config must not look for data")

    monkeypatch.setattr("fedca.data.sources.ensure_file", no_data)
    monkeypatch.setattr("fedca.data.fed_data.ensure_file", no_data)
    prefix = "+" if group in PRESETS else ""
    overrides = [*GROUP_COMPANIONS.get(group, []), *CHOICE_COMPANIONS.get((group, choice), []),
                 f"{prefix}{group}={choice}"]
    choices, cfg = _compose(overrides)
    assert choices[group] == choice
    run_cfg = OmegaConf.to_object(cfg)
    if (group, choice) == ("tracking", "mlflow") and importlib.util.find_spec("mlflow") is None:
        with pytest.raises(FedcaError, match="mlflow extra"):
            validate(run_cfg)
        return
    assert validate(run_cfg) is run_cfg


def test_every_companion_names_a_choice_that_exists():
    """A companion left behind by a removed or renamed file would hide nothing; drop it with the file."""
    assert set(GROUP_COMPANIONS) <= set(GROUPS + PRESETS)
    for group, choice in CHOICE_COMPANIONS:
        assert (conf_dir() / group / f"{choice}.yaml").is_file(), (group, choice)
