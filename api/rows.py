"""Checking the rows of a prediction request against the active model's schema: every problem,
by row and field, so a program can fix them all at once."""
import math
import re

from .schemas import MAX_ROWS

NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def problems(rows: list, schema) -> list[dict]:
    found = []
    if not rows:
        return [{"row": None, "field": "rows", "message": "send at least one row"}]
    if len(rows) > MAX_ROWS:
        return [{"row": None, "field": "rows", "message": f"{len(rows):,} rows; send at most {MAX_ROWS:,} per call"}]
    kinds = {f["name"]: f["kind"] for f in schema.features}
    ignored = {schema.id_column, schema.target} - {""}
    for index, row in enumerate(rows):
        for field, value in row.items():
            kind = kinds.get(field)
            if kind is None:
                if field not in ignored:
                    found.append({"row": index, "field": field, "message": "not a feature of the model"})
            elif kind == "numeric":
                message = _number_problem(value)
                if message:
                    found.append({"row": index, "field": field, "message": message})
            elif value is not None and not isinstance(value, str):
                found.append({"row": index, "field": field, "message": f"{value!r} is not text; categories are strings"})
    return found


def _number_problem(value) -> str:
    if value is None or isinstance(value, bool):
        return "" if value is None else f"{value!r} is not a number; send 0 or 1"
    if isinstance(value, (int, float)):
        return "" if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, str):
        return "" if value == "" or NUMBER.fullmatch(value) else f"{value!r} is not a number"
    return f"{value!r} is not a number"
