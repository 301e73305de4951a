"""How a config field is declared: its default, one line of documentation and what it affects.

``declared(default, doc)`` is a dataclass ``field`` whose metadata carries ``doc`` (shown in
generated tables and help) and ``data``: whether the field shapes the processed dataset and
therefore belongs in the dataset cache key. ``data`` defaults to True, so a field nobody
thought about makes the cache key stricter, never stale.
"""

from dataclasses import MISSING, Field, field, fields
from typing import Any, Dict


def declared(default: Any = MISSING, doc: str = "", *, data: bool = True) -> Field:
    """A dataclass field with its documentation; list and dict defaults are copied per instance."""
    metadata = {"doc": doc, "data": data}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def doc_of(item: Field) -> str:
    """The documentation line a field was declared with ('' when none)."""
    return item.metadata.get("doc", "")


def data_values(node) -> Dict[str, Any]:
    """{name: value} of the fields of dataclass instance ``node`` declared to shape the data."""
    return {item.name: plain(getattr(node, item.name)) for item in fields(node) if item.metadata.get("data", True)}


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: lists for list-like config nodes, enum members as their value."""
    if hasattr(value, "value") and isinstance(value.value, str):
        return value.value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain(element) for element in value]
    return value
