"""Data drift between the live model's training rows (the reference) and the new batches.

Each feature gets a PSI (quantile bins taken from the reference for numbers, categories for
text, new categories and missing values counted as their own bins) and a significance test
(Kolmogorov-Smirnov for numbers, chi-square for categories). Which one decides depends on
sample size, as the careful drift tools choose: when either side is small, PSI is mostly
noise and the p-value test decides, with a Benjamini-Hochberg correction across features;
when both sides are large every p-value is tiny, and the PSI distance decides.

Drift is a change in who the rows describe; a broken column is a change in how they are
recorded. A feature that holds one value in every new row (a constant, or all missing) while
the reference varies is reported as broken when the reference would give that many identical
rows with a chance below BROKEN_CHANCE: an export that fills a column with a default, a join
that lost its right side. One broken column is one drifted feature among many to the drift
share, so the gates look at broken features on their own.
"""
import numpy as np
import pandas as pd
from scipy import stats

from .training import MISSING

BINS = 10
EPSILON = 1e-4  # stands in for an empty bin, so PSI stays finite
SMALL_SAMPLE = 1000
# A column is broken when the new rows all hold one value that the reference would repeat that
# many times with a chance below this (the sum over its values of share ** rows); and never on
# fewer new rows than BROKEN_MIN_ROWS.
BROKEN_CHANCE = 1e-6
BROKEN_MIN_ROWS = 20
# A number has moved out of range (a unit or export change: charges sent in cents) when more than
# OUT_OF_RANGE_SHARE of its non-missing new values lie outside the live model's training range,
# widened by OUT_OF_RANGE_MARGIN of that range on each side so that a new record high is not one.
OUT_OF_RANGE_SHARE = 0.5
OUT_OF_RANGE_MARGIN = 0.10


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    p = np.asarray(expected, dtype=float)
    q = np.asarray(actual, dtype=float)
    p = np.clip(p / p.sum(), EPSILON, None)
    q = np.clip(q / q.sum(), EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_counts(reference: pd.Series, current: pd.Series, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, list]:
    ref = reference.to_numpy(dtype=float)
    cur = current.to_numpy(dtype=float)
    ref_present, cur_present = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    edges = np.unique(np.quantile(ref_present, np.linspace(0, 1, bins + 1)[1:-1])) if len(ref_present) else np.array([])
    # Bin i holds values <= edges[i]; the last bin everything above; a final bin the missing values.
    ref_counts = np.bincount(np.searchsorted(edges, ref_present, side="left"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur_present, side="left"), minlength=len(edges) + 1)
    ref_counts = np.append(ref_counts, np.isnan(ref).sum())
    cur_counts = np.append(cur_counts, np.isnan(cur).sum())
    return ref_counts, cur_counts, edges.tolist()


def categorical_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray, list]:
    ref = reference.astype(object).where(reference.notna(), MISSING)
    cur = current.astype(object).where(current.notna(), MISSING)
    categories = sorted(set(ref.unique()) | set(cur.unique()), key=str)
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    return ref_counts, cur_counts, categories


def broken(reference: pd.Series, current: pd.Series) -> str | None:
    """Why the new values look broken rather than drifted (one value in every row), or None."""
    cur = current.astype(object).where(current.notna(), MISSING)
    if len(cur) < BROKEN_MIN_ROWS or len(reference) == 0 or cur.nunique() != 1:
        return None
    shares = reference.astype(object).where(reference.notna(), MISSING).value_counts(normalize=True).to_numpy(float)
    # The chance that len(cur) rows drawn from the reference all hold one value, whichever it is.
    chance = float(np.sum(np.exp(len(cur) * np.log(shares))))
    if chance >= BROKEN_CHANCE:
        return None
    value = cur.iloc[0]
    what = "is missing" if value == MISSING else f"is {value!r}"
    return (f"every one of the {len(cur):,} new values {what}, while the reference has {len(shares):,} distinct values "
            f"(chance of that {chance:.1e})")


def out_of_range(profile: dict, current: pd.DataFrame, schema) -> dict | None:
    """The numeric features whose new values mostly fall outside the training range in `profile`
    (ModelVersion.profile), each with both ranges and the share outside; None without a profile."""
    if not profile:
        return None
    moved = {}
    for name in schema.numeric_features:
        seen, values = profile.get(name) or {}, current[name].dropna().to_numpy(float)
        if "min" not in seen or not len(values):
            continue
        lo, hi = seen["min"], seen["max"]
        # A number constant in training is widened by a share of its size (or of 1 for zero).
        margin = OUT_OF_RANGE_MARGIN * ((hi - lo) or abs(hi) or 1.0)
        share = float(np.mean((values < lo - margin) | (values > hi + margin)))
        if share > OUT_OF_RANGE_SHARE:
            moved[name] = {"share": share, "rows": int(len(values)), "before": [lo, hi],
                           "after": [float(values.min()), float(values.max())]}
    return moved


def feature_drift(reference: pd.Series, current: pd.Series, kind: str) -> dict:
    if kind == "numeric":
        ref_counts, cur_counts, bins = numeric_counts(reference, current)
        ref_values, cur_values = reference.dropna().to_numpy(float), current.dropna().to_numpy(float)
        if len(ref_values) and len(cur_values):
            result = stats.ks_2samp(ref_values, cur_values)
            test, statistic, p_value = "Kolmogorov-Smirnov", float(result.statistic), float(result.pvalue)
        else:
            test, statistic, p_value = "Kolmogorov-Smirnov", None, 1.0
    else:
        ref_counts, cur_counts, bins = categorical_counts(reference, current)
        test, statistic, p_value = "chi-square", *_chi_square(ref_counts, cur_counts)
    return {
        "kind": kind,
        "psi": psi(ref_counts, cur_counts),
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "reference_rows": int(len(reference)),
        "current_rows": int(len(current)),
        "bins": [str(b) for b in bins][:50],
        "reference_share": _shares(ref_counts),
        "current_share": _shares(cur_counts),
        "broken": broken(reference, current),
    }


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c / total), 4) if total else 0.0 for c in counts][:51]


def _chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float | None, float]:
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return None, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table)
    return float(statistic), float(p_value)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """False-discovery-rate adjusted p-values, in the order given (scipy's Benjamini-Hochberg).

    scipy refuses a NaN; one NaN among them makes every adjusted value NaN here, so that no
    feature is then called drifted by its p-value.
    """
    p = np.asarray(p_values, dtype=float)
    if np.isnan(p).any():
        return [float("nan")] * len(p)
    return stats.false_discovery_control(p).tolist() if len(p) else []


def dataset_drift(reference: pd.DataFrame, current: pd.DataFrame, schema, *, psi_threshold: float, p_threshold: float,
                  reference_labels: np.ndarray, current_labels: np.ndarray) -> dict:
    """Per-feature drift, the share of drifted features, broken features, and the change in the positive rate."""
    if reference.empty or current.empty:
        return {"share": 0.0, "features": {}, "drifted": [], "broken": {}, "note": "no new rows or no reference rows to compare"}
    features = {f["name"]: feature_drift(reference[f["name"]], current[f["name"]], f["kind"]) for f in schema.features}
    small = min(len(reference), len(current)) < SMALL_SAMPLE
    adjusted = benjamini_hochberg([r["p_value"] for r in features.values()])
    for (name, result), p_adj in zip(features.items(), adjusted):
        result["p_value_adjusted"] = p_adj
        result["decided_by"] = "p-value" if small else "psi"
        # A broken column has drifted too, however few rows decide.
        result["drifted"] = bool(p_adj < p_threshold) if small else bool(result["psi"] > psi_threshold)
        result["drifted"] = result["drifted"] or result["broken"] is not None
    drifted = [name for name, result in features.items() if result["drifted"]]
    ref_rate = float(np.mean(reference_labels)) if len(reference_labels) else 0.0
    cur_rate = float(np.mean(current_labels)) if len(current_labels) else 0.0
    return {
        "share": len(drifted) / len(features),
        "drifted": drifted,
        "broken": {name: result["broken"] for name, result in features.items() if result["broken"]},
        "features": features,
        "method": "p-value tests with FDR correction (small sample)" if small else f"PSI > {psi_threshold}",
        "psi_threshold": None if small else psi_threshold,
        "reference_rows": int(len(reference)),
        "current_rows": int(len(current)),
        "target": {
            "reference_positive_rate": ref_rate,
            "current_positive_rate": cur_rate,
            "change": cur_rate - ref_rate,
            "psi": psi(np.bincount(np.asarray(reference_labels, int), minlength=2), np.bincount(np.asarray(current_labels, int), minlength=2)),
        },
    }
