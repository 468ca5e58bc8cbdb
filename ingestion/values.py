"""The rules about one value, in one place: what is a number, what is missing, what is text.

Every door reads values by these rules: the CSV reader (vectorised on Arrow arrays), the API's
rows, the fast path, the predict page and batch scoring. Each rule takes time linear in the
value's length (no pattern here can backtrack), and a number is refused by its length before
any pattern looks at it, so no value can hold a worker.
"""
import math
import re
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The longest text read as a number: far more than any float needs ("-1.7976931348623157e+308"
# is 24 characters), far less than would cost anything to look at.
MAX_NUMBER_CHARS = 100
# Written in a cell, these mean "no value" to most tools (R writes NA, pandas NaN, JSON null);
# compared case-insensitively after trimming. A schema keeps its own list (DatasetSchema).
DEFAULT_MISSING_MARKERS = ("", "NA", "N/A", "NaN", "null", "None")
# A number as people write it: sign, digits with an optional point, optional exponent. Each
# character can be matched one way only, so matching is linear (Python's re and Arrow's RE2 alike).
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER_PATTERN = f"^{_NUMBER}$"
_NUMBER_RE = re.compile(_NUMBER)


class ValueProblem(ValueError):
    """A value that breaks a rule; the message says which, for a person."""


def marker_set(markers: Iterable[str] | None = None) -> frozenset[str]:
    """The markers as compared: trimmed and lower-cased (the empty string is always one)."""
    return frozenset({""} | {m.strip().lower() for m in (DEFAULT_MISSING_MARKERS if markers is None else markers)})


DEFAULT_MARKERS = marker_set()


def number(value: Any, markers: frozenset[str] = DEFAULT_MARKERS) -> float:
    """The float a value stands for (NaN when it is missing), or ValueProblem."""
    kind = type(value)
    if kind is float:
        if math.isfinite(value) or value != value:
            return value
        raise ValueProblem(f"{value!r} is not a finite number")
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            raise ValueProblem("a whole number past ±1.8e308 is too large") from None
    if value is None:
        return math.nan
    if kind is bool:
        raise ValueProblem(f"{value!r} is not a number; send 0 or 1")
    if kind is not str:
        raise ValueProblem(f"{_shown(value)} is not a number")
    if len(value) > MAX_NUMBER_CHARS:
        raise ValueProblem(f"a value of {len(value):,} characters is not a number (at most {MAX_NUMBER_CHARS})")
    text = value.strip()
    if text.lower() in markers:
        return math.nan
    if not _NUMBER_RE.fullmatch(text):
        infinite = text.lower().lstrip("+-") in ("inf", "infinity")  # as NOT_FINITE_PATTERN says for files
        raise ValueProblem(f"{value!r} is not a {'finite ' if infinite else ''}number")
    result = float(text)
    if math.isinf(result):
        raise ValueProblem(f"{value!r} is not a finite number")
    return result


def is_number_text(text: str) -> bool:
    """Whether `text`, as it is (untrimmed), is a number by the rule above."""
    return len(text) <= MAX_NUMBER_CHARS and _NUMBER_RE.fullmatch(text) is not None


def text(value: Any, markers: frozenset[str] = DEFAULT_MARKERS) -> str | None:
    """A category as compared with the schema's: trimmed text, or None when it is missing."""
    if value is None or (type(value) is float and value != value):
        return None
    if type(value) is not str:
        raise ValueProblem(f"{_shown(value)} is not text; categories are strings")
    stripped = value.strip()
    return None if stripped.lower() in markers else stripped


def number_mask(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True where a (trimmed) string is a number by the rule above; Arrow's RE2 is linear too."""
    return pc.match_substring_regex(values, NUMBER_PATTERN)


def missing_mask(values: pa.Array | pa.ChunkedArray, markers: frozenset[str] = DEFAULT_MARKERS) -> pa.Array:
    """True where a string is a missing-value marker (nulls count as missing)."""
    folded = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    return pc.fill_null(pc.is_in(folded, value_set=pa.array(sorted(markers), pa.string())), True)


def _shown(value: Any) -> str:
    """A value named in a message, cut so a huge one cannot make a huge message."""
    shown = repr(value) if type(value) is not int or value.bit_length() < 1000 else "a whole number this large"
    return shown if len(shown) <= 60 else shown[:50] + "…"


# Arrow-side readings of whole columns, by the rules above (the CSV reader, validation, learning).

# inf and infinity as people write them: numbers to Arrow's cast, "not a finite number" to us.
NOT_FINITE_PATTERN = r"^[+-]?(?:inf|infinity)$"


def marker_list(markers: Iterable[str] | None = None) -> list[str]:
    """Markers as a schema stores them: trimmed, the empty string first, each once (case-insensitively),
    spelled as given."""
    kept, seen = [""], {""}
    for marker in DEFAULT_MISSING_MARKERS if markers is None else markers:
        marker = marker.strip()
        if marker.lower() not in seen:
            seen.add(marker.lower())
            kept.append(marker)
    return kept


class NumberReading:
    """A column read as numbers: `numbers` (float64, null where a value is missing or refused) and,
    when some value was refused, the masks of those that are not finite and not numbers."""

    __slots__ = ("numbers", "not_finite", "not_a_number")

    def __init__(self, numbers: pa.Array, not_finite: pa.Array | None = None, not_a_number: pa.Array | None = None):
        self.numbers, self.not_finite, self.not_a_number = numbers, not_finite, not_a_number


def read_numbers(values: pa.Array, markers: frozenset[str] = DEFAULT_MARKERS) -> NumberReading:
    """`number` over a string column: a value is missing, a finite number, or refused (not finite,
    not a number), exactly as `number` answers for it.

    A clean column (numbers and empty cells only) costs one cast: Arrow's cast takes exactly our
    numbers plus nan and inf in their spellings, and those make the sum of the column non-finite.
    Anything else, a marker such as NA included, takes the rule's slow path.
    """
    lengths = pc.binary_length(values)
    if not _numbers_cast_as_markers(markers):
        present = pc.fill_null(pc.greater(lengths, 0), False)
        longest = pc.max(lengths).as_py() or 0
        if longest <= MAX_NUMBER_CHARS:  # longer bytes may still be few enough characters: the slow path decides
            cast = values if pc.all(present).as_py() else pc.if_else(present, values, pa.scalar(None, pa.string()))
            try:
                numbers = pc.cast(cast, pa.float64())
            except pa.ArrowInvalid:
                pass
            else:
                if _all_finite(numbers):
                    return NumberReading(numbers)
    return _read_numbers_slowly(values, markers)


def _read_numbers_slowly(values: pa.Array, markers: frozenset[str]) -> NumberReading:
    short = pc.fill_null(pc.less_equal(pc.utf8_length(values), MAX_NUMBER_CHARS), True)
    text = pc.utf8_trim_whitespace(values)
    missing = pc.and_(missing_mask(values, markers), short)
    numeric = pc.and_(pc.and_(pc.fill_null(number_mask(text), False), short), pc.invert(missing))  # a marker first, as in `number`
    numbers = pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.float64())
    too_large = pc.fill_null(pc.invert(pc.is_finite(numbers)), False)  # 1e999: a number, but not a float
    refused = pc.invert(pc.or_(missing, numeric))
    word = pc.and_(pc.fill_null(pc.match_substring_regex(text, NOT_FINITE_PATTERN, ignore_case=True), False), short)
    not_finite = pc.or_(pc.and_(refused, word), too_large)
    not_a_number = pc.and_(refused, pc.invert(word))
    if pc.any(too_large).as_py():
        numbers = pc.if_else(too_large, pa.scalar(None, pa.float64()), numbers)
    return NumberReading(numbers, not_finite, not_a_number)


def _numbers_cast_as_markers(markers: frozenset[str]) -> bool:
    """Whether a marker is a number ("-999"): then every block takes the slow path, which looks for
    markers first. (nan and inf need not: Arrow's cast makes them non-finite, which sends the block there.)"""
    return any(_NUMBER_RE.fullmatch(marker) for marker in markers)


def _all_finite(numbers: pa.Array) -> bool:
    if numbers.null_count == 0:
        with np.errstate(invalid="ignore", over="ignore"):
            if np.isfinite(np.add.reduce(numbers.to_numpy())):
                return True  # inf or NaN would have made the sum inf or NaN: no need to test each value
    return (pc.sum(pc.is_finite(numbers)).as_py() or 0) == len(numbers) - numbers.null_count


def read_texts(column: pa.Array, markers: frozenset[str] = DEFAULT_MARKERS) -> pa.DictionaryArray:
    """`text` over a string column (the CSV reader's categories, batch scoring): trimmed, markers
    missing (null), dictionary-encoded, each value once in the dictionary. Only the distinct
    values are looked at when the file's column came encoded; the rows cost an index look-up
    at most, and nothing when no value needs trimming or is a marker (most columns)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    distinct = column.dictionary
    trimmed = pc.utf8_trim_whitespace(distinct)
    missing = missing_mask(trimmed, markers)
    if trimmed.equals(distinct) and not pc.any(missing).as_py():
        return column
    # Trimming may make two entries one ("a", " a"): encode the cleaned entries again, then
    # point each row at its entry's new place.
    cleaned = pc.dictionary_encode(pc.if_else(missing, pa.scalar(None, pa.string()), trimmed))
    return pa.DictionaryArray.from_arrays(pc.take(cleaned.indices, column.indices), cleaned.dictionary)
