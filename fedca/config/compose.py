"""Compose and validate a RunConfig from command-line overrides, with one-line errors.

The CLI calls this before Hydra starts a run, so a bad override fails at once with exit
code 2 and nothing written; tests use it to build configs without the CLI.
"""

from typing import List, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedca.config.moved import moved_override
from fedca.config.paths import conf_dir
from fedca.config.schema import RunConfig, register_configs
from fedca.config.validate import validate
from fedca.errors import FedcaError

GROUPS = ("dataset", "model", "agg", "schedule", "protocol", "tracking")
PRESET_GROUPS = ("method", "experiment", "tune")  # added with +GROUP=NAME; they set keys of the groups above


def available(group: str) -> List[str]:
    """The choices of a config group (its YAML files, schemas excluded)."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def check_group_choices(overrides: Sequence[str]) -> None:
    """Fail with one line when an override names a config group choice that does not exist
    (comma-separated sweep values are checked one by one) or a key that has moved."""
    for override in overrides:
        moved = moved_override(override.lstrip("~"))
        if moved is not None:
            raise FedcaError(f"{override.partition('=')[0]} is now {moved.partition('=')[0]} (it changes what a "
                             f"number means, so it belongs to the protocol); use {moved}")
        key, _, value = override.lstrip("+~").partition("=")
        if key in GROUPS + PRESET_GROUPS and value:
            for choice in value.split(","):
                if choice not in available(key):
                    raise FedcaError(f"unknown {key} {choice!r}; choose one of: {', '.join(available(key))}")


def one_line(exc: BaseException) -> str:
    """The first line of an exception and of its causes, joined: Hydra/OmegaConf messages
    are multi-line and the useful detail (key, value) is often in the cause."""
    parts = []
    while exc is not None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        parts.extend(line for line in lines[:2] if line not in parts and not line.startswith("To append"))
        exc = exc.__cause__
    return "; ".join(parts)


def to_run_config(cfg, validated: bool = True) -> RunConfig:
    """A composed DictConfig as dataclasses, validated unless ``validated=False`` (help text)."""
    try:
        run_cfg = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise FedcaError(f"invalid config: {one_line(exc)}") from None
    return validate(run_cfg) if validated else run_cfg


def compose_run_config(overrides: Sequence[str] = (), validated: bool = True) -> RunConfig:
    """Compose conf/config.yaml with ``overrides`` and validate it (unless ``validated=False``)."""
    check_group_choices(overrides)
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
            return to_run_config(cfg, validated)
    except (HydraException, OmegaConfBaseException) as exc:
        raise FedcaError(f"invalid config: {one_line(exc)}") from None
    except OverflowError:
        culprit = next((o for o in overrides if _overflows(o)), "an override")
        raise FedcaError(f"{culprit.partition('=')[0]} is out of range: the number is too large") from None


def _overflows(override: str) -> bool:
    """Whether the override's value is an integer literal too large for a float."""
    try:
        float(int(override.partition("=")[2]))
    except OverflowError:
        return True
    except ValueError:
        return False
    return False
