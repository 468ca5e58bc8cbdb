"""Rows to be scored, checked against the version that will score them: what cannot be answered
(problems, by row and field) and what an answer should be read with (warnings).

The API, the predict page and batch scoring come here, and read each value by the rules of
ingestion.values. A row is refused when it is empty, names a field the model does not know,
holds a value that is not of its feature's kind, or leaves out a feature that was never missing
in the version's training rows (the model would answer from an imputed value it never learned
with). It is answered, with a warning, when it holds a category the model has not seen or a
number outside the range of the training rows. Batch scoring cannot ask a person, so there every
such row is scored and its warnings written beside it.
"""
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion import values

MAX_ROWS = 10_000
# Problems listed in one answer; the count says how many there are in all.
MAX_LISTED = 200
_NUMBER_KINDS = {float, int, type(None)}


@dataclass
class Checked:
    columns: dict = field(default_factory=dict)  # feature: float64 array (numbers) or list of str/None
    problems: list[dict] = field(default_factory=list)  # {"row", "field", "message"}, row order
    problem_count: int = 0
    warnings: dict[int, list[dict]] = field(default_factory=dict)  # row: [{"field", "message"}]


def check_rows(rows: list, version) -> Checked:
    """Every row of a request read by its feature's rule, with the problems and warnings found."""
    checked = Checked()
    found: list[tuple[int, int, str, str]] = []  # (row, column order, field, message)
    if not rows:
        checked.problems, checked.problem_count = [{"row": None, "field": "rows", "message": "send at least one row"}], 1
        return checked
    if len(rows) > MAX_ROWS:
        message = f"{len(rows):,} rows; send at most {MAX_ROWS:,} per call"
        checked.problems, checked.problem_count = [{"row": None, "field": "rows", "message": message}], 1
        return checked
    schema = version.schema
    markers = schema.markers
    profile = version.profile or {}
    unusable = set()  # rows refused whole: their features are not listed one by one as well
    if not all(type(row) is dict and row for row in rows):
        for i, row in enumerate(rows):
            if type(row) is not dict:
                found.append((i, -1, "", "each row must be an object of {feature: value}"))
            elif not row:
                found.append((i, -1, "", f"the row is empty; send the model's features ({', '.join(schema.feature_names[:5])}, ...)"))
            else:
                continue
            unusable.add(i)
        rows = [row if type(row) is dict else {} for row in rows]
    known = {*schema.feature_names, schema.id_column, schema.target} - {""}
    for name in sorted(set().union(*rows) - known):
        found.extend((i, -1, name, "not a feature of the model") for i, row in enumerate(rows) if name in row)
    for order, feature in enumerate(schema.features):
        name = feature["name"]
        column = [row.get(name) for row in rows]
        if feature["kind"] == "numeric":
            column, bad = _numbers(column, markers)
            missing = np.isnan(column)
        else:
            column, bad = _texts(column, markers)
            missing = np.fromiter((value is None for value in column), dtype=bool, count=len(column))
        found.extend((i, order, name, message) for i, message in bad)
        seen = profile.get(name)
        if seen is not None and seen.get("missing") == 0 and missing.any():
            bad_rows = unusable | {i for i, _ in bad}
            message = f"missing; {name} was never missing in the model's training data, so send a value"
            found.extend((int(i), order, name, message) for i in np.flatnonzero(missing) if i not in bad_rows)
        _warn(checked.warnings, name, feature, column, seen)
        checked.columns[name] = column
    found.sort(key=lambda problem: (problem[0], problem[1]))
    checked.problem_count = len(found)
    checked.problems = [{"row": row, "field": name or None, "message": message} for row, _, name, message in found[:MAX_LISTED]]
    return checked


def _numbers(column: list, markers: frozenset) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The column as floats (NaN: missing) and its values that are not numbers. JSON numbers and
    nulls, the usual case, are converted at once; anything else value by value."""
    if set(map(type, column)) <= _NUMBER_KINDS:
        try:
            numbers = np.array(column, dtype=np.float64)  # None becomes NaN
        except OverflowError:  # a whole number past a float's range
            numbers = None
        if numbers is not None and not np.isinf(numbers).any():
            return numbers, []
    numbers = np.empty(len(column))
    bad = []
    for i, value in enumerate(column):
        try:
            numbers[i] = values.number(value, markers)
        except values.ValueProblem as exc:
            numbers[i] = np.nan
            bad.append((i, str(exc)))
    return numbers, bad


def _texts(column: list, markers: frozenset) -> tuple[list, list[tuple[int, str]]]:
    """The column's categories trimmed (None: missing), read once per distinct value."""
    try:
        distinct = set(column)
    except TypeError:  # a list or an object among the values
        distinct = None
    if distinct is not None:
        read, refused = {}, {}
        for value in distinct:
            try:
                read[value] = values.text(value, markers)
            except values.ValueProblem as exc:
                refused[value] = str(exc)
        if not refused and all(read[value] == value for value in distinct if value is not None):
            return column, []
        return [read.get(value) for value in column], [(i, refused[v]) for i, v in enumerate(column) if v in refused]
    texts, bad = [], []
    for i, value in enumerate(column):
        try:
            texts.append(values.text(value, markers))
        except values.ValueProblem as exc:
            texts.append(None)
            bad.append((i, str(exc)))
    return texts, bad


def _warn(warnings: dict, name: str, feature: dict, column, seen: dict | None) -> None:
    if feature["kind"] == "numeric":
        if not seen or "min" not in seen:
            return
        low, high = seen["min"], seen["max"]
        with np.errstate(invalid="ignore"):
            outside = np.flatnonzero((column < low) | (column > high))
        for i in outside:
            message = f"{column[i]:g} is outside the range of the training data ({low:g} to {high:g})"
            warnings.setdefault(int(i), []).append({"field": name, "message": message})
        return
    known = set(feature.get("categories", []))
    unseen = set(column) - known - {None}
    if unseen:
        for i, value in enumerate(column):
            if value in unseen:
                warnings.setdefault(i, []).append({"field": name, "message": f"{value!r} is a category the model has not seen"})


# --- batch scoring: the same rules on Arrow columns (values.read_numbers, values.read_texts) ------

def _per_row(column: pa.Array, test) -> pa.Array:
    """test(values) for each row; on a dictionary column it runs on the distinct values only."""
    if pa.types.is_dictionary(column.type):
        return pc.take(test(column.dictionary), column.indices)
    return test(column)


def batch_warnings(columns: dict[str, pa.Array], schema, profile: dict, not_numbers: dict[str, pa.Array]) -> pa.Array:
    """One text per row: every warning of that row joined with "; " (empty when none). `columns`
    holds numbers as float64 (null: missing) and categories as trimmed text (null: missing)."""
    parts = []
    for feature in schema.features:
        name = feature["name"]
        if name not in columns:
            continue
        column, seen = columns[name], profile.get(name) or {}
        flags = []
        if name in not_numbers:
            flags.append((not_numbers[name], f"{name}: not a number, scored as missing"))
        if seen.get("missing") == 0:
            flags.append((pc.is_null(column), f"{name}: missing, never missing in training"))
        if feature["kind"] == "numeric" and "min" in seen:
            outside = pc.or_(pc.less(column, seen["min"]), pc.greater(column, seen["max"]))
            flags.append((outside, f"{name}: outside the training range ({seen['min']:g} to {seen['max']:g})"))
        elif feature["kind"] == "categorical":
            known = pa.array(feature.get("categories", []), pa.string())
            unseen = pc.and_(pc.is_valid(column), _per_row(column, lambda text: pc.invert(pc.is_in(text, value_set=known))))
            flags.append((unseen, f"{name}: a category the model has not seen"))
        for mask, message in flags:
            mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
            if mask.any():
                parts.append((mask, message))
    length = len(next(iter(columns.values()))) if columns else 0
    joined = np.full(length, "", dtype=object)
    for mask, message in parts:  # warnings are few: only the rows that have one are touched
        joined[mask] = np.where(joined[mask] == "", message, joined[mask] + "; " + message)
    return pa.array(joined, pa.string())
