"""Config keys that moved, so that folders written before the move still read.

A checkpoint or ledger records the config it ran under as plain nested dicts; ``moved_into_place``
rewrites a saved config's old keys into their new places (the values are unchanged) before it
is compared with a current config.
"""

from typing import Dict, Sequence

MOVED_KEYS: Dict[str, str] = {  # old dotted key -> new dotted key
    "eval.mode": "protocol.eval_mode",
    "eval.ks": "protocol.ks",
    "eval.select_k": "protocol.select_k",
}


def moved_override(override: str) -> str | None:
    """The new spelling of a ``KEY=VALUE`` override whose key moved (None when it did not)."""
    key, sep, value = override.partition("=")
    prefix = "+" if key.startswith("+") else ""
    new = MOVED_KEYS.get(key.lstrip("+"))
    return f"{prefix}{new}{sep}{value}" if new and sep else None


def moved_overrides(overrides: Sequence[str]) -> list:
    """``overrides`` with every moved key spelt in its new place."""
    return [moved_override(override) or override for override in overrides]


def moved_into_place(saved: dict) -> dict:
    """A copy of the nested config ``saved`` with each moved key at its new place."""
    result = {key: dict(value) if isinstance(value, dict) else value for key, value in saved.items()}
    for old, new in MOVED_KEYS.items():
        old_group, old_key = old.split(".")
        new_group, new_key = new.split(".")
        if isinstance(result.get(old_group), dict) and old_key in result[old_group]:
            value = result[old_group].pop(old_key)
            result.setdefault(new_group, {})
            if isinstance(result[new_group], dict):
                result[new_group].setdefault(new_key, value)
    return result
