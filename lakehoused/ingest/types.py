"""Type inference: the narrowest type that holds every value of a column exactly (DESIGN §3).

Each value is put in one class (a bit); a column's classes are OR-ed over the whole file,
and the union decides the type. The classes are strict on purpose: `007` is not an integer
(its zeros would be lost), `12.5` is not an integer, an integer of 16+ digits is not a
double (it would lose digits), `-0` is not an integer (its sign would be lost), and `N/A`
is text.

`classify_value` is the definition, one value at a time. `classify_array` gives the same
answer for a whole Arrow array, fast: cheap vectorised tests that can only say "certainly
this class" go first, and what they leave is deduplicated and classified one by one.
`cast` turns a VARCHAR array into the planned type; the classes guarantee that it holds.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lakehoused.errors import RejectedFile
from lakehoused.schema import Column

EMPTY = 0
INT_EXACT = 1  # at most 15 digits: exact as BIGINT and as DOUBLE
INT64 = 2  # 16-19 digits within the BIGINT range: exact as BIGINT, not as DOUBLE
INT_WIDE = 4  # 19-38 digits beyond BIGINT: DECIMAL(38,0)
FRACTION = 8  # a decimal or exponent form that a DOUBLE holds exactly
TEXT = 16
DATE = 32
TIMESTAMP = 64
BOOLEAN = 128

# Which classes each type holds without losing or altering a value.
HOLDS = {
    "BOOLEAN": BOOLEAN,
    "BIGINT": INT_EXACT | INT64,
    "DECIMAL(38,0)": INT_EXACT | INT64 | INT_WIDE,
    "DOUBLE": INT_EXACT | FRACTION,
    "DATE": DATE,
    "TIMESTAMP": DATE | TIMESTAMP,
    "VARCHAR": ~0,
}
# Narrowest first: the first type that holds a column's classes is its type.
LADDER = ("BOOLEAN", "BIGINT", "DECIMAL(38,0)", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
HINTABLE = ("BOOLEAN", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
ARROW_TYPES = {
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
    "DECIMAL(38,0)": pa.decimal128(38, 0),
    "DOUBLE": pa.float64(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "VARCHAR": pa.string(),
}

_BOOLEANS = ("true", "false", "True", "False", "TRUE", "FALSE")
_INT = re.compile(r"0|-?[1-9][0-9]*")
# Every number form we accept; leading zeros and a leading + are not (they would be lost).
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
)
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
# A fraction of at most 16 characters has at most 15 significant digits: a double holds it.
_SHORT_FRACTION = 16
_SAMPLE = 64  # values classified one by one before the vectorised tests


def classify_value(value: str) -> int:
    """The class of one value: the definition every faster test must agree with."""
    if value == "":
        return EMPTY
    if value in _BOOLEANS:
        return BOOLEAN
    if _INT.fullmatch(value):
        digits = len(value) - value.startswith("-")
        if digits <= 15:
            return INT_EXACT
        if digits <= 19 and _BIGINT_MIN <= int(value) <= _BIGINT_MAX:
            return INT64
        return INT_WIDE if digits <= 38 else TEXT
    if _NUMBER.fullmatch(value):
        if ("." in value or "e" in value or "E" in value) and (
            len(value) <= _SHORT_FRACTION or repr(float(value)) == value
        ):
            return FRACTION
        return TEXT
    try:
        if _DATE.fullmatch(value):
            datetime.date.fromisoformat(value)
            return DATE
        if _TIMESTAMP.fullmatch(value):
            datetime.datetime.fromisoformat(value)
            return TIMESTAMP
    except ValueError:
        pass
    return TEXT


# Vectorised tests: each marks values that are certainly of its class (never a wrong one).
_FAST_INT = r"^(0|-?[1-9][0-9]{0,14})$"
_FAST_FRACTION = r"^-?(0|[1-9][0-9]*)(\.[0-9]+([eE][+-]?[0-9]{1,2})?|[eE][+-]?[0-9]{1,2})$"


def _is_int(values: pa.Array) -> pa.Array:
    # Digits only (so no sign), no leading zero, at most 15 of them: three cheap passes,
    # cheaper than one regular expression. Negative integers are left to the next tests.
    length = pc.utf8_length(values)
    leading_zero = pc.and_(pc.starts_with(values, "0"), pc.greater(length, 1))
    return pc.and_(
        pc.and_(pc.ascii_is_decimal(values), pc.less_equal(length, 15)), pc.invert(leading_zero)
    )


def _is_signed_int(values: pa.Array) -> pa.Array:
    return pc.match_substring_regex(values, _FAST_INT)


def _is_fraction(values: pa.Array) -> pa.Array:
    return pc.and_(
        pc.less_equal(pc.utf8_length(values), _SHORT_FRACTION),
        pc.match_substring_regex(values, _FAST_FRACTION),
    )


def _is_boolean(values: pa.Array) -> pa.Array:
    return pc.is_in(values, pa.array(_BOOLEANS))


def _parses(values: pa.Array, pattern: str, type_: pa.DataType) -> pa.Array:
    """Values of the pattern that Arrow parses as `type_` (all of them, or else none)."""
    mask = pc.match_substring_regex(values, pattern)
    try:
        pc.cast(pc.filter(values, mask), type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.nulls(len(values), pa.bool_()).fill_null(False)  # some are not: one by one
    return mask


def _is_date(values: pa.Array) -> pa.Array:
    try:
        # Arrow parses exactly YYYY-MM-DD, valid dates only: when all parse, all are dates.
        pc.cast(values, pa.date32())
        return pa.nulls(len(values), pa.bool_()).fill_null(True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parses(values, f"^{_DATE.pattern}$", pa.date32())


def _is_timestamp(values: pa.Array) -> pa.Array:
    return _parses(values, f"^{_TIMESTAMP.pattern}$", pa.timestamp("us"))


_INTEGERS = ((INT_EXACT, _is_int), (INT_EXACT, _is_signed_int))
_FAST_TESTS = {
    "integer": (*_INTEGERS, (FRACTION, _is_fraction)),
    "fraction": ((FRACTION, _is_fraction), *_INTEGERS),
    "boolean": ((BOOLEAN, _is_boolean),),
    "temporal": ((DATE, _is_date), (TIMESTAMP, _is_timestamp)),
}


def _families(seen: int) -> list[str]:
    """The column's likely family first: one cheap test then usually covers a whole batch."""
    if seen & (DATE | TIMESTAMP):
        first = "temporal"
    elif seen & BOOLEAN:
        first = "boolean"
    elif seen & FRACTION:
        first = "fraction"
    else:
        first = "integer"
    numbers = "fraction" if first == "fraction" else "integer"
    return list(dict.fromkeys([first, numbers, "temporal", "boolean"]))


def classify_array(values: pa.Array | pa.ChunkedArray, seen: int = EMPTY) -> int:
    """The OR of the classes of every non-null value, as classify_value would give it.

    Stops early at the first text value: nothing but VARCHAR holds text.
    """
    values = values.drop_null()
    # A few values one by one first: a text column shows itself at once (most do), and
    # the others say which test to run first over the whole array.
    classes = EMPTY
    for value in values.slice(0, _SAMPLE).to_pylist():
        classes |= classify_value(value)
    if classes & TEXT:
        return classes
    for family in _families(seen | classes):
        for bit, test in _FAST_TESTS[family]:
            if not len(values):
                return classes
            mask = test(values)
            hits = pc.sum(mask).as_py() or 0
            if hits:
                classes |= bit
                if hits == len(values):
                    return classes
                values = pc.filter(values, pc.invert(mask))
    for value in pc.unique(values).to_pylist():
        classes |= classify_value(value)
        if classes & TEXT:
            break
    return classes


def cast(values: pa.Array | pa.ChunkedArray, type_: str) -> pa.Array | pa.ChunkedArray:
    """A VARCHAR column as the planned type; its classes say every value fits exactly."""
    if type_ == "VARCHAR":
        return values
    if type_ == "BOOLEAN":
        return pc.equal(pc.utf8_lower(values), "true")
    return pc.cast(values, ARROW_TYPES[type_])


def narrowest(classes: int) -> str:
    """The narrowest type holding every class seen; VARCHAR for a column with no values."""
    if classes == EMPTY:
        return "VARCHAR"
    return next(t for t in LADDER if holds(t, classes))


def holds(type_: str, classes: int) -> bool:
    """Whether `type_` holds every value of these classes exactly."""
    return classes & ~HOLDS[type_] == 0


def describe(classes: int) -> str:
    """The kinds of values seen, in words, for messages."""
    words = {
        INT_EXACT: "integers",
        INT64: "integers of 16+ digits",
        INT_WIDE: "integers beyond 64 bits",
        FRACTION: "fractions",
        TEXT: "text",
        DATE: "dates",
        TIMESTAMP: "timestamps",
        BOOLEAN: "booleans",
    }
    return ", ".join(w for bit, w in words.items() if classes & bit) or "only empty cells"


def widened(old_type: str, old_classes: int | None, seen: int) -> str:
    """The narrowest type holding a column's values so far and a new file's values.

    `old_classes` is what the dataset's files held (recorded at each registration); unknown,
    every value the old type can hold is assumed.
    """
    before = HOLDS[old_type] if old_classes is None else old_classes
    return narrowest(before | seen)


def plan_columns(
    header: Sequence[str],
    classes: Mapping[str, int],
    *,
    hints: Mapping[str, str],
    existing: Sequence[Column] | None,
    on_schema_change: str,
    dataset: str,
    mode: str = "replace",
    existing_classes: Mapping[str, int] | None = None,
) -> list[tuple[str, str]]:
    """The (name, type) of each column to write, in the dataset's order.

    Rules: a `types` hint wins, but only if it holds every value; an existing dataset's
    type is kept when it holds this file's values (narrower data is not a schema change);
    anything else that differs from the dataset is a schema change, rejected unless
    `on_schema_change` allows it: "add_columns" lets new columns in; "overwrite" makes a
    replace dataset's new version whatever this file holds. Every rejection names the
    setting or command that would let the file in.
    """
    unknown = sorted(set(hints) - set(header))
    if unknown:
        raise RejectedFile(
            f"datasets.{dataset}.types names column(s) {', '.join(unknown)} "
            f"that this file does not have (its columns: {', '.join(header)}); "
            f"remove {', '.join(unknown)} from datasets.{dataset}.types",
            column=unknown[0],
        )
    chosen: dict[str, str] = {}
    for name in header:
        seen = classes.get(name, TEXT)
        if name in hints:
            hint = hints[name]
            if not holds(hint, seen):
                raise RejectedFile(
                    f"column {name} is set to {hint} in datasets.{dataset}.types, but it "
                    f"holds {describe(seen)}; set datasets.{dataset}.types.{name} = "
                    f'"{narrowest(seen)}" (or remove it from datasets.{dataset}.types)',
                    column=name,
                )
            chosen[name] = hint
        else:
            chosen[name] = narrowest(seen)
    if existing is None or (on_schema_change == "overwrite" and mode == "replace"):
        return list(chosen.items())

    replace = mode == "replace"
    overwrite = f'set datasets.{dataset}.on_schema_change = "overwrite" to make'
    old = {c.name: c.type for c in existing}
    missing = [c.name for c in existing if c.name not in chosen]
    if missing:
        advice = (
            f"{overwrite} this file's columns the dataset's new schema"
            if replace
            else "add them to this file (empty values are fine)"
        )
        raise RejectedFile(
            f"schema change: column(s) {', '.join(missing)} of dataset {dataset} are missing "
            f"from this file; {advice}",
            column=missing[0],
        )
    for name, type_ in chosen.items():
        if name in old and type_ != old[name]:
            seen = classes.get(name, TEXT)
            if name not in hints and holds(old[name], seen):
                chosen[name] = old[name]  # narrower values fit the dataset's type
                continue
            wider = widened(old[name], (existing_classes or {}).get(name), seen)
            advice = (
                f"{overwrite} this file the new version with {name} as {type_}"
                if replace
                else f'run `lakehoused widen {dataset} {name} {wider} --reason "..."` to '
                f"rewrite its parts with {name} as {wider}, then drop this file again"
            )
            raise RejectedFile(
                f"schema change: column {name} of dataset {dataset} is {old[name]}, but this "
                f"file holds {describe(seen)}, which need {type_}; {advice}",
                column=name,
            )
    added = [name for name in chosen if name not in old]
    if added and on_schema_change not in ("add_columns", "overwrite"):
        raise RejectedFile(
            f"schema change: new column(s) {', '.join(added)} for dataset {dataset}; set "
            f'datasets.{dataset}.on_schema_change = "add_columns" to accept them',
            column=added[0],
        )
    # The dataset's columns keep their order; new ones follow.
    return [(c.name, chosen[c.name]) for c in existing] + [(n, chosen[n]) for n in added]
