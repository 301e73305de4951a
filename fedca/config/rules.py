"""The checks every config rule is written with; each failure is one line naming the key."""

from typing import Iterable

from fedca.errors import FedcaError


def require(ok: bool, key: str, value, rule: str) -> None:
    """FedcaError ``key=value is out of range: rule`` unless ``ok``."""
    if not ok:
        raise FedcaError(f"{key}={value!r} is out of range: {rule}")


def choice(key: str, value, allowed: Iterable) -> None:
    """FedcaError naming the allowed values unless ``value`` is one of them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise FedcaError(f"{key}={value!r} is not a known choice; use one of: {', '.join(map(str, allowed))}")


def ratio(key: str, value: float) -> None:
    require(0.0 < value <= 1.0, key, value, "must be in (0, 1]")


def at_least(key: str, value: int, low: int) -> None:
    require(value >= low, key, value, f"must be >= {low}")
