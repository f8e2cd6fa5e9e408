"""Type inference: the narrowest type that holds every value of a column exactly (DESIGN §3).

Each value is put in one class (a bit); a column's classes are OR-ed over the whole file in
SQL, and the union decides the type. The classes are strict on purpose: `007` is not an
integer (its zeros would be lost), `12.5` is not an integer (DuckDB would round it), an
integer of 16+ digits is not a double (it would lose digits), and `N/A` is text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

# Every number form we accept; leading zeros and a leading + are not (they would be lost).
_NUMBER_RE = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?"
# A number with a fraction or an exponent; at most 15 characters hold at most 15 digits,
# which a double holds exactly.
_FRACTION_RE = r"-?(0|[1-9][0-9]*)(\.[0-9]+([eE][+-]?[0-9]{1,2})?|[eE][+-]?[0-9]{1,2})"
_DATE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIMESTAMP_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def quote_identifier(name: str) -> str:
    """A column name as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


FAMILIES = ("number", "boolean", "temporal")


def _family_branches(c: str) -> dict[str, str]:
    return {
        # The common forms first, by one regex each (a flat CASE is much cheaper than a
        # nested one); then every other number form, split by cheap string tests.
        "number": f"""WHEN regexp_full_match({c}, '0|-?[1-9][0-9]{{0,14}}') THEN {INT_EXACT}
 WHEN length({c}) <= 15 AND regexp_full_match({c}, '{_FRACTION_RE}') THEN {FRACTION}
 WHEN regexp_full_match({c}, '{_NUMBER_RE}') THEN CASE
   WHEN NOT (contains({c}, '.') OR contains({c}, 'e') OR contains({c}, 'E')) THEN CASE
     WHEN length({c}) - starts_with({c}, '-')::INT <= 15 THEN {INT_EXACT}
     WHEN length({c}) - starts_with({c}, '-')::INT <= 19
          AND TRY_CAST({c} AS HUGEINT) BETWEEN {_BIGINT_MIN} AND {_BIGINT_MAX} THEN {INT64}
     WHEN length({c}) - starts_with({c}, '-')::INT <= 38 THEN {INT_WIDE}
     ELSE {TEXT} END
   WHEN length({c}) <= 16 THEN {FRACTION}
   WHEN CAST(TRY_CAST({c} AS DOUBLE) AS VARCHAR) = {c} THEN {FRACTION}
   ELSE {TEXT} END""",
        "boolean": f"WHEN {c} IN ('true', 'false', 'True', 'False', 'TRUE', 'FALSE') THEN {BOOLEAN}",
        "temporal": f"""WHEN regexp_full_match({c}, '{_DATE_RE}')
      AND TRY_CAST({c} AS DATE) IS NOT NULL THEN {DATE}
 WHEN regexp_full_match({c}, '{_TIMESTAMP_RE}')
      AND TRY_CAST({c} AS TIMESTAMP) IS NOT NULL THEN {TIMESTAMP}""",
    }


def family_of(classes: int) -> str:
    """The family most values of a sample fall in, so the full pass tests it first."""
    if classes & (DATE | TIMESTAMP):
        return "temporal"
    if classes & BOOLEAN:
        return "boolean"
    return "number"


def class_expression(column: str, first: str = "number") -> str:
    """SQL giving the class bit of one VARCHAR value.

    CASE short-circuits, so each value pays for the tests up to the first that matches:
    the column's likely family goes first.
    """
    c = quote_identifier(column)
    branches = _family_branches(c)
    order = [first] + [f for f in FAMILIES if f != first]
    body = "\n ".join(branches[f] for f in order)
    return f"CASE WHEN {c} IS NULL THEN {EMPTY}\n {body}\n ELSE {TEXT} END"


def classes_query(columns: Mapping[str, str], source_sql: str) -> str:
    """One pass over `source_sql` giving, per column, the OR of its values' classes.

    `columns` maps each column to the family to test first.
    """
    aggregates = ", ".join(
        f"bit_or(({class_expression(c, first)})::UTINYINT)" for c, first in columns.items()
    )
    return f"SELECT {aggregates} FROM {source_sql}"


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
