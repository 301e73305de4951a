"""Property-based fuzzing of the ratings reader and of the whole data pipeline.

Every input (random bytes, messy delimited text, gzip garbage, well-formed files) must either
parse to exactly what an independent reference parser written here expects, or fail with a
``FedcaError`` whose message is one line, names the file and, for a problem on one line, gives
that line's 1-based number. Any other exception fails the test.

The reference's reading of a file (documented in ``reference_parse``):

* text is UTF-8; lines end with ``\\n``, ``\\r\\n`` or ``\\r`` (Python's universal newlines);
  other Unicode "line separators" (U+2028, U+0085, form feed, ...) are ordinary characters;
* a blank (whitespace-only) line is skipped; with ``header`` the first line names the columns;
* fields are split on the separator (any run of whitespace for ``space``); the first data line
  fixes the field count and any line with another count is malformed;
* an id column (user, item) is an integer column when every token, stripped of surrounding
  whitespace, is an ASCII decimal integer (optional sign; optionally ``.`` and zeros after it) with
  a value in [-2**63, 2**63): its ids are those exact
  values; any other id column holds string ids, the stripped tokens; an empty id is malformed;
* timestamps are integers, ratings finite numbers; tokens in canonical decimal form must
  be accepted with their exact value, other spellings (``1.0``, ``+3``, `` 4``, ``1e3``) may be
  rejected, but when accepted must keep their exact value;
* a leading UTF-8 BOM may be rejected (on line 1, or as a header mismatch) or ignored.
"""

import gzip
import math
import os
import re
import string
import tempfile
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import List, Optional

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fedca.config.schema import DatasetConfig, ProtocolConfig
from fedca.data.fed_data import load_fed_data
from fedca.data.readers import read_ratings
from fedca.errors import FedcaError


def fuzz(max_examples: int, shrink: bool = True) -> settings:
    """Seeded, bounded hypothesis settings (no example database, no deadline).

    ``shrink=False`` for the big composite generators: shrinking their failures takes minutes,
    and the targeted tests below give the minimal reproducers."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


INT64 = 2 ** 63
# ids and timestamps the reader must accept: |v| < 2**62 is its own bound (readers.py); the last
# few thousand below it are left to test_integers_just_below_the_readers_bound_are_accepted
INT_LIMIT = 2 ** 62 - 2 ** 12
CANONICAL_INT = re.compile(r"-?[0-9]+\Z")
CANONICAL_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
NAMED_SEPARATORS = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "semicolon": ";"}
# characters str.splitlines() breaks on that are NOT line ends in a text file (universal newlines)
UNICODE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
BOM = "\ufeff"


# --------------------------------------------------------------------------- reference parser


@dataclass
class Verdict:
    """What the reader may do with one input.

    ``fatal_lines``: the input is malformed on these lines (reader must raise, naming one of
    them or, when ``file_error`` is true, the file only). ``maybe_lines``: lines the reader may
    reject (unusual spellings, a BOM) but, if it accepts them, must parse as ``rows`` says.
    ``rows`` is None when the reader must raise.
    """

    fatal_lines: set = field(default_factory=set)
    file_error: bool = False
    maybe_lines: set = field(default_factory=set)
    maybe_file_error: bool = False
    rows: Optional[list] = None        # [(user, item, rating, time, pos)]

    @property
    def must_fail(self) -> bool:
        return self.rows is None


def universal_lines(text: str) -> List[str]:
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def bad_utf8_lines(raw: bytes) -> set:
    """The 1-based line of the first byte that is not UTF-8 (empty set when all is UTF-8).

    A lone CR is a line end for universal newlines but not for grep/sed/vim, so a file that
    has one may be counted either way."""
    try:
        raw.decode("utf-8")
        return set()
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        return {len(re.findall(rb"\r\n|\r|\n", before)) + 1, before.count(b"\n") + 1}


def classify(token: str, integer: bool):
    """('good' | 'maybe' | 'bad', exact value) of one id/timestamp (integer) or rating cell."""
    try:
        exact = Decimal(token)
    except (InvalidOperation, ValueError):
        return "bad", None
    if not exact.is_finite():
        return "bad", None
    if integer:
        try:
            whole = exact == exact.to_integral_value()
        except InvalidOperation:
            return "bad", None
        if not whole or abs(exact) >= INT64:
            return "bad", None
        value = int(exact)
        good = CANONICAL_INT.match(token) is not None and abs(value) < INT_LIMIT
        return ("good" if good else "maybe"), value
    value = float(exact)
    if not math.isfinite(value):
        return "bad", None
    canonical = CANONICAL_INT.match(token) or CANONICAL_FLOAT.match(token)
    return ("good" if canonical else "maybe"), value


INTEGER_ID = re.compile(r"[+-]?[0-9]+(\.0*)?")


def id_column(tokens: List[str]):
    """(values, lines-index of empty ids) of one id column, per the module docstring."""
    stripped = [token.strip() for token in tokens]
    empty = [k for k, token in enumerate(stripped) if token == ""]
    if all(INTEGER_ID.fullmatch(token) for token in stripped):
        values = [int(token.split(".")[0]) for token in stripped]
        if all(-INT64 <= value < INT64 for value in values):
            return values, empty
    return stripped, empty


def split_fields(line: str, sep: str) -> List[str]:
    return line.split() if sep == " " else line.split(sep)


def reference_parse(raw: bytes, spec: DatasetConfig) -> Verdict:
    """The independent reading of ``raw`` described in the module docstring."""
    bad_lines = bad_utf8_lines(raw)
    if bad_lines:
        return Verdict(fatal_lines=bad_lines)
    text = raw.decode("utf-8")
    verdict = Verdict()
    if text.startswith(BOM):
        text = text[1:]
        verdict.maybe_lines.add(1)
        verdict.maybe_file_error = spec.header
    lines = universal_lines(text)
    if not text.strip():
        verdict.file_error = True
        return verdict
    for number, line in enumerate(lines, start=1):
        if any(ch in line for ch in UNICODE_BREAKS):
            verdict.maybe_lines.add(number)
    if spec.sep == "auto":
        first = lines[0] if lines else ""
        sep = "\t" if "\t" in first else "," if "," in first else None
        if sep is None:
            verdict.fatal_lines.add(1)
            return verdict
    else:
        sep = NAMED_SEPARATORS.get(spec.sep, spec.sep)
    start = 1 if spec.header else 0
    header_names = split_fields(lines[0], sep) if spec.header and lines else []
    body = [(number, split_fields(line, sep)) for number, line in enumerate(lines[start:], start=start + 1)
            if line.strip()]
    if not body:
        verdict.file_error = True
        return verdict
    width = len(body[0][1])
    wrong_width = {number for number, fields in body if len(fields) != width}
    if wrong_width:
        verdict.fatal_lines |= wrong_width
        return verdict
    names = header_names if len(header_names) == width else [str(i) for i in range(width)]

    def resolve(key: str) -> Optional[int]:
        text_spec = str(getattr(spec, key))
        if text_spec.isdigit():
            index = int(text_spec)
            return index if index < width else None
        return names.index(text_spec) if text_spec in names else None

    roles = [("user_col", None), ("item_col", None)]
    if spec.rating_col is not None:
        roles.append(("rating_col", False))
    if spec.time_rule == "column":
        roles.append(("timestamp_col", True))
    columns = {}
    for key, integer in roles:
        index = resolve(key)
        if index is None:
            verdict.file_error = True
            continue
        if integer is None:   # an id column
            columns[key], empty = id_column([fields[index] for _, fields in body])
            verdict.fatal_lines |= {body[k][0] for k in empty}
            continue
        values = []
        for number, fields in body:
            status, value = classify(fields[index], integer)
            if status == "bad":
                verdict.fatal_lines.add(number)
            elif status == "maybe":
                verdict.maybe_lines.add(number)
            values.append(value)
        columns[key] = values
    if verdict.fatal_lines or verdict.file_error:
        return verdict
    count = len(body)
    ratings = columns.get("rating_col", [1.0] * count)
    if spec.time_rule == "column":
        times = columns["timestamp_col"]
    elif spec.time_rule == "item_first_appearance":
        first_seen = {}
        for pos, item in enumerate(columns["item_col"]):
            first_seen.setdefault(item, pos)
        times = [first_seen[item] for item in columns["item_col"]]
    else:
        times = list(range(count))
    verdict.rows = [(u, i, float(r), t, pos) for pos, (u, i, r, t)
                    in enumerate(zip(columns["user_col"], columns["item_col"], ratings, times))]
    return verdict


# --------------------------------------------------------------------------- checking helpers


def write_temp(folder: Path, data: bytes, suffix: str) -> Path:
    handle, name = tempfile.mkstemp(dir=folder, suffix=suffix)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return Path(name)


def error_line(message: str, path: Path) -> Optional[int]:
    found = re.search(r"\bline (\d+)\b", message.replace(str(path), "<file>"))
    return int(found.group(1)) if found else None


def check_error(exc: FedcaError, path: Path, verdict: Verdict) -> None:
    """A FedcaError is acceptable when it is one line, names the file and, if the input is
    malformed on specific lines, names one of them."""
    message = str(exc)
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"
    assert str(path) in message, f"message does not name the file: {message!r}"
    line = error_line(message, path)
    allowed_lines = verdict.fatal_lines | verdict.maybe_lines
    if line is not None:
        assert line in allowed_lines, (f"message names line {line}, but the problem lines are "
                                       f"{sorted(verdict.fatal_lines)} (maybe: {sorted(verdict.maybe_lines)}): "
                                       f"{message!r}")
    else:
        assert verdict.file_error or verdict.maybe_file_error, (
            f"message names no line, but the input is bad on lines {sorted(verdict.fatal_lines)} "
            f"(maybe: {sorted(verdict.maybe_lines)}) or fine: {message!r}")


def check_frame(frame, verdict: Verdict) -> None:
    assert not verdict.must_fail, (f"reader accepted input that is malformed on lines {sorted(verdict.fatal_lines)}"
                                   f" (file-level problem: {verdict.file_error}); got\n{frame}")
    assert list(frame.columns) == ["user", "item", "rating", "time", "pos"]
    string_ids = [any(isinstance(row[k], str) for row in verdict.rows) for k in (0, 1)]
    dtypes = [str(t) for t in frame.dtypes]
    assert [dtypes[k] in ("object", "str") if string_ids[k] else dtypes[k] == "int64" for k in (0, 1)] == [True] * 2
    assert dtypes[2:] == ["float64", "int64", "int64"]
    got = list(zip(frame["user"].tolist(), frame["item"].tolist(), frame["rating"].tolist(),
                   frame["time"].tolist(), frame["pos"].tolist()))
    assert got == verdict.rows


def read_and_check(folder: Path, raw: bytes, spec_kwargs: dict, suffix: str = ".txt", verdict=None):
    """Write ``raw``, read it, and check the outcome against the reference. Returns the frame or None."""
    path = write_temp(folder, raw, suffix)
    spec = DatasetConfig(name="csv", file=str(path), **spec_kwargs)
    try:
        if verdict is None:
            verdict = reference_parse(raw, spec)
        try:
            frame = read_ratings(path, spec)
        except FedcaError as exc:
            check_error(exc, path, verdict)
            return None
        check_frame(frame, verdict)
        return frame
    finally:
        path.unlink()


# --------------------------------------------------------------------------- generators

SEPARATORS = [  # (dataset.sep, what the file uses)
    ("\t", "\t"), ("tab", "\t"), ("\\t", "\t"), ("auto", "\t"), ("auto", ","), (",", ","), ("comma", ","),
    (" ", " "), ("space", " "), ("::", "::"), (";", ";"), ("semicolon", ";"), ("|", "|"),
]
ALL_SEPARATOR_TEXTS = ["\t", ",", " ", "::", ";", "|", ":", "  ", "\t ", ", "]
JUNK_ALPHABET = string.ascii_letters + "éüßж漢字😀_-."
ODD_TOKENS = [
    # spellings that may be rejected, but must keep their value when accepted
    "1.0", "+3", " 4", "4 ", "1e3", "-0", "007", "9007199254740993.0", "1.", ".5", "1E+02",
    "٣", "１", BOM + "1", "\u00a05",
    # beyond the bounds: huge ids, beyond int64 and float
    str(2 ** 62 - 256), str(2 ** 62), str(INT64), str(-INT64 - 1), "9" * 25, "1e400", "-1e400", "1e308", "5e-324",
    # not numbers
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "", "abc", "1_000", "0x10", "1,5", "None", "null",
    "N/A", "\x00", "1\x002", "1.5", "-2.5", "é", "😀", "\ufffd", "1\x1f2",
]
UNICODE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)


@st.composite
def layouts(draw, force_rating=None, force_timestamp=None, allow_header=True):
    """A column layout and the DatasetConfig fields that read it."""
    spec_sep, sep = draw(st.sampled_from(SEPARATORS))
    has_rating = draw(st.booleans()) if force_rating is None else force_rating
    has_time = draw(st.booleans()) if force_timestamp is None else force_timestamp
    extras = draw(st.integers(0, 2))
    roles = ["user", "item"] + (["rating"] if has_rating else []) + (["time"] if has_time else [])
    roles += [f"extra{k}" for k in range(extras)]
    roles = draw(st.permutations(roles))
    header = allow_header and draw(st.booleans())
    names = draw(st.lists(st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True).filter(lambda n: n != "none"),
                          min_size=len(roles), max_size=len(roles), unique=True))

    def ref(role):
        index = roles.index(role)
        if header and draw(st.booleans()):
            return names[index]
        return str(index)

    if has_time:
        time_rule = draw(st.sampled_from(["column", "column", "file_order", "item_first_appearance"]))
    else:
        time_rule = draw(st.sampled_from(["file_order", "item_first_appearance"]))
    spec = dict(sep=spec_sep, header=header, user_col=ref("user"), item_col=ref("item"),
                rating_col=ref("rating") if has_rating else None,
                timestamp_col=ref("time") if has_time else None, time_rule=time_rule)
    return dict(spec=spec, sep=sep, roles=list(roles), names=names, header=header)


def ids(pool_size=6):
    return st.one_of(st.integers(1, pool_size), st.integers(1, pool_size), st.integers(-INT_LIMIT + 1, INT_LIMIT - 1))


def rating_tokens():
    return st.one_of(st.integers(-5, 5).map(str),
                     st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
                     st.floats(-10, 10, allow_nan=False).map(repr))


def junk_cell(sep):
    banned = set(sep) | set(" \t,;:|")
    alphabet = "".join(ch for ch in JUNK_ALPHABET if ch not in banned)
    return st.text(alphabet=alphabet, min_size=1, max_size=6)


@st.composite
def clean_rows(draw, layout, min_rows=1, max_rows=12):
    """Well-formed lines (lists of field texts) for ``layout``."""
    cells = {
        "user": ids(3).map(str), "item": ids(8).map(str), "rating": rating_tokens(),
        "time": st.one_of(st.integers(0, 50), st.integers(-INT_LIMIT + 1, INT_LIMIT - 1)).map(str),
    }
    count = draw(st.integers(min_rows, max_rows))
    rows = []
    for _ in range(count):
        rows.append([draw(cells[role]) if role in cells else draw(junk_cell(layout["sep"]))
                     for role in layout["roles"]])
    return rows


def render(layout, rows, newline="\n", trailing=True, header_line=None) -> str:
    lines = []
    if layout["header"]:
        lines.append(layout["sep"].join(layout["names"]) if header_line is None else header_line)
    lines += [layout["sep"].join(row) for row in rows]
    return newline.join(lines) + (newline if trailing else "")


@st.composite
def messy_files(draw, min_rows=0, max_rows=12):
    """Delimited text with a random dose of every kind of damage; returns (bytes, spec kwargs)."""
    layout = draw(layouts())
    rows = draw(clean_rows(layout, min_rows=min_rows, max_rows=max_rows))
    damage = draw(st.sampled_from([0.0, 0.0, 0.05, 0.1, 0.3]))
    sep = layout["sep"]

    def hit(scale=1.0):
        return damage > 0 and draw(st.floats(0, 1)) < damage * scale

    lines = []
    if layout["header"]:
        header = sep.join(layout["names"])
        if hit(2):   # stray separators or blanks around the column names
            header = draw(st.sampled_from([header + sep, sep + header, header + " ", " " + header,
                                           (sep + sep).join(layout["names"]), header.upper()]))
        lines.append(header)

    for row in rows:
        row = list(row)
        if hit():   # odd or wrong token in a cell
            row[draw(st.integers(0, len(row) - 1))] = draw(st.one_of(st.sampled_from(ODD_TOKENS), UNICODE_TEXT))
        if hit(0.5):   # a field too many or too few
            if draw(st.booleans()) and len(row) > 1:
                row.pop(draw(st.integers(0, len(row) - 1)))
            else:
                row.insert(draw(st.integers(0, len(row))), draw(ids().map(str)))
        joiners = [sep] * (len(row) - 1)
        if hit(0.5) and joiners:   # mixed separators
            joiners[draw(st.integers(0, len(joiners) - 1))] = draw(st.sampled_from(ALL_SEPARATOR_TEXTS))
        line = row[0] + "".join(j + c for j, c in zip(joiners, row[1:]))
        if hit(0.3):   # random unicode garbage in place of the line
            line = draw(UNICODE_TEXT)
        lines.append(line)
        if hit():   # duplicate row
            lines.append(line)
        if hit():   # empty or whitespace-only line
            lines.append(draw(st.sampled_from(["", " ", "\t", "  \t "])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    if hit(2) and text:   # truncated last line
        text = text[: draw(st.integers(max(0, len(text) - 12), len(text) - 1))]
    if hit(2):
        text = BOM + text
    raw = text.encode("utf-8")
    if hit(0.5) and raw:   # a byte that is not UTF-8
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\x80", b"\xed\xa0\x80"])) + raw[at:]
    return raw, layout["spec"]


@st.composite
def specs(draw):
    """Any reader settings, sensible or not (column specs stay ASCII here)."""
    column = st.one_of(st.integers(0, 5).map(str), st.sampled_from(["user", "item", "rating", "a", "0x", ""]))
    time_rule = draw(st.sampled_from(["column", "file_order", "item_first_appearance"]))
    timestamp = draw(column) if time_rule == "column" else draw(st.one_of(st.none(), column))
    return dict(sep=draw(st.sampled_from([s for s, _ in SEPARATORS] + [":", "x"])), header=draw(st.booleans()),
                user_col=draw(column), item_col=draw(column), rating_col=draw(st.one_of(st.none(), column)),
                timestamp_col=timestamp, time_rule=time_rule)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-loaders")


# --------------------------------------------------------------------------- reader properties


@fuzz(120)
@given(data=st.data())
def test_well_formed_files_parse_to_exactly_the_written_values(folder, data):
    layout = data.draw(layouts())
    rows = data.draw(clean_rows(layout))
    text = render(layout, rows, newline=data.draw(st.sampled_from(["\n", "\r\n"])), trailing=data.draw(st.booleans()))
    raw = text.encode("utf-8")
    spec = DatasetConfig(name="csv", file="unused", **layout["spec"])
    verdict = reference_parse(raw, spec)
    assert not verdict.must_fail and not verdict.maybe_lines, "the generator wrote a malformed file"
    # the reference against the generator itself: the values written are the values expected
    roles = layout["roles"]
    assert [r[0] for r in verdict.rows] == [int(row[roles.index("user")]) for row in rows]
    assert [r[1] for r in verdict.rows] == [int(row[roles.index("item")]) for row in rows]
    frame = read_and_check(folder, raw, layout["spec"], verdict=verdict)
    assert frame is not None, "a well-formed file was rejected"


@fuzz(150, shrink=False)
@given(case=messy_files())
def test_messy_text_parses_correctly_or_fails_naming_file_and_line(folder, case):
    raw, spec = case
    read_and_check(folder, raw, spec)


BYTE_TOKENS = [b"1", b"22", b"-3", b"4.5", b"\t", b",", b" ", b"::", b"\n", b"\r\n", b"\r", b"\xef\xbb\xbf", b"nan",
               b"\xff", b"\xc3\xa9", b"99999999999999999999", b"\x00", b"\xe2\x80\xa8", b"\xc2\x85", b"\x0c"]


@fuzz(120)
@given(raw=st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(BYTE_TOKENS), max_size=60).map(b"".join)),
       spec=specs())
def test_random_bytes_parse_correctly_or_fail_naming_file_and_line(folder, raw, spec):
    read_and_check(folder, raw, spec)


@fuzz(60)
@given(raw=st.binary(max_size=120),
       mode=st.sampled_from(["garbage", "gzip", "gzip-truncated", "gzip-flipped", "garbage-deflate"]),
       cut=st.integers(0, 200), spec=specs())
@example(raw=b"1\t2\t3\t4\n", mode="garbage-deflate", cut=0,
         spec=dict(sep="\t", header=False, user_col="0", item_col="1", rating_col="2", timestamp_col="3",
                   time_rule="column"))
def test_gzip_files_decompress_correctly_or_fail_naming_the_file(folder, raw, mode, cut, spec):
    if mode == "gzip":
        blob = gzip.compress(raw, mtime=0)
    elif mode == "gzip-truncated":
        blob = gzip.compress(raw, mtime=0)[: cut % 40]
    elif mode == "gzip-flipped":
        blob = bytearray(gzip.compress(raw, mtime=0))
        blob[10 + cut % (len(blob) - 10)] ^= 0x55
        blob = bytes(blob)
    elif mode == "garbage-deflate":   # a valid gzip header over a body that is not deflate data
        blob = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage" + raw
    else:
        blob = raw
    try:
        content = gzip.decompress(blob)
    except Exception:   # noqa: BLE001 - any failure of the standard library means "unreadable"
        content = None
    verdict = Verdict(file_error=True) if content is None else None
    if content is not None:
        verdict = reference_parse(content, DatasetConfig(name="csv", file="unused", **spec))
    read_and_check(folder, blob, spec, suffix=".gz", verdict=verdict)


@fuzz(60)
@given(breaker=st.sampled_from(list(UNICODE_BREAKS)), sep=st.sampled_from(["\t", ",", ";", "::"]),
       rows=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(0, 99)), min_size=2, max_size=6),
       where=st.integers(0, 5))
@example(breaker="\x85", sep="\t", rows=[(1, 2, 3), (4, 5, 6)], where=0)
def test_unicode_line_separators_inside_a_field_do_not_split_the_line(folder, breaker, sep, rows, where):
    # U+0085, U+2028, form feed, ... are not line ends in a text file (only \n, \r\n, \r are)
    notes = ["note"] * len(rows)
    notes[where % len(rows)] = "a" + breaker + "b"
    raw = "".join(f"{u}{sep}{i}{sep}{t}{sep}{note}\n" for (u, i, t), note in zip(rows, notes)).encode()
    frame = read_and_check(folder, raw, dict(sep=sep, rating_col=None, timestamp_col="2"))
    if frame is not None:
        assert len(frame) == len(rows)


@fuzz(40)
@given(sep=st.sampled_from(["::", "||", ", "]), rows=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)),
                                                       min_size=1, max_size=4),
       where=st.integers(0, 3))
@example(sep="::", rows=[(1, 2)], where=0)
def test_a_unit_separator_byte_is_data_not_a_field_break_with_multi_character_separators(folder, sep, rows, where):
    # "1\x1f2::3::4" has three fields with sep "::"; the first is not an id
    lines = [f"{u}{sep}{i}{sep}4" for u, i in rows]
    where %= len(rows)
    lines[where] = lines[where].replace(sep, "\x1f", 1)
    raw = ("\n".join(lines) + "\n").encode()
    read_and_check(folder, raw, dict(sep=sep, rating_col="2", timestamp_col=None, time_rule="file_order"))


@fuzz(60)
@given(user=st.integers(2 ** 53 + 1, INT_LIMIT - 1), spelled=st.sampled_from(["{}.0", "{}", "{}e0"]),
       other=st.sampled_from(["1.0", "1", "2e0"]))
def test_large_ids_keep_their_exact_value_or_are_rejected(folder, user, spelled, other):
    # one line spells its id as a float: the reader may reject it, but must never round an id
    # (a spelling that is not an integer, like 1e0, makes the column one of string ids: exact tokens)
    raw = f"{spelled.format(user)}\t7\t5\t100\n{user - 1}\t7\t5\t101\n{other}\t8\t5\t102\n".encode()
    frame = read_and_check(folder, raw, dict(sep="\t"))
    assert frame is not None
    as_strings = "e" in spelled or "e" in other
    expected = [spelled.format(user), str(user - 1)] if as_strings else [user, user - 1]
    assert frame["user"].tolist()[:2] == expected


@fuzz(40)
@given(names=st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True), min_size=3, max_size=3, unique=True),
       gaps=st.lists(st.sampled_from([" ", "  ", " \t"]), min_size=2, max_size=2),
       lead=st.sampled_from(["", " "]), trail=st.sampled_from(["", " ", "  "]))
@example(names=["user", "item", "rating"], gaps=[" ", " "], lead="", trail=" ")
def test_space_separated_header_is_split_like_the_data_lines(folder, names, gaps, lead, trail):
    # with sep=space a data line splits on any run of whitespace; its header must too
    header = lead + names[0] + gaps[0] + names[1] + gaps[1] + names[2] + trail
    raw = f"{header}\n7 8 4.5\n{lead}9{gaps[0]}10{gaps[1]}2{trail}\n".encode()
    frame = read_and_check(folder, raw, dict(sep="space", header=True, user_col=names[0], item_col=names[1],
                                             rating_col=names[2], timestamp_col=None, time_rule="file_order"))
    assert frame is not None, "a space-separated file with a header was rejected"


@fuzz(40)
@given(blank_lines=st.integers(0, 2), header=st.booleans(), spec_sep=st.sampled_from(["\t", "auto", "space", "::"]),
       rows=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(1, 5)), min_size=1, max_size=4))
@example(blank_lines=1, header=False, spec_sep="\t", rows=[(1, 2, 3), (5, 6, 7)])
def test_a_leading_byte_order_mark_is_ignored_or_reported_on_line_1(folder, blank_lines, header, spec_sep, rows):
    sep = {"auto": "\t", "space": " "}.get(spec_sep, spec_sep)
    lines = [""] * blank_lines + ([sep.join(["u", "i", "r"])] if header else [])
    lines += [sep.join(map(str, row)) for row in rows]
    raw = (BOM + "\n".join(lines) + "\n").encode()
    columns = ("u", "i", "r") if header and not blank_lines else ("0", "1", "2")
    read_and_check(folder, raw, dict(sep=spec_sep, header=header, user_col=columns[0], item_col=columns[1],
                                     rating_col=columns[2], timestamp_col=None, time_rule="file_order"))


@fuzz(40)
@given(value=st.integers(2 ** 62 - 2 ** 12, 2 ** 62 - 1), negative=st.booleans(),
       role=st.sampled_from(["user", "item", "timestamp"]))
@example(value=2 ** 62 - 256, negative=False, role="timestamp")
def test_integers_just_below_the_readers_bound_are_accepted(folder, value, negative, role):
    # readers.py accepts ids and timestamps with |v| < 2**62; the check must not round v first
    value = -value if negative else value
    cells = {"user": "1", "item": "2", "timestamp": "3"}
    cells[role] = str(value)
    raw = f"{cells['user']}\t{cells['item']}\t5\t{cells['timestamp']}\n".encode()
    path = write_temp(folder, raw, ".tsv")
    try:
        frame = read_ratings(path, DatasetConfig(name="csv", file=str(path)))
    finally:
        path.unlink()
    assert frame[{"user": "user", "item": "item", "timestamp": "time"}[role]].tolist() == [value]


@fuzz(60)
@given(column=st.one_of(st.text(max_size=3), st.sampled_from(["user", "item", "rating", "ts"]),
                        st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=2)),
       which=st.sampled_from(["user_col", "item_col", "rating_col", "timestamp_col"]))
@example(column="\u00b2", which="user_col")
def test_any_column_setting_resolves_or_fails_naming_the_setting(folder, column, which):
    raw = b"user\titem\trating\tts\n1\t2\t3\t4\n5\t6\t7\t8\n"
    spec = dict(sep="\t", header=True, user_col="user", item_col="item", rating_col="rating", timestamp_col="ts",
                time_rule="column")
    spec[which] = column
    path = write_temp(folder, raw, ".tsv")
    try:
        frame = read_ratings(path, DatasetConfig(name="csv", file=str(path), **spec))
    except FedcaError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message
        assert f"dataset.{which}" in message, message
        return
    finally:
        path.unlink()
    header = ["user", "item", "rating", "ts"]
    expected_index = header.index(column) if column in header else int(column)
    assert 0 <= expected_index < 4
    values = {"user_col": "user", "item_col": "item", "rating_col": "rating", "timestamp_col": "time"}
    assert frame[values[which]].tolist() == [[1, 2, 3, 4][expected_index], [5, 6, 7, 8][expected_index]]


# --------------------------------------------------------------------------- pipeline reference


def reference_split(rows: list, protocol: ProtocolConfig):
    """Independent leave-one-out: ('error', None) or ('ok', expected dict)."""
    kept = [r for r in rows if r[2] > protocol.binarize_threshold]
    if protocol.duplicates != "keep_all":
        chosen = {}
        for r in kept:
            key = (r[0], r[1])
            if protocol.duplicates == "keep_last" or key not in chosen:
                chosen[key] = r
        kept = sorted(chosen.values(), key=lambda r: r[4])
    per_user = {}
    for r in kept:
        per_user[r[0]] = per_user.get(r[0], 0) + 1
    kept = [r for r in kept if per_user[r[0]] >= protocol.min_interactions]
    if not kept:
        return "error", None
    users = list(dict.fromkeys(r[0] for r in kept))
    items = list(dict.fromkeys(r[1] for r in kept))
    history = {u: sorted((r for r in kept if r[0] == u), key=lambda r: (r[3], r[4])) for u in users}
    if any(len(h) < 3 for h in history.values()):
        return "error", None
    seen = {u: {r[1] for r in history[u]} for u in users}
    candidates = protocol.num_eval_negatives * (1 if protocol.shared_val_test_negatives else 2)
    if any(len(items) - len(seen[u]) < candidates for u in users):
        return "error", None
    excluded_extra = candidates if protocol.train_negatives_exclude_eval else 0
    if any(len(items) - len(seen[u]) - excluded_extra < protocol.num_train_negatives for u in users):
        return "error", None
    return "ok", dict(users=users, items=items, seen=seen,
                      train=[[r[1] for r in history[u][:-2]] for u in users],
                      val=[history[u][-2][1] for u in users], test=[history[u][-1][1] for u in users])


def as_list(ids) -> list:
    """Raw ids (an int64 tensor, or a list of str for string ids) as a list."""
    return ids if isinstance(ids, list) else ids.tolist()


def check_fed_data(data, expected: dict, protocol: ProtocolConfig) -> None:
    users, items = expected["users"], expected["items"]
    num_users, num_items = len(users), len(items)
    assert as_list(data.raw_user_ids) == users
    assert as_list(data.raw_item_ids) == items
    raw_items = as_list(data.raw_item_ids)

    def raw(rows) -> list:
        return [raw_items[j] for j in rows.tolist()]

    offsets = data.train_offsets.tolist()
    assert offsets[0] == 0 and len(offsets) == num_users + 1
    assert [offsets[u + 1] - offsets[u] for u in range(num_users)] == [len(t) for t in expected["train"]]
    assert [raw(data.train_items[offsets[u]:offsets[u + 1]]) for u in range(num_users)] == expected["train"]
    assert raw(data.val_items) == expected["val"]
    assert raw(data.test_items) == expected["test"]
    assert data.num_interactions == sum(len(t) for t in expected["train"]) + 2 * num_users
    count = protocol.num_eval_negatives
    assert tuple(data.val_negatives.shape) == (num_users, count) == tuple(data.test_negatives.shape)
    index = {item: j for j, item in enumerate(items)}
    keys = set()
    for u in range(num_users):
        own = {index[i] for i in expected["seen"][users[u]]}
        keys |= {u * num_items + j for j in own}
        val, test = data.val_negatives[u].tolist(), data.test_negatives[u].tolist()
        for negatives in (val, test):
            assert len(set(negatives)) == count and all(0 <= j < num_items and j not in own for j in negatives)
        if protocol.shared_val_test_negatives:
            assert val == test
        else:
            assert not set(val) & set(test)
    assert data.interacted_keys.tolist() == sorted(keys)
    excluded = set(keys)
    if protocol.train_negatives_exclude_eval:
        for u in range(num_users):
            excluded |= {u * num_items + j for j in data.val_negatives[u].tolist() + data.test_negatives[u].tolist()}
    assert data.train_excluded_keys.tolist() == sorted(excluded)


def protocols(max_eval=3, max_train=3, min_interactions=st.integers(0, 4)):
    return st.builds(
        ProtocolConfig, name=st.just("fuzz"), min_interactions=min_interactions,
        binarize_threshold=st.sampled_from([0.0, 0.0, -1.0, 2.5]),
        duplicates=st.sampled_from(["keep_all", "keep_first", "keep_last"]),
        num_eval_negatives=st.integers(1, max_eval), shared_val_test_negatives=st.booleans(),
        train_negatives_exclude_eval=st.booleans(), num_train_negatives=st.integers(0, max_train))


def pipeline_and_check(folder: Path, raw: bytes, spec_kwargs: dict, protocol: ProtocolConfig, seed: int):
    """Run load_fed_data on ``raw`` and check it against the reference; returns the FedData or None."""
    path = write_temp(folder, raw, ".txt")
    spec = DatasetConfig(name="csv", file=str(path), **spec_kwargs)
    try:
        verdict = reference_parse(raw, spec)
        try:
            frame = read_ratings(path, spec)
            parse_error = None
        except FedcaError as exc:
            check_error(exc, path, verdict)
            parse_error = str(exc)
        if parse_error is None:
            check_frame(frame, verdict)
        outcome, expected = ("error", None) if parse_error else reference_split(verdict.rows, protocol)
        try:
            data = load_fed_data(spec, protocol, seed, use_cache=False)
        except FedcaError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            if parse_error:
                assert message == parse_error
            else:
                assert outcome == "error", f"the reference splits this file, but: {message!r}"
            return None
        assert parse_error is None, f"load_fed_data accepted a file read_ratings rejects: {parse_error}"
        assert outcome == "ok", f"load_fed_data accepted data the reference rejects ({protocol})"
        check_fed_data(data, expected, protocol)
        return data
    finally:
        path.unlink()


# --------------------------------------------------------------------------- pipeline properties


@fuzz(100, shrink=False)
@given(case=messy_files(min_rows=4, max_rows=20), protocol=protocols(), seed=st.integers(0, 3))
def test_pipeline_on_messy_files_splits_correctly_or_fails_naming_the_file(folder, case, protocol, seed):
    raw, spec = case
    pipeline_and_check(folder, raw, spec, protocol, seed)


@st.composite
def splittable_datasets(draw):
    """Files where every user has >= 3 positive interactions and items enough for the negatives.

    Returns (layout, rows, protocol, interactions per user)."""
    layout = draw(layouts())
    protocol = draw(protocols(min_interactions=st.integers(0, 3)))
    if "rating" not in layout["roles"]:   # every row is an interaction with rating 1.0
        protocol = replace(protocol, binarize_threshold=draw(st.sampled_from([0.0, -1.0, 0.5])))
    num_users = draw(st.integers(1, 5))
    user_ids = draw(st.lists(st.integers(-INT_LIMIT + 1, INT_LIMIT - 1) | st.integers(0, 30),
                             min_size=num_users + 8, max_size=num_users + 8, unique=True))
    per_user = draw(st.lists(st.integers(3, 6), min_size=num_users, max_size=num_users))
    candidates = protocol.num_eval_negatives * (1 if protocol.shared_val_test_negatives else 2)
    excluded_extra = candidates if protocol.train_negatives_exclude_eval else 0
    cap = max(per_user)
    num_items = cap + max(candidates, protocol.num_train_negatives + excluded_extra)
    item_ids = draw(st.lists(st.integers(-INT_LIMIT + 1, INT_LIMIT - 1) | st.integers(0, 99),
                             min_size=num_items, max_size=num_items, unique=True))
    histories = [draw(st.permutations(item_ids))[:count] for count in per_user]   # distinct items per user
    # every item must be someone's interaction (else it is not in the dataset): cover users take
    # the unused ones, between 3 and ``cap`` items each, so each still has enough negatives
    used = {item for history in histories for item in history}
    leftover = [item for item in item_ids if item not in used]
    for start in range(0, len(leftover), cap):
        group = leftover[start:start + cap]
        group += [item for item in item_ids if item not in group][: max(0, 3 - len(group))]
        histories.append(group)
    user_ids = user_ids[: len(histories)]
    events = draw(st.permutations([(user, item) for user, history in zip(user_ids, histories)
                                   for item in history]))
    fixed = {"rating": repr(protocol.binarize_threshold + draw(st.sampled_from([0.5, 1.0, 3.0])))}
    rows = []
    for user, item in events:
        cells = dict(fixed, user=str(user), item=str(item), time=str(draw(st.integers(0, 5))))
        rows.append([cells[role] if role in cells else "x" for role in layout["roles"]])
    return layout, rows, protocol, [len(history) for history in histories]


@fuzz(80)
@given(case=splittable_datasets(), seed=st.integers(0, 5))
def test_well_formed_datasets_split_one_val_and_one_test_per_user_and_train_the_rest(folder, case, seed):
    layout, rows, protocol, per_user = case
    raw = render(layout, rows).encode("utf-8")
    data = pipeline_and_check(folder, raw, layout["spec"], protocol, seed)
    assert data is not None, "a well-formed splittable dataset was rejected"
    assert data.num_users == len(per_user)
    assert data.val_items.numel() == data.test_items.numel() == data.num_users
    assert data.train_items.numel() == sum(per_user) - 2 * len(per_user)
    assert (data.train_offsets[1:] - data.train_offsets[:-1]).sort().values.tolist() \
        == sorted(count - 2 for count in per_user)


# --------------------------------------------------------------------------- string ids


def string_ids():
    """Id tokens as real logs write them: Amazon-like codes, padded numbers, any unicode text."""
    code = st.from_regex(r"[A-Z0-9]{10,14}", fullmatch=True)
    padded = st.integers(0, 999).map(lambda v: f"{v:05d}")
    text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\t,;:| "), min_size=1,
                   max_size=6)
    return st.one_of(code, padded, text, st.sampled_from(ODD_TOKENS))


@fuzz(120)
@given(data=st.data())
def test_string_id_files_parse_to_the_stripped_tokens_or_fail_naming_the_line(folder, data):
    layout = data.draw(layouts())
    rows = data.draw(clean_rows(layout))
    roles = layout["roles"]
    pool = data.draw(st.lists(string_ids(), min_size=1, max_size=6))
    for row in rows:
        for role in ("user", "item"):
            if data.draw(st.booleans()):
                row[roles.index(role)] = data.draw(st.sampled_from(pool))
    raw = render(layout, rows).encode("utf-8")
    frame = read_and_check(folder, raw, layout["spec"])
    verdict = reference_parse(raw, DatasetConfig(name="csv", file="unused", **layout["spec"]))
    if not verdict.must_fail and not verdict.maybe_lines:
        assert frame is not None, "a file of string ids was rejected"


@fuzz(60)
@given(case=splittable_datasets(), seed=st.integers(0, 5), prefix=st.sampled_from(["A", "B000", "é", "0"]))
def test_renaming_ids_to_tokens_changes_nothing_but_the_raw_ids(folder, case, seed, prefix):
    # a bijection from integer ids to string tokens keeps the order of first appearance, so every
    # tensor of the split is the same; only the raw ids change, to the tokens
    layout, rows, protocol, _ = case
    roles = layout["roles"]
    columns = [roles.index("user"), roles.index("item")]

    def token(value: str) -> str:
        return f"{prefix}{value}x"

    renamed = [[token(cell) if k in columns else cell for k, cell in enumerate(row)] for row in rows]
    numbers = pipeline_and_check(folder, render(layout, rows).encode("utf-8"), layout["spec"], protocol, seed)
    tokens = pipeline_and_check(folder, render(layout, renamed).encode("utf-8"), layout["spec"], protocol, seed)
    assert numbers is not None and tokens is not None
    for name in ("train_items", "train_offsets", "val_items", "test_items", "val_negatives", "test_negatives",
                 "interacted_keys", "train_excluded_keys"):
        assert getattr(numbers, name).tolist() == getattr(tokens, name).tolist(), name
    assert tokens.raw_user_ids == [token(str(v)) for v in numbers.raw_user_ids.tolist()]
    assert tokens.raw_item_ids == [token(str(v)) for v in numbers.raw_item_ids.tolist()]
