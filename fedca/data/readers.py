"""Parse a delimited ratings file into a clean (user, item, rating, time) frame.

Every malformed input fails with one line naming the file and the 1-based line number.

Ids: a user (or item) column whose every token is a decimal integer that fits 64 bits
(``12``, ``-3``, ``7.0``) holds integer ids, read exactly. Any other column holds string ids:
each token, stripped of surrounding whitespace, is an id compared as text (``AGZ8SM1BGK3CK``;
``7`` and ``007`` are two ids there). An empty id is an error. Either way ids are later
renumbered 0.. in order of first appearance (``fedca.data.split``).

Time rules:

* ``column``: the timestamp column, as integers.
* ``date_columns``: ``dataset.date_cols`` names the year, month and day columns; the time is
  the integer ``year * 10000 + month * 100 + day`` (Last.fm-2K's tag assignments).
* ``item_first_appearance`` (FilmTrust, as the official FedCA code): an interaction's time is
  the position at which its item first appears in the file.
* ``file_order``: the line's position in the file.

Ties in time are broken later by file order (``pos``).
"""

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fedca.config.schema import DatasetConfig
from fedca.errors import FedcaError

SNIFFED_SEPARATORS = ("\t", ",")
NAMED_SEPARATORS = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "semicolon": ";"}


def _open_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise FedcaError(f"cannot read {path}: {exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig offsets skip the BOM
        line = len(re.findall(rb"\r\n|\r|\n", raw[:start])) + 1
        raise FedcaError(f"{path}, line {line}: not valid UTF-8 text") from None


def _sniff_separator(path: Path, first_line: str) -> str:
    for sep in SNIFFED_SEPARATORS:
        if sep in first_line:
            return sep
    raise FedcaError(f"{path}, line 1: no tab or comma separator found; set dataset.sep")


def _column_index(path: Path, spec: str, header_names: list, key: str) -> int:
    if spec.isascii() and spec.isdigit():
        index = int(spec)
        if index >= len(header_names):
            raise FedcaError(f"{path}: dataset.{key}={spec} but lines have {len(header_names)} fields")
        return index
    if spec not in header_names:
        raise FedcaError(f"{path}: dataset.{key}={spec!r} is not a column of the header {header_names}")
    return header_names.index(spec)


LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _splitter(sep: str):
    """Field splitter: runs of blanks for a space separator, else the exact separator string."""
    if sep == " ":
        return lambda line: line.split()
    return lambda line: line.split(sep)


def _split_fields(path: Path, text: str, sep: str, header: bool) -> tuple:
    lines = LINE_BREAK.split(text)
    split = _splitter(sep)
    start = 1 if header else 0
    header_names = split(lines[0]) if header and lines else []
    body = lines[start:]
    if not any(line.strip() for line in body):
        raise FedcaError(f"{path}: the file holds no ratings")
    rows = []
    line_numbers = []
    for offset, line in enumerate(body):
        if not line.strip():
            continue
        rows.append(split(line))
        line_numbers.append(start + offset + 1)
    width = len(rows[0])
    for fields, number in zip(rows, line_numbers):
        if len(fields) != width:
            raise FedcaError(f"{path}, line {number}: expected {width} fields separated by {sep!r}, "
                             f"found {len(fields)} (check dataset.sep)")
    if not header_names:
        header_names = [str(i) for i in range(width)]
    return rows, np.asarray(line_numbers), header_names


INTEGER = r"[+-]?[0-9]+(?:\.0*)?"
INT64_LIMIT = 2 ** 63


def _fail(path: Path, values: pd.Series, line_numbers: np.ndarray, bad: np.ndarray, what: str, rule: str):
    row = int(np.flatnonzero(bad)[0])
    raise FedcaError(f"{path}, line {line_numbers[row]}: {what} {values.iloc[row]!r} {rule} "
                     f"(check dataset.sep and the columns)")


def _integer_parse(text: pd.Series):
    """Exact int64 parse of stripped decimal integers (``12``, ``-3``, ``7.0``).

    Returns (values, None), or (None, (row, rule)) for the first token that is not one."""
    shaped = text.str.fullmatch(INTEGER).fillna(False).to_numpy(dtype=bool)
    if not shaped.all():
        return None, (int(np.flatnonzero(~shaped)[0]), "is not an integer")
    whole = text.str.replace(r"\.0*$", "", regex=True)
    long = whole.str.lstrip("+-").str.lstrip("0").str.len().to_numpy() >= 19
    if long.any():
        outside = np.zeros(len(whole), dtype=bool)
        outside[long] = [not -INT64_LIMIT <= int(v) < INT64_LIMIT for v in whole[long]]
        if outside.any():
            return None, (int(np.flatnonzero(outside)[0]), "does not fit a 64-bit integer")
    return whole.astype(np.int64).to_numpy(), None


def _integers(path: Path, values: pd.Series, line_numbers: np.ndarray, what: str) -> np.ndarray:
    """Integers (timestamps, date parts); anything else fails naming its line."""
    parsed, problem = _integer_parse(values.str.strip())
    if problem is not None:
        bad = np.zeros(len(values), dtype=bool)
        bad[problem[0]] = True
        _fail(path, values, line_numbers, bad, what, problem[1])
    return parsed


def _ids(path: Path, values: pd.Series, line_numbers: np.ndarray, what: str) -> np.ndarray:
    """int64 ids when every token is an integer within 64 bits, else the stripped tokens (object array)."""
    text = values.str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        _fail(path, values, line_numbers, empty, what, "is empty")
    parsed, _ = _integer_parse(text)
    return parsed if parsed is not None else text.to_numpy(dtype=object)


def _dates(path: Path, columns: list, line_numbers: np.ndarray) -> np.ndarray:
    """``year * 10000 + month * 100 + day`` [rows] from the year, month and day columns."""
    parts = []
    for values, what, low, high in zip(columns, ("year", "month", "day"), (0, 1, 1), (9999, 12, 31)):
        numbers = _integers(path, values, line_numbers, what)
        outside = (numbers < low) | (numbers > high)
        if outside.any():
            _fail(path, values, line_numbers, outside, what, f"is outside {low}..{high}")
        parts.append(numbers)
    year, month, day = parts
    return year * 10000 + month * 100 + day


def _numeric(path: Path, values: pd.Series, line_numbers: np.ndarray, what: str, integer: bool) -> np.ndarray:
    if integer:
        return _integers(path, values, line_numbers, what)
    parsed = pd.to_numeric(values.str.strip(), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(parsed)
    if bad.any():
        _fail(path, values, line_numbers, bad, what, "is not a finite number")
    return parsed


def read_ratings(path: Path, spec: DatasetConfig) -> pd.DataFrame:
    """Read ``path`` as ``spec`` describes.

    Returns a frame with ``user``, ``item`` (raw ids: int64, or str objects for a string-id
    column, see the module docstring), float64 ``rating`` (1.0 when the
    file has no rating column), int64 ``time`` and int64 ``pos`` (0-based row order in the file).
    """
    text = _open_text(path)
    if not text.strip():
        raise FedcaError(f"{path}: the file is empty")
    first_line = text.split("\n", 1)[0]
    sep = _sniff_separator(path, first_line) if spec.sep == "auto" else NAMED_SEPARATORS.get(spec.sep, spec.sep)
    rows, line_numbers, header_names = _split_fields(path, text, sep, spec.header)
    table = pd.DataFrame(rows, dtype=str)
    width = table.shape[1]
    names = header_names if len(header_names) == width else [str(i) for i in range(width)]

    def column(key: str, spec_text=None):
        return table.iloc[:, _column_index(path, str(getattr(spec, key) if spec_text is None else spec_text),
                                           names, key)]

    frame = pd.DataFrame({
        "user": _ids(path, column("user_col"), line_numbers, "user id"),
        "item": _ids(path, column("item_col"), line_numbers, "item id"),
    })
    if spec.rating_col is None:
        frame["rating"] = 1.0
    else:
        frame["rating"] = _numeric(path, column("rating_col"), line_numbers, "rating", integer=False)
    frame["pos"] = np.arange(len(frame), dtype=np.int64)
    if spec.time_rule == "column":
        frame["time"] = _numeric(path, column("timestamp_col"), line_numbers, "timestamp", integer=True)
    elif spec.time_rule == "date_columns":
        date_cols = list(spec.date_cols or [])
        if len(date_cols) != 3:
            raise FedcaError(f"{path}: dataset.time_rule=date_columns needs dataset.date_cols=[year,month,day], "
                             f"got {date_cols}")
        frame["time"] = _dates(path, [column("date_cols", c) for c in date_cols], line_numbers)
    elif spec.time_rule == "item_first_appearance":
        first_seen = frame.drop_duplicates("item")[["item", "pos"]].rename(columns={"pos": "time"})
        frame = frame.merge(first_seen, on="item", how="left")
    else:
        frame["time"] = frame["pos"]
    return frame[["user", "item", "rating", "time", "pos"]]

