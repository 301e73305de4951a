"""Property-based fuzzing of every numeric config field through ``compose_run_config``.

The numeric fields are found by walking the RunConfig dataclasses (top level, model, protocol,
eval) and the config of every aggregator and schedule that declares knobs (discovered, so a new
one is fuzzed without an edit here). Each gets hypothesis-drawn values (negative, zero, huge,
fractional, NaN, inf) as a Hydra override ``key=value``. Property: ``compose_run_config``
either returns a config whose value is the one given and lies in its range, or raises
FedcaError with a one-line message naming the key. Any other exception fails. The range is
the hand-written one below where there is one (written from the documented rules, not from
the code) and the field's declared interval (``declared(..., range=...)``) where there is one;
every numeric field must have at least one of them.

On top of validate.py's ranges, "sane" means what every consumer of the value needs: a float is
finite (NaN and infinity are never a learning rate, weight or threshold) and an int fits int64
(torch and numpy take them: threads=2**63 fails in torch.set_num_threads with ValueError,
model.latent_dim=2**63 in torch.empty with a multi-line TypeError).
"""

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fedca.config.compose import compose_run_config
from choices import runnable_pairs
from fedca.aggregators.base import AggConfig
from fedca.aggregators.composite import CompositeAggConfig
from fedca.aggregators.registry import aggregator_classes
from fedca.config.fields import choices_of, interval_of
from fedca.config.schema import EvalConfig, ProtocolConfig, RunConfig
from fedca.models.config import ModelConfig
from fedca.schedules.base import ScheduleConfig
from fedca.schedules.registry import schedule_classes
from fedca.errors import FedcaError


def _discovered_sections() -> list:
    """(label, prefix, schema, overrides that select it) of every aggregator and schedule that
    declares knobs of its own: a new one is fuzzed without an edit here."""
    sections = []
    for name, aggregator in aggregator_classes().items():
        if aggregator.config is not AggConfig:
            overrides = next(o for (agg, _), o in runnable_pairs().items() if agg == name)
            sections.append((name, "agg", aggregator.config, tuple(overrides)))
    seen = set()
    for name, schedule in schedule_classes().items():
        if schedule.config is not ScheduleConfig and schedule.config not in seen:
            seen.add(schedule.config)
            sections.append((name, "schedule", schedule.config, ("agg=composite", f"schedule={name}")))
    return sections


# (label, prefix, schema, overrides that select it)
SECTIONS = [
    ("run", "", RunConfig, ()),
    ("model", "model", ModelConfig, ()),
    ("protocol", "protocol", ProtocolConfig, ()),
    ("eval", "eval", EvalConfig, ()),
    *_discovered_sections(),
]
EXTRA_CONTEXT = {"model.mlp_layers": ("model=ncf",)}   # mlp_layers is only checked for the ncf backbone
# how a drawn number is written into a list-valued field (the other entries keep the field valid)
LIST_TEMPLATES = {"model.mlp_layers": "[32,{},1]", "protocol.ks": "[10,{}]", "schedule.milestones": "[{}]"}
# agg.alpha / agg.beta are the official code's names: when set they are the w_comp / w_sim the
# run schedules (CompositeAggConfig.scheduled_values); the config itself keeps what was written
RESOLVED_INTO = {"agg.alpha": "w_comp", "agg.beta": "w_sim"}
INT64 = 2 ** 63


def _kind(hint) -> typing.Optional[str]:
    """'int', 'float', 'int_list' or 'float_list' for a numeric annotation, else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    if hint is bool:
        return None
    if hint in (int, float):
        return hint.__name__
    if typing.get_origin(hint) in (list, typing.List) and typing.get_args(hint)[0] in (int, float):
        return typing.get_args(hint)[0].__name__ + "_list"
    return None


def numeric_fields() -> list:
    """[(label, key, kind, context overrides, the dataclass field)] for every numeric field the
    sections hold (an aggregator's or schedule's: the fields its own config adds)."""
    found = []
    for label, prefix, schema, context in SECTIONS:
        hints = typing.get_type_hints(schema)
        inherited = set(AggConfig.__dataclass_fields__) | set(ScheduleConfig.__dataclass_fields__) \
            if prefix in ("agg", "schedule") else set()
        for field in dataclasses.fields(schema):
            kind = _kind(hints[field.name])
            if kind is None or field.name in inherited:
                continue
            key = f"{prefix}.{field.name}" if prefix else field.name
            found.append((label, key, kind, context + EXTRA_CONTEXT.get(key, ()), field))
    return found


def at_least(low):
    return lambda v, cfg: v >= low


def above(low):
    return lambda v, cfg: v > low


def ratio(v, cfg):
    return 0 < v <= 1


def unit(v, cfg):
    return 0 <= v <= 1


# Written by hand from the documented rules, independently of the declarations (v: the composed
# value, cfg: the RunConfig), for the sections the fuzz test was first written for; any other
# aggregator or schedule field is held to its declared interval (``declared(..., range=...)``),
# and a field with both is held to both.
RANGES = {
    "rounds": at_least(1), "local_epochs": at_least(1), "batch_size": at_least(1), "seed": at_least(0),
    "eval_every": at_least(1), "clients_sample_ratio": ratio, "threads": at_least(0),
    "checkpoint_every": at_least(0),
    "model.latent_dim": at_least(1),
    "model.mlp_layers": lambda v, cfg: (len(v) >= 2 and v[0] == 2 * cfg.model.latent_dim and v[-1] == 1
                                        and all(w >= 1 for w in v)),
    "model.lr_embedding": above(0), "model.lr_structure": above(0), "model.weight_decay": at_least(0),
    "model.item_lr_eta": at_least(0), "model.local_epochs": at_least(1),
    "model.item_lr_offset": lambda v, cfg: v == 0 if cfg.model.optimizer == "adam" else
    cfg.model.lr_embedding * (cfg.model.item_lr_eta or 1.0) + v > 0,
    "model.lr_user": lambda v, cfg: cfg.model.optimizer == "sgd" and v >= 0,
    "gpfedrec:agg.neighborhood_size": at_least(0), "gpfedrec:agg.neighborhood_threshold": at_least(0),
    "gpfedrec:agg.mp_layers": lambda v, cfg: 1 <= v <= 64, "gpfedrec:agg.reg": at_least(0),
    "composite:agg.w_sim": at_least(0), "composite:agg.w_comp": at_least(0), "composite:agg.alpha": at_least(0),
    "composite:agg.beta": at_least(0), "composite:agg.comp_sign": lambda v, cfg: v in (1, -1),
    "composite:agg.k_principal": lambda v, cfg: 1 <= v <= cfg.model.latent_dim,
    "composite:agg.agg_clients_ratio": ratio, "composite:agg.interpolation": unit,
    "protocol.min_interactions": at_least(0),
    "protocol.binarize_threshold": lambda v, cfg: True,   # any (finite) rating threshold
    "protocol.num_eval_negatives": at_least(1), "protocol.num_train_negatives": at_least(0),
    "protocol.early_stop_threshold": at_least(0),
    "protocol.ks": lambda v, cfg: len(v) >= 1 and all(k >= 1 for k in v) and cfg.protocol.select_k in v,
    "protocol.select_k": lambda v, cfg: v in cfg.protocol.ks,
    "eval.holdout_clients": lambda v, cfg: 0 <= v < 1, "eval.adapt_steps": at_least(0),
    "cosine:schedule.end_w_sim": at_least(0), "cosine:schedule.end_w_comp": at_least(0),
    "cosine:schedule.end_interpolation": unit,
    "step:schedule.milestones": lambda v, cfg: all(m >= 1 for m in v), "step:schedule.gamma": above(0),
    "adaptive:schedule.rate": ratio,
    "adaptive:schedule.min_weight": lambda v, cfg: 0 <= v <= cfg.schedule.max_weight,
    "adaptive:schedule.max_weight": lambda v, cfg: cfg.schedule.min_weight <= v,
}
FIELDS = numeric_fields()

# ordinary numbers: within int64 / finite, but negative, zero, fractional, tiny or huge
ORDINARY = st.one_of(
    st.sampled_from([0, 0.0, -0.0, -1, 1, 2, 0.5, -0.5, 1.5, 10, 16, 32, 1e-320, 1e308, 2 ** 62, INT64 - 1, -INT64]),
    st.integers(-3, 40), st.integers(-INT64, INT64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(-2, 2))

def render(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def sane_number(value, kind: str) -> bool:
    if kind.startswith("float"):
        return isinstance(value, float) and math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def composed_value(cfg, key: str):
    section, _, name = key.rpartition(".")
    node = getattr(cfg, section) if section else cfg
    value = getattr(node, name)
    if key in RESOLVED_INTO and isinstance(node, CompositeAggConfig):
        assert node.scheduled_values()[RESOLVED_INTO[key]] == value, f"{key} is not the scheduled value"
    return list(value) if isinstance(value, (list, tuple)) else value


def same_number(got, given, kind: str) -> bool:
    """Whether the composed ``got`` is exactly the ``given`` override value (as the field's type)."""
    if kind.startswith("float") and isinstance(given, int):
        try:
            given = float(given)
        except OverflowError:
            return False
    if isinstance(got, float) and isinstance(given, float) and math.isnan(got):
        return math.isnan(given)
    return got == given and type(got) is type(given)


def oracle(label: str, key: str):
    """The hand-written range of a field, if any (keyed by key, or by section:key for a section's own)."""
    return RANGES.get(f"{label}:{key}", RANGES.get(key) if label in ("run", "model", "protocol", "eval") else None)


def check_override(label: str, key: str, kind: str, context: tuple, declaration, value) -> None:
    written = LIST_TEMPLATES.get(key, "{}").format(render(value))
    override = f"{key}={written}"
    try:
        cfg = compose_run_config([*context, override])
    except FedcaError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, f"multi-line message for {override}: {message!r}"
        assert key in message, f"the message for {override} does not name {key}: {message!r}"
        return
    got = composed_value(cfg, key)
    elements = got if isinstance(got, list) else [got]
    element = {"model.mlp_layers": 1, "protocol.ks": 1, "schedule.milestones": 0}.get(key)
    element = got if element is None else got[element]
    assert same_number(element, value, kind), f"{override} composed to {got!r}"   # no silent conversion
    assert all(sane_number(v, kind) for v in elements), f"{override} was accepted: {got!r} is not a sane number"
    hand = oracle(label, key)
    assert hand is None or hand(got, cfg), f"{override} was accepted although the documented range differs"
    interval, allowed = interval_of(declaration), choices_of(declaration)
    assert interval is None or all(interval.holds(v) for v in elements), \
        f"{override} was accepted although the declaration says {interval.rule()}"
    assert allowed is None or all(v in allowed for v in elements), \
        f"{override} was accepted although the declaration allows only {allowed}"


def test_every_numeric_field_has_a_documented_range():
    labelled = [f"{label}:{key}" for label, key, *_ in FIELDS]
    assert len(labelled) == len(set(labelled))
    unranged = [name for (label, key, _, _, declaration), name in zip(FIELDS, labelled)
                if oracle(label, key) is None and interval_of(declaration) is None and choices_of(declaration) is None]
    assert not unranged, f"numeric fields with neither a declared range nor a documented one here: {unranged}"
    written = {name if ":" in name else f"?:{name}" for name in RANGES}
    known = set(labelled) | {f"?:{key}" for label, key, *_ in FIELDS if label in ("run", "model", "protocol", "eval")}
    assert written <= known, f"ranges here for gone fields: {sorted(written - known)}"
    assert {"run:rounds", "model:model.lr_embedding", "composite:agg.k_principal", "pfedgraph:agg.lam",
            "fedfast:agg.gamma_decay", "protocol:protocol.select_k", "cosine:schedule.end_w_sim",
            "step:schedule.gamma", "adaptive:schedule.rate"} <= set(labelled)


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])


FIELD_IDS = [f"{label}:{key}" for label, key, *_ in FIELDS]
PER_FIELD = pytest.mark.parametrize("label,key,kind,context,declaration", FIELDS, ids=FIELD_IDS)


@PER_FIELD
@fuzz(4)
@given(value=ORDINARY)
@example(value=-1)
def test_ordinary_number_is_used_in_range_or_rejected_naming_the_key(label, key, kind, context, declaration, value):
    check_override(label, key, kind, context, declaration, value)


@PER_FIELD
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_nan_and_infinity_are_rejected_naming_the_key(label, key, kind, context, declaration, value):
    check_override(label, key, kind, context, declaration, value)


@PER_FIELD
@pytest.mark.parametrize("value", [INT64, 10 ** 400], ids=["2**63", "10**400"])
def test_numbers_beyond_int64_or_float_range_are_rejected_naming_the_key(label, key, kind, context, declaration, value):
    check_override(label, key, kind, context, declaration, value)
