"""Range and choice checks on a composed RunConfig; each failure names the key.

Runs before any work starts (no data is read, no output is written). Also resolves the
official code's ``alpha``/``beta`` names into ``w_comp``/``w_sim``.
"""

import math
from pathlib import Path
from dataclasses import fields, is_dataclass
from typing import Iterable

from fedca.aggregators.subspace import COMPLEMENTARITY_METRICS, SIGN_RULES
from fedca.aggregators.perfedrec import CLUSTER_FEATURES, SAMPLINGS
from fedca.aggregators.gpfedrec import SIMILARITIES as GPFEDREC_SIMILARITIES
from fedca.aggregators.pfedgraph import SIMILARITIES
from fedca.config.schema import (CompositeAggConfig, FedAttAggConfig, FedFastAggConfig, FedPerAggConfig,
                                 GPFedRecAggConfig, PerFedRecAggConfig, PFedGraphAggConfig, RunConfig)
from fedca.federation.local_train import KERNELS, OPTIMIZERS, numba_scope_error
from fedca.federation.warm_start import TRANSFERS
from fedca.errors import FedcaError
from fedca.metrics.ranking import TIE_POLICIES

AGGREGATORS = ("local", "fedavg", "fcf", "composite", "fedper", "fedatt", "pfedgraph", "pfedrec", "fedfast",
               "perfedrec", "gpfedrec")
MODELS = ("fcf", "ncf", "pfedrec")
PFEDREC_HEAD_AGGREGATORS = ("pfedrec", "local", "gpfedrec")  # the others would average the personal bias b_i
SCHEDULES = ("constant", "linear", "cosine", "step", "adaptive")
SCHEDULED_KEYS = ("w_sim", "w_comp", "interpolation")
TIME_RULES = ("column", "date_columns", "item_first_appearance", "file_order")
DUPLICATE_POLICIES = ("keep_all", "keep_first", "keep_last")
TRACKERS = ("none", "mlflow")


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise FedcaError(f"{key}={value!r} is out of range: {rule}")


def _choice(key: str, value, allowed: Iterable) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise FedcaError(f"{key}={value!r} is not a known choice; use one of: {', '.join(map(str, allowed))}")


def _ratio(key: str, value: float) -> None:
    _require(0.0 < value <= 1.0, key, value, "must be in (0, 1]")


def _at_least(key: str, value: int, low: int) -> None:
    _require(value >= low, key, value, f"must be >= {low}")


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
    _at_least("rounds", cfg.rounds, 1)
    _at_least("local_epochs", cfg.local_epochs, 1)
    _at_least("batch_size", cfg.batch_size, 1)
    _at_least("eval_every", cfg.eval_every, 1)
    _require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0")
    _ratio("clients_sample_ratio", cfg.clients_sample_ratio)
    _choice("device", cfg.device, ("auto", "cpu", "cuda"))
    _require(cfg.checkpoint_every >= 0, "checkpoint_every", cfg.checkpoint_every,
             "must be >= 0 (0: only at the end)")
    _require(0 <= cfg.threads <= 4096, "threads", cfg.threads,
             "must be in [0, 4096] (0: all cores, shared among parallel jobs)")


def _validate_dataset(cfg: RunConfig) -> None:
    data = cfg.dataset
    _choice("dataset.format", data.format, ("delimited",))
    _choice("dataset.time_rule", data.time_rule, TIME_RULES)
    _require(data.sep != "", "dataset.sep", data.sep, "must not be empty")
    if data.time_rule == "column" and data.timestamp_col is None:
        raise FedcaError("dataset.time_rule='column' needs dataset.timestamp_col; "
                         "set it or use time_rule=file_order")
    if data.time_rule == "date_columns" and len(data.date_cols or []) != 3:
        raise FedcaError(f"dataset.time_rule='date_columns' needs dataset.date_cols=[year,month,day], "
                         f"got {list(data.date_cols or [])}")
    if data.min_interactions is not None:
        _require(data.min_interactions >= 0, "dataset.min_interactions", data.min_interactions,
                 "must be >= 0 (or null: use protocol.min_interactions)")
        cfg.protocol.min_interactions = data.min_interactions  # the dataset's published filter wins


def _validate_model(cfg: RunConfig) -> None:
    model = cfg.model
    _choice("model.name", model.name, MODELS)
    _require(1 <= model.latent_dim <= 65536, "model.latent_dim", model.latent_dim, "must be in [1, 65536]")
    for key in ("lr_embedding", "lr_structure"):
        _require(getattr(model, key) > 0, f"model.{key}", getattr(model, key), "must be > 0")
    _require(model.weight_decay >= 0, "model.weight_decay", model.weight_decay, "must be >= 0")
    _choice("model.init", model.init, ("official", "small"))
    _choice("model.user_init", model.user_init, ("shared", "random"))
    _choice("model.optimizer", model.optimizer, OPTIMIZERS)
    _choice("kernel", cfg.kernel, KERNELS)
    scope_error = numba_scope_error(model.name, model.optimizer, cfg.device)
    if cfg.kernel == "numba" and scope_error:
        raise FedcaError(scope_error)
    _require(model.item_lr_eta >= 0, "model.item_lr_eta", model.item_lr_eta, "must be >= 0 (0: item lr = lr_embedding)")
    if model.optimizer == "adam":
        _require(model.item_lr_offset == 0, "model.item_lr_offset", model.item_lr_offset,
                 "sets the item rate of the SGD optimisers; must be 0 with model.optimizer=adam")
    if model.lr_user is not None:
        _require(model.optimizer == "sgd", "model.lr_user", model.lr_user,
                 f"sets the user-vector rate of model.optimizer=sgd, not {model.optimizer}; leave it null")
        _require(model.lr_user >= 0, "model.lr_user", model.lr_user, "must be >= 0")
    if model.optimizer != "adam":
        item_rate_at_one_item = model.lr_embedding * (model.item_lr_eta or 1.0) + model.item_lr_offset
        _require(item_rate_at_one_item > 0, "model.item_lr_offset", model.item_lr_offset,
                 "makes the item learning rate lr_embedding * I * item_lr_eta + item_lr_offset <= 0")
    if model.local_epochs is not None:
        _at_least("model.local_epochs", model.local_epochs, 1)
    if model.name == "pfedrec":
        _choice("agg.name (with model=pfedrec)", cfg.agg.name, PFEDREC_HEAD_AGGREGATORS)
    if model.name == "ncf":
        layers = list(model.mlp_layers)
        _require(len(layers) >= 2, "model.mlp_layers", layers, "needs at least an input and an output width")
        _require(layers[0] == 2 * model.latent_dim, "model.mlp_layers", layers,
                 f"the first width must be 2 * latent_dim = {2 * model.latent_dim}")
        _require(layers[-1] == 1, "model.mlp_layers", layers, "the last width must be 1")
        _require(all(1 <= width <= 65536 for width in layers), "model.mlp_layers", layers,
                 "widths must be in [1, 65536]")


def _resolve_composite_names(agg: CompositeAggConfig) -> None:
    for code_name, our_name in (("alpha", "w_comp"), ("beta", "w_sim")):
        code_value = getattr(agg, code_name)
        if code_value is not None:
            _require(code_value >= 0, f"agg.{code_name}", code_value, "must be >= 0")
            setattr(agg, our_name, float(code_value))
            setattr(agg, code_name, None)


def _validate_agg(cfg: RunConfig) -> None:
    agg = cfg.agg
    _choice("agg.name", agg.name, AGGREGATORS)
    _choice("agg.weighting", agg.weighting, ("samples", "uniform"))
    if isinstance(agg, FedPerAggConfig):
        _at_least("agg.personal_layers", agg.personal_layers, 0)
        layers = max(0, len(cfg.model.mlp_layers) - 1)  # the model's MLP layers (0 on FCF: none)
        if layers:
            _require(agg.personal_layers <= layers, "agg.personal_layers", agg.personal_layers,
                     f"the MLP of model={cfg.model.name} has {layers} layers; at most {layers} can be personal")
    if isinstance(agg, FedAttAggConfig):
        _require(agg.step_size > 0, "agg.step_size", agg.step_size, "must be > 0")
        _require(agg.noise >= 0, "agg.noise", agg.noise, "must be >= 0")
        _choice("agg.att_norm", agg.att_norm, ("spectral", "fro"))
    if isinstance(agg, PFedGraphAggConfig):
        _require(agg.alpha > 0, "agg.alpha", agg.alpha, "must be > 0")
        _choice("agg.similarity", agg.similarity, SIMILARITIES)
        _require(agg.lam >= 0, "agg.lam", agg.lam, "must be >= 0")
        _choice("agg.reg_sign", agg.reg_sign, (1, -1))
    if isinstance(agg, PFedGraphAggConfig) and agg.lam > 0 and cfg.model.optimizer == "sgd":
        raise FedcaError(f"model.optimizer='sgd' cannot train the pull term of agg=pfedgraph (agg.lam={agg.lam}); "
                         f"use model.optimizer=adam or agg.lam=0")
    if isinstance(agg, GPFedRecAggConfig):
        _choice("agg.similarity", agg.similarity, GPFEDREC_SIMILARITIES)
        _at_least("agg.neighborhood_size", agg.neighborhood_size, 0)
        _require(agg.neighborhood_threshold >= 0, "agg.neighborhood_threshold", agg.neighborhood_threshold,
                 "must be >= 0")
        _at_least("agg.mp_layers", agg.mp_layers, 1)
        _require(agg.reg >= 0, "agg.reg", agg.reg, "must be >= 0")
        _require(agg.mp_layers <= 64, "agg.mp_layers", agg.mp_layers, "must be <= 64 (A^L has converged long before)")
        if agg.reg > 0 and cfg.model.optimizer != "sgd":
            raise FedcaError(f"model.optimizer={cfg.model.optimizer!r} cannot train the proximal term of agg=gpfedrec "
                             f"(agg.reg={agg.reg}); set model.optimizer=sgd, or use +method=gpfedrec (the official setup)")
    if isinstance(agg, FedFastAggConfig):
        _ratio("agg.delegates_ratio", agg.delegates_ratio)
        _at_least("agg.clusters", agg.clusters, 0)
        _require(agg.gamma0 >= 0, "agg.gamma0", agg.gamma0, "must be >= 0")
        _require(0 <= agg.gamma_decay <= 1, "agg.gamma_decay", agg.gamma_decay, "must be in [0, 1]")
        _require(cfg.clients_sample_ratio == 1.0, "clients_sample_ratio", cfg.clients_sample_ratio,
                 "FedFast picks its own delegates; set agg.delegates_ratio instead")
    if isinstance(agg, PerFedRecAggConfig):
        _at_least("agg.clusters", agg.clusters, 1)
        _choice("agg.cluster_on", agg.cluster_on, CLUSTER_FEATURES)
        _choice("agg.sampling", agg.sampling, SAMPLINGS)
        _at_least("agg.cluster_start_round", agg.cluster_start_round, 1)
    if isinstance(agg, CompositeAggConfig):
        _resolve_composite_names(agg)
        for key in ("w_sim", "w_comp"):
            _require(getattr(agg, key) >= 0, f"agg.{key}", getattr(agg, key), "must be >= 0")
        _choice("agg.comp_sign", agg.comp_sign, (1, -1))
        _choice("agg.comp_metric", agg.comp_metric, COMPLEMENTARITY_METRICS)
        _choice("agg.pca_sign_rule", agg.pca_sign_rule, SIGN_RULES)
        _require(1 <= agg.k_principal <= cfg.model.latent_dim, "agg.k_principal", agg.k_principal,
                 f"must be in [1, model.latent_dim={cfg.model.latent_dim}]")
        _ratio("agg.agg_clients_ratio", agg.agg_clients_ratio)
        _require(0.0 <= agg.interpolation <= 1.0, "agg.interpolation", agg.interpolation, "must be in [0, 1]")


def _validate_schedule(cfg: RunConfig) -> None:
    sched = cfg.schedule
    _choice("schedule.name", sched.name, SCHEDULES)
    if sched.name != "constant" and not isinstance(cfg.agg, CompositeAggConfig):
        raise FedcaError(f"schedule={sched.name} schedules composite weights; it needs agg=composite "
                         f"(or a composite ablation), not agg={cfg.agg.name}")
    for key in ("end_w_sim", "end_w_comp"):
        value = getattr(sched, key, None)
        if value is not None:
            _require(value >= 0, f"schedule.{key}", value, "must be >= 0")
    end_mu = getattr(sched, "end_interpolation", None)
    if end_mu is not None:
        _require(0.0 <= end_mu <= 1.0, "schedule.end_interpolation", end_mu, "must be in [0, 1]")
    if sched.name == "step":
        _require(sched.gamma > 0, "schedule.gamma", sched.gamma, "must be > 0")
        _require(all(m >= 1 for m in sched.milestones), "schedule.milestones", list(sched.milestones),
                 "rounds are counted from 1")
        for key in sched.keys:
            _choice("schedule.keys", key, SCHEDULED_KEYS)
    if sched.name == "adaptive":
        _require(0.0 < sched.rate <= 1.0, "schedule.rate", sched.rate, "must be in (0, 1]")
        _require(0.0 <= sched.min_weight <= sched.max_weight, "schedule.min_weight", sched.min_weight,
                 f"must be in [0, schedule.max_weight={sched.max_weight}]")


def _validate_protocol(cfg: RunConfig) -> None:
    proto = cfg.protocol
    _at_least("protocol.min_interactions", proto.min_interactions, 0)
    _choice("protocol.duplicates", proto.duplicates, DUPLICATE_POLICIES)
    _at_least("protocol.num_eval_negatives", proto.num_eval_negatives, 1)
    _at_least("protocol.num_train_negatives", proto.num_train_negatives, 0)
    _choice("protocol.ties", proto.ties, TIE_POLICIES)
    _choice("protocol.select_by", proto.select_by, ("val", "test"))
    _choice("protocol.early_stop", proto.early_stop, ("official", "off"))
    _require(proto.early_stop_threshold >= 0, "protocol.early_stop_threshold", proto.early_stop_threshold,
             "must be >= 0")


def _validate_eval(cfg: RunConfig) -> None:
    ev = cfg.eval
    _choice("eval.mode", ev.mode, ("sampled", "full"))
    _require(len(ev.ks) >= 1, "eval.ks", list(ev.ks), "needs at least one K")
    for k in ev.ks:
        _require(k >= 1, "eval.ks", list(ev.ks), "every K must be >= 1")
    _require(ev.select_k in ev.ks, "eval.select_k", ev.select_k, f"must be one of eval.ks={list(ev.ks)}")
    _require(0.0 <= ev.holdout_clients < 1.0, "eval.holdout_clients", ev.holdout_clients, "must be in [0, 1)")
    _at_least("eval.adapt_steps", ev.adapt_steps, 0)


def _validate_privacy(cfg: RunConfig) -> None:
    privacy = cfg.privacy
    if privacy.clip is not None:
        _require(privacy.clip > 0, "privacy.clip", privacy.clip, "must be > 0 (null: no clipping)")
    _require(privacy.noise_multiplier >= 0, "privacy.noise_multiplier", privacy.noise_multiplier, "must be >= 0")
    if privacy.noise_multiplier > 0 and privacy.clip is None:
        raise FedcaError("privacy.noise_multiplier > 0 needs privacy.clip: the noise std is noise_multiplier * clip")


def _validate_init(cfg: RunConfig) -> None:
    _choice("init.checkpoint", cfg.init.checkpoint, ("final", "selected"))
    _choice("init.transfer", cfg.init.transfer, TRANSFERS)
    if cfg.init.from_run is not None and not Path(cfg.init.from_run).is_dir():
        raise FedcaError(f"init.from_run={cfg.init.from_run!r} is not a run folder")


def _validate_tracking(cfg: RunConfig) -> None:
    import importlib.util

    _choice("tracking.name", cfg.tracking.name, TRACKERS)
    if cfg.tracking.name == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise FedcaError('tracking=mlflow needs the mlflow extra: pip install "fedca[mlflow]"')


def validate(cfg: RunConfig) -> RunConfig:
    """Check every field's range; return the same object with alpha/beta resolved and a dataset's own
    ``min_interactions`` (when set) copied into ``protocol.min_interactions``."""
    _sane_numbers(cfg)
    _validate_top(cfg)
    _validate_dataset(cfg)
    _validate_model(cfg)
    _validate_agg(cfg)
    _validate_schedule(cfg)
    _validate_protocol(cfg)
    _validate_eval(cfg)
    _validate_privacy(cfg)
    _validate_init(cfg)
    _validate_tracking(cfg)
    return cfg

