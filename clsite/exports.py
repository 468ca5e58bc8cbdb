"""CSV files the site hands out, safe to open in a spreadsheet.

A text cell beginning with =, +, -, @, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets (=HYPERLINK(...) would come back live); such cells get a leading
apostrophe, which the spreadsheet shows as plain text. Numbers are never touched.
"""
import csv
from typing import Any, Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(fh, rows: Iterable[Iterable[Any]]) -> None:
    writer = csv.writer(fh)
    for row in rows:
        writer.writerow([safe_cell(value) for value in row])

