"""One declaration per component: conf/ choice files set only what differs from their schema,
every constructor default is the declared one, and every field carries its documentation."""

import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from fedca.aggregators.registry import aggregator_classes
from fedca.config.fields import choices_of, doc_of, interval_of
from fedca.config.schema import register_configs
from fedca.models.backbones import BACKBONES
from fedca.schedules.registry import schedule_classes

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("agg", "model", "schedule", "protocol", "dataset")


def _choice_files():
    return [path for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def _schema_of(path: Path):
    """The ConfigStore node a choice file extends, or None when it extends another choice file."""
    refs = [item for item in yaml.safe_load(path.read_text()).get("defaults", [])
            if isinstance(item, str) and item.startswith("/schema/")]
    if not refs:
        return None
    register_configs()
    return ConfigStore.instance().load(refs[0].split("@")[0].lstrip("/") + ".yaml").node


@pytest.mark.parametrize("path", _choice_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_choice_file_sets_only_what_differs_from_its_declaration(path):
    schema = _schema_of(path)
    if schema is None:  # an ablation on top of another choice: what it sets differs from that choice
        parent = CONF / path.parent.name / f"{yaml.safe_load(path.read_text())['defaults'][0]}.yaml"
        schema = _schema_of(parent)
        assert schema is not None, f"{path} extends neither a schema nor a choice that does"
    restated = [key for key, value in yaml.safe_load(path.read_text()).items()
                if key not in ("defaults", "name") and key in schema
                and OmegaConf.to_container(OmegaConf.create({"v": schema[key]}))["v"] == value]
    assert not restated, f"{path} restates its declaration's defaults for {restated}"


def _declared_configs():
    return ([(f"agg/{name}", aggregator, aggregator.config) for name, aggregator in aggregator_classes().items()]
            + [(f"schedule/{name}", schedule, schedule.config) for name, schedule in schedule_classes().items()])


@pytest.mark.parametrize("label, component, config", _declared_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_constructor_default_is_the_declared_one(label, component, config):
    takes = inspect.signature(component.__init__).parameters
    declared = {item.name: item for item in fields(config)}
    for name, parameter in takes.items():
        if name in declared and parameter.default is not inspect.Parameter.empty:
            item = declared[name]
            default = item.default if item.default is not MISSING else item.default_factory()
            assert parameter.default == default, f"{label}: {name} defaults to {parameter.default!r} in the " \
                                                 f"constructor but {default!r} in {config.__name__}"


def _all_config_classes():
    classes = {aggregator.config for aggregator in aggregator_classes().values()}
    classes |= {schedule.config for schedule in schedule_classes().values()}
    classes |= {backbone.config for backbone in BACKBONES.values()}
    from fedca.config.schema import DatasetConfig, ProtocolConfig
    return sorted(classes | {DatasetConfig, ProtocolConfig}, key=lambda c: c.__name__)


@pytest.mark.parametrize("config", _all_config_classes(), ids=lambda c: c.__name__)
def test_every_declared_field_has_its_documentation(config):
    missing = [item.name for item in fields(config) if not doc_of(item)]
    assert not missing, f"{config.__name__}: fields without a doc line: {missing}"


def test_every_backbone_and_schedule_has_its_schema_and_a_choice_file():
    register_configs()
    store = ConfigStore.instance()
    for group, names in (("model", BACKBONES), ("schedule", schedule_classes())):
        assert sorted(path.stem for path in (CONF / group).glob("*.yaml")) == sorted(names)
        for name in names:
            assert store.load(f"schema/{group}/{name}.yaml") is not None


@pytest.mark.parametrize("config", _all_config_classes(), ids=lambda c: c.__name__)
def test_a_field_a_subclass_redeclares_keeps_its_base_range_and_choices(config):
    for base in config.__mro__[1:]:
        if not hasattr(base, "__dataclass_fields__"):
            continue
        for name, inherited in base.__dataclass_fields__.items():
            own = config.__dataclass_fields__[name]
            assert interval_of(own) == interval_of(inherited), \
                f"{config.__name__}.{name} is declared with range {interval_of(own)}, {base.__name__} with " \
                f"{interval_of(inherited)}"
            assert choices_of(own) == choices_of(inherited), f"{config.__name__}.{name} changes its choices"


def test_run_help_lists_the_chosen_components_keys_from_their_declarations(capsys, tmp_path, monkeypatch):
    from fedca.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "agg=gpfedrec", "--help"]) == 0
    text = capsys.readouterr().out
    reg = next(item for item in fields(aggregator_classes()["gpfedrec"].config) if item.name == "reg")
    assert f"  agg.reg = 1.0  >= 0  # {doc_of(reg)}" in text.splitlines()
    assert "  protocol.ties = 'pessimistic'  {pessimistic, optimistic, average}" in text
    assert "agg.w_sim" not in text  # composite's knobs only when agg=composite
    assert "  agg: " in text and "  +method: " in text
    assert not list(tmp_path.iterdir())  # help writes nothing


@pytest.mark.parametrize("text, inside, outside, rule", [
    ("[0, inf)", [0, 0.5, 1e300], [-1e-300, -1], "must be >= 0"),
    ("(0, inf)", [1e-300, 5], [0, -1], "must be > 0"),
    ("(0, 1]", [1e-9, 1], [0, 1.0000001], "must be in (0, 1]"),
    ("[0, 1)", [0, 0.999], [1, -0.1], "must be in [0, 1)"),
    ("[1, 64]", [1, 64], [0, 65], "must be in [1, 64]"),
    ("(-inf, 5]", [-1e300, 5], [5.0001], "must be <= 5"),
])
def test_an_interval_holds_exactly_its_ends_and_states_itself(text, inside, outside, rule):
    from fedca.config.fields import Interval

    interval = Interval.parse(text)
    assert all(interval.holds(value) for value in inside)
    assert not any(interval.holds(value) for value in outside)
    assert interval.rule() == rule
