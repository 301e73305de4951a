"""The protocol as one record: its values, their hash, and how two records differ.

``protocol_values`` lists every ProtocolConfig field (the dataset's own ``min_interactions``
in force when it sets one), ``protocol_hash`` is the first 12 hex digits of the sha256 of
those values without the name, so ``protocol=fedca protocol.ties=average`` and plain
``protocol=fedca`` hash apart while two names for the same settings hash alike.
``recorded_values`` reads them back from a run's summary.json, including runs written before
a field existed (they behaved as its default).
"""

import hashlib
import json
from dataclasses import MISSING, fields, replace
from typing import Dict, List

from fedca.config.fields import plain
from fedca.config.schema import DatasetConfig, ProtocolConfig, RunConfig

HASH_DIGITS = 12


def protocol_in_force(dataset: DatasetConfig, protocol: ProtocolConfig) -> ProtocolConfig:
    """``protocol`` with ``dataset``'s published user filter when it declares one."""
    if dataset.min_interactions is None:
        return protocol
    return replace(protocol, min_interactions=dataset.min_interactions)


def hashed_record(cfg: RunConfig) -> Dict[str, object]:
    """Every field of the run's protocol in force and their ``hash``: what rounds.csv rows and
    summary.json record."""
    values = protocol_values(protocol_in_force(cfg.dataset, cfg.protocol))
    return {**values, "hash": protocol_hash(values)}


def protocol_values(protocol: ProtocolConfig) -> Dict[str, object]:
    """{field: JSON-ready value} of every protocol field, in declaration order."""
    return {item.name: plain(getattr(protocol, item.name)) for item in fields(ProtocolConfig)}


def protocol_hash(values: Dict[str, object]) -> str:
    """12 hex digits identifying the settings in ``values`` (the name is left out)."""
    settings = {key: value for key, value in values.items() if key != "name"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:HASH_DIGITS]


def field_defaults() -> Dict[str, object]:
    """{field: declared default} of the protocol fields that have one."""
    defaults = {}
    for item in fields(ProtocolConfig):
        if item.default is not MISSING:
            defaults[item.name] = plain(item.default)
        elif item.default_factory is not MISSING:
            defaults[item.name] = plain(item.default_factory())
    return defaults


def recorded_values(summary: dict) -> Dict[str, object] | None:
    """The protocol values a run's ``summary`` records, or None when it records no protocol.

    Runs written before the evaluation settings joined the protocol record ``eval_mode`` and
    ``ks`` beside it and the selection K only in ``select_metric`` (``hr@K``); a field a run
    does not record at all is the declared default, which is how the code behaved then."""
    record = summary.get("protocol")
    if not isinstance(record, dict) or "name" not in record:
        return None
    values = field_defaults()
    metric = str(summary.get("select_metric", ""))
    if metric.startswith("hr@") and metric[3:].isdigit():
        values["select_k"] = int(metric[3:])
    values.update({key: plain(record[key]) for key in values.keys() | {"name"} if key in record})
    return {item.name: values[item.name] for item in fields(ProtocolConfig)}


def differing_fields(first: Dict[str, object], second: Dict[str, object]) -> List[str]:
    """Names of the hashed fields whose values differ between two protocol records."""
    return [key for key in first if key != "name" and first.get(key) != second.get(key)]
