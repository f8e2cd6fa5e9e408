"""The vectorised classification agrees with the one-value definition; formats cross processes."""

from __future__ import annotations

import pickle
from functools import reduce
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from lakehoused.ingest import CsvFormat, types
from lakehoused.ingest.convert import Conversion
from lakehoused.schema import Column

_VALUES = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.dates().map(str),
    st.tuples(st.datetimes(), st.sampled_from(" T")).map(lambda d: d[0].isoformat(sep=d[1])),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="minutes")),
    st.sampled_from(["true", "False", "TRUE", "-0", "007", "+1", "1e5", "1E-07", "2024-02-30"]),
    st.sampled_from(["2024-13-01", "0000-01-01", "2024-01-01 24:00", "2024-01-01T10:00Z", ""]),
    st.text(alphabet="0123456789-.eE:T ", max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUES, max_size=80), st.sampled_from([0, types.INT_EXACT, types.DATE]))
def test_classify_array_gives_what_classify_value_gives(values, seen):
    expected = reduce(lambda bits, v: bits | types.classify_value(v), values, types.EMPTY)
    array = pa.array([v or None for v in values], pa.string())
    got = types.classify_array(array, seen)
    if expected & types.TEXT:
        assert got & types.TEXT  # it may stop at the first text value: the type is decided
    else:
        assert got == expected


def test_each_class_casts_to_its_type_exactly():
    cases = {
        "BIGINT": (["0", "-9223372036854775808", "123456789012345678"], int),
        "DOUBLE": (["1", "0.30000000000000004", "-0.0", "1e5"], float),
        "DATE": (["0001-01-01", "2024-02-29"], None),
        "TIMESTAMP": (["2024-02-29 10:30", "2024-02-29T10:30:05.123456", "2024-02-29"], None),
        "BOOLEAN": (["true", "False", "TRUE"], lambda v: v.lower() == "true"),
        "DECIMAL(38,0)": (["123456789012345678901234567890"], int),
    }
    for type_, (values, parse) in cases.items():
        classes = types.classify_array(pa.array(values))
        assert types.holds(type_, classes), (type_, values)
        cast = types.cast(pa.array(values), type_).to_pylist()
        if parse is not None:
            assert cast == [parse(v) for v in values]


def test_formats_and_conversions_cross_process_boundaries():
    fmt = CsvFormat(delimiter=";", null_values=("-",), on_bad_rows="quarantine")
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    conversion = Conversion([Column("a", "BIGINT")], 3, {"delimiter": ";"}, 1, Path("/r"))
    assert pickle.loads(pickle.dumps(conversion)) == conversion
