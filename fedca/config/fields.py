"""How a config field is declared: its default, one line of documentation, its range and what it affects.

``declared(default, doc)`` is a dataclass ``field`` whose metadata carries ``doc`` (shown in
generated tables and help), ``range`` (an interval such as ``"(0, 1]"`` or ``"[0, inf)"`` that
every value, or every element of a list, must lie in), ``choices`` (the values it may take);
both are checked by ``check_declared`` with the rest of the config and read by the fuzz test;
and ``data``: whether the field shapes the processed dataset and therefore belongs in the
dataset cache key. ``data`` defaults to True, so a field
nobody thought about makes the cache key stricter, never stale. Rules that involve other
fields stay in the ``check`` beside the declaration.
"""

import math
import re
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Dict, Iterator, Optional, Sequence

INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])$")


@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open interval of numbers; ``inf`` ends are unbounded."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        match = INTERVAL.match(text.strip())
        if match is None:
            raise ValueError(f"not an interval: {text!r} (write e.g. '[0, inf)' or '(0, 1]')")
        opening, low, high, closing = match.groups()
        return cls(float(low), float(high), opening == "(", closing == ")")

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def rule(self) -> str:
        """The range as the one-line error states it: 'must be >= 0', 'must be in (0, 1]'."""
        def number(x: float) -> str:
            return str(int(x)) if x.is_integer() else repr(x)
        if math.isinf(self.high):
            return f"must be {'>' if self.low_open else '>='} {number(self.low)}"
        if math.isinf(self.low):
            return f"must be {'<' if self.high_open else '<='} {number(self.high)}"
        return (f"must be in {'(' if self.low_open else '['}{number(self.low)}, {number(self.high)}"
                f"{')' if self.high_open else ']'}")


def declared(default: Any = MISSING, doc: str = "", *, data: bool = True, range: Optional[str] = None,
             choices: Optional[Sequence] = None) -> Field:
    """A dataclass field with its documentation, range and choices; list and dict defaults are
    copied per instance."""
    metadata = {"doc": doc, "data": data, **({"range": Interval.parse(range)} if range else {}),
                **({"choices": tuple(choices)} if choices is not None else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def choices_of(item: Field) -> Optional[tuple]:
    """The values a field was declared to take (None when any value of its type goes)."""
    return item.metadata.get("choices")


def interval_of(item: Field) -> Optional[Interval]:
    """The interval a field was declared with (None when it has none)."""
    return item.metadata.get("range")


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig"


def declaration_errors(node, prefix: str = "") -> Iterator[str]:
    """One-line messages for every value of dataclass instance ``node`` (nested ones included)
    outside its declared interval or choices; None values (an unset optional) are not checked."""
    for item in fields(node):
        key, value = f"{prefix}{item.name}", getattr(node, item.name)
        if is_dataclass(value):
            yield from declaration_errors(value, f"{key}.")
            continue
        if value is None:
            continue
        elements = list(value) if _is_list(value) else [value]
        interval, allowed = interval_of(item), choices_of(item)
        if interval is not None and not all(interval.holds(element) for element in elements):
            yield f"{key}={plain(value)!r} is out of range: {interval.rule()}"
        if allowed is not None and not all(element in allowed for element in elements):
            yield f"{key}={plain(value)!r} is not a known choice; use one of: {', '.join(map(str, allowed))}"


def check_declared(node, prefix: str = "") -> None:
    """FedcaError (one line) for the first value of ``node`` outside its declared range or choices
    (``prefix``: the node's dotted place in the run config, e.g. ``agg.``)."""
    from fedca.errors import FedcaError

    for message in declaration_errors(node, prefix):
        raise FedcaError(message)


def doc_of(item: Field) -> str:
    """The documentation line a field was declared with ('' when none)."""
    return item.metadata.get("doc", "")


def data_values(node) -> Dict[str, Any]:
    """{name: value} of the fields of dataclass instance ``node`` declared to shape the data."""
    return {item.name: plain(getattr(node, item.name)) for item in fields(node) if item.metadata.get("data", True)}


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: lists for list-like config nodes."""
    if _is_list(value):
        return [plain(element) for element in value]
    return value
