"""Range and choice checks on a composed RunConfig; each failure names the key.

A declared field's range is its declaration's (``fedca.config.fields``: ``declared(...,
range="(0, 1]")``), checked for the whole tree by ``check_ranges``; what is written here are
the top-level fields and the rules that tie several fields together.

Runs before any work starts (no data is read, no output is written). The rules of an
aggregator's knobs, and a schedule's, are the ``check`` of the config dataclass it declares
(its module). Nothing here changes the config.
"""

import math
from pathlib import Path
from dataclasses import fields, is_dataclass

from fedca.aggregators.registry import aggregator_classes
from fedca.config.schema import RunConfig
from fedca.config.paths import conf_dir
from fedca.federation.local_train import (KERNELS, OPTIMIZERS, RULES, item_learning_rate, numba_scope_error,
                                         optimizers_taking)
from fedca.federation.warm_start import TRANSFERS
from fedca.config.fields import check_ranges
from fedca.config.rules import at_least, choice, ratio, require
from fedca.errors import FedcaError
from fedca.metrics.ranking import TIE_POLICIES
from fedca.models.backbones import BACKBONES
from fedca.schedules.registry import schedule_classes

TIME_RULES = ("column", "date_columns", "item_first_appearance", "file_order")
DUPLICATE_POLICIES = ("keep_all", "keep_first", "keep_last")
TRACKERS = ("none", "mlflow")


def _check_number(key: str, value) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise FedcaError(f"{key}={value!r} is out of range: must be a finite number")
    if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 63:
        raise FedcaError(f"{key}={value!r} is out of range: must fit a 64-bit integer")


def _sane_numbers(node, prefix: str = "") -> None:
    """Every number anywhere in the config is finite and fits 64 bits (NaN, inf, 10**400 fail here)."""
    for item in fields(node):
        key, value = f"{prefix}{item.name}", getattr(node, item.name)
        if is_dataclass(value):
            _sane_numbers(value, f"{key}.")
        elif isinstance(value, (list, tuple)):
            for element in value:
                _check_number(key, element)
        else:
            _check_number(key, value)


def _validate_top(cfg: RunConfig) -> None:
    at_least("rounds", cfg.rounds, 1)
    at_least("local_epochs", cfg.local_epochs, 1)
    at_least("batch_size", cfg.batch_size, 1)
    at_least("eval_every", cfg.eval_every, 1)
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    ratio("clients_sample_ratio", cfg.clients_sample_ratio)
    choice("device", cfg.device, ("auto", "cpu", "cuda"))
    require(cfg.checkpoint_every >= 0, "checkpoint_every", cfg.checkpoint_every,
             "must be >= 0 (0: only at the end)")
    require(0 <= cfg.threads <= 4096, "threads", cfg.threads,
             "must be in [0, 4096] (0: all cores, shared among parallel jobs)")


def _validate_dataset(cfg: RunConfig) -> None:
    data = cfg.dataset
    choice("dataset.format", data.format, ("delimited",))
    choice("dataset.time_rule", data.time_rule, TIME_RULES)
    require(data.sep != "", "dataset.sep", data.sep, "must not be empty")
    if data.time_rule == "column" and data.timestamp_col is None:
        raise FedcaError("dataset.time_rule='column' needs dataset.timestamp_col; "
                         "set it or use time_rule=file_order")
    if data.time_rule == "date_columns" and len(data.date_cols or []) != 3:
        raise FedcaError(f"dataset.time_rule='date_columns' needs dataset.date_cols=[year,month,day], "
                         f"got {list(data.date_cols or [])}")


def _validate_model(cfg: RunConfig) -> None:
    model = cfg.model
    choice("model.name", model.name, BACKBONES)
    choice("model.init", model.init, ("official", "small"))
    choice("model.user_init", model.user_init, ("shared", "random"))
    choice("model.optimizer", model.optimizer, OPTIMIZERS)
    choice("kernel", cfg.kernel, KERNELS)
    scope_error = numba_scope_error(BACKBONES[model.name], model.optimizer, cfg.device)
    if cfg.kernel == "numba" and scope_error:
        raise FedcaError(scope_error)
    if model.optimizer == "adam":
        require(model.item_lr_offset == 0, "model.item_lr_offset", model.item_lr_offset,
                 "sets the item rate of the SGD optimisers; must be 0 with model.optimizer=adam")
    if model.lr_user is not None:
        require(model.optimizer == "sgd", "model.lr_user", model.lr_user,
                 f"sets the user-vector rate of model.optimizer=sgd, not {model.optimizer}; leave it null")
    if model.optimizer != "adam":
        smallest = item_learning_rate(model.lr_embedding, model.item_lr_eta, model.item_lr_offset, num_items=1)
        require(smallest > 0, "model.item_lr_offset", model.item_lr_offset,
                 "makes the item learning rate lr_embedding * I * item_lr_eta + item_lr_offset <= 0")
    if BACKBONES[model.name].personal_mlp:
        keep_mlp = [name for name, aggregator in aggregator_classes().items() if not aggregator.averages_mlp]
        choice(f"agg.name (with model={model.name}, whose MLP block is personal and the others would average)",
               cfg.agg.name, keep_mlp)
    model.check(cfg)


def _check_aggregator(cfg: RunConfig) -> None:
    """The aggregator's own rules: ``check`` of the config dataclass it declares."""
    choice("agg.name", cfg.agg.name, aggregator_classes())
    cfg.agg.check(cfg)
    term = cfg.agg.local_term()
    if term is not None and term[0] not in RULES[cfg.model.optimizer].terms:
        name, knob = term
        raise FedcaError(f"model.optimizer={cfg.model.optimizer!r} cannot train the {name} term that agg={cfg.agg.name} "
                         f"adds to the local loss; use model.optimizer={optimizers_taking(name)} or {knob}=0"
                         + (f", or +method={cfg.agg.name}" if (conf_dir() / "method" / f"{cfg.agg.name}.yaml").is_file()
                            else ""))


def _validate_schedule(cfg: RunConfig) -> None:
    """The schedule names a known one, fits the values the aggregator schedules, and its knobs'
    own rules (its config's ``check``) hold."""
    choice("schedule.name", cfg.schedule.name, schedule_classes())
    scheduled = cfg.agg.scheduled_values()
    if cfg.schedule.name != "constant" and not scheduled:
        takers = [name for name, aggregator in aggregator_classes().items()
                  if aggregator.config(name=name).scheduled_values()]
        raise FedcaError(f"schedule={cfg.schedule.name} moves the values an aggregator schedules; agg={cfg.agg.name} "
                         f"schedules none, so only schedule=constant fits it (agg={' or agg='.join(takers)} "
                         f"schedules some)")
    cfg.schedule.check(scheduled)


def _validate_protocol(cfg: RunConfig) -> None:
    proto = cfg.protocol
    choice("protocol.duplicates", proto.duplicates, DUPLICATE_POLICIES)
    choice("protocol.ties", proto.ties, TIE_POLICIES)
    choice("protocol.select_by", proto.select_by, ("val", "test"))
    choice("protocol.early_stop", proto.early_stop, ("official", "off"))
    choice("protocol.eval_mode", proto.eval_mode, ("sampled", "full"))
    require(len(proto.ks) >= 1, "protocol.ks", list(proto.ks), "needs at least one K")
    require(proto.select_k in proto.ks, "protocol.select_k", proto.select_k,
            f"must be one of protocol.ks={list(proto.ks)}")


def _validate_eval(cfg: RunConfig) -> None:
    ev = cfg.eval
    require(0.0 <= ev.holdout_clients < 1.0, "eval.holdout_clients", ev.holdout_clients, "must be in [0, 1)")
    at_least("eval.adapt_steps", ev.adapt_steps, 0)


def _validate_privacy(cfg: RunConfig) -> None:
    privacy = cfg.privacy
    if privacy.clip is not None:
        require(privacy.clip > 0, "privacy.clip", privacy.clip, "must be > 0 (null: no clipping)")
    require(privacy.noise_multiplier >= 0, "privacy.noise_multiplier", privacy.noise_multiplier, "must be >= 0")
    if privacy.noise_multiplier > 0 and privacy.clip is None:
        raise FedcaError("privacy.noise_multiplier > 0 needs privacy.clip: the noise std is noise_multiplier * clip")


def _validate_init(cfg: RunConfig) -> None:
    choice("init.checkpoint", cfg.init.checkpoint, ("final", "selected"))
    choice("init.transfer", cfg.init.transfer, TRANSFERS)
    if cfg.init.from_run is not None and not Path(cfg.init.from_run).is_dir():
        raise FedcaError(f"init.from_run={cfg.init.from_run!r} is not a run folder")


def _validate_tracking(cfg: RunConfig) -> None:
    import importlib.util

    choice("tracking.name", cfg.tracking.name, TRACKERS)
    if cfg.tracking.name == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise FedcaError('tracking=mlflow needs the mlflow extra: pip install "fedca[mlflow]"')


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field's range and every cross-field rule; return the same object, unchanged."""
    _sane_numbers(cfg)
    check_ranges(cfg)
    _validate_top(cfg)
    _validate_dataset(cfg)
    _validate_model(cfg)
    _check_aggregator(cfg)
    _validate_schedule(cfg)
    _validate_protocol(cfg)
    _validate_eval(cfg)
    _validate_privacy(cfg)
    _validate_init(cfg)
    _validate_tracking(cfg)
    return cfg

