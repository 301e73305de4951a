"""Range and choice checks on a composed RunConfig; each failure names the key.

A declared field's range is its declaration's (``fedca.config.fields``: ``declared(...,
range="(0, 1]")``), checked for the whole tree by ``check_declared``; what is written here are
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
from fedca.config.fields import check_declared
from fedca.config.rules import choice, require
from fedca.errors import FedcaError
from fedca.models.backbones import BACKBONES
from fedca.schedules.registry import schedule_classes



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


def _validate_dataset(cfg: RunConfig) -> None:
    data = cfg.dataset
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
    require(len(proto.ks) >= 1, "protocol.ks", list(proto.ks), "needs at least one K")
    require(proto.select_k in proto.ks, "protocol.select_k", proto.select_k,
            f"must be one of protocol.ks={list(proto.ks)}")


def _validate_privacy(cfg: RunConfig) -> None:
    if cfg.privacy.noise_multiplier > 0 and cfg.privacy.clip is None:
        raise FedcaError("privacy.noise_multiplier > 0 needs privacy.clip: the noise std is noise_multiplier * clip")


def _validate_init(cfg: RunConfig) -> None:
    choice("init.transfer", cfg.init.transfer, TRANSFERS)
    if cfg.init.from_run is not None and not Path(cfg.init.from_run).is_dir():
        raise FedcaError(f"init.from_run={cfg.init.from_run!r} is not a run folder")


def _validate_tracking(cfg: RunConfig) -> None:
    import importlib.util

    if cfg.tracking.name == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise FedcaError('tracking=mlflow needs the mlflow extra: pip install "fedca[mlflow]"')


def _validate_store(cfg: RunConfig) -> None:
    one_table = aggregator_classes()[cfg.agg.name].one_table
    if cfg.store.name == "global" and not one_table:
        holders = [name for name, aggregator in aggregator_classes().items() if aggregator.one_table]
        raise FedcaError(f"store=global holds one table for every client, but agg={cfg.agg.name}'s clients keep "
                         f"tables of their own: use store=dense, disk or half (global fits agg={' or agg='.join(holders)})")
    if cfg.store.name == "disk" and cfg.device == "cuda":
        raise FedcaError("store=disk keeps the tables in a memory-mapped file on the CPU; use store=dense or half "
                         "with device=cuda")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field's range and every cross-field rule; return the same object, unchanged."""
    _sane_numbers(cfg)
    check_declared(cfg)
    _validate_dataset(cfg)
    _validate_model(cfg)
    _check_aggregator(cfg)
    _validate_schedule(cfg)
    _validate_protocol(cfg)
    _validate_privacy(cfg)
    _validate_init(cfg)
    _validate_tracking(cfg)
    _validate_store(cfg)
    return cfg

