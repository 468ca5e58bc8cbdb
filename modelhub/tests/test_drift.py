"""Drift: PSI checked by hand, binning from the reference, the small-sample rule, FDR correction."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from modelhub import drift


def test_psi_matches_a_hand_computed_example():
    # PSI = sum over bins of (actual - expected) * ln(actual / expected), on shares:
    #   expected 0.25 0.25 0.25 0.25   actual 0.10 0.20 0.30 0.40
    #   (0.10-0.25) ln(0.10/0.25) = -0.15 * -0.916291 = 0.137444
    #   (0.20-0.25) ln(0.20/0.25) = -0.05 * -0.223144 = 0.011157
    #   (0.30-0.25) ln(0.30/0.25) =  0.05 *  0.182322 = 0.009116
    #   (0.40-0.25) ln(0.40/0.25) =  0.15 *  0.470004 = 0.070501
    #                                                  = 0.228217
    assert drift.psi([100, 100, 100, 100], [40, 80, 120, 160]) == pytest.approx(0.228217, abs=1e-6)
    # Counts or shares, the same; the same distribution scores zero; swapping sides keeps it (symmetric).
    assert drift.psi([0.25] * 4, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.228217, abs=1e-6)
    assert drift.psi([5, 10, 85], [50, 100, 850]) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi([40, 80, 120, 160], [100, 100, 100, 100]) == pytest.approx(0.228217, abs=1e-6)


def test_an_empty_bin_counts_as_a_tiny_share_so_psi_stays_finite():
    # expected 0.5 0.5 0 -> 0.5 0.5 0.0001;  actual 0.4 0.4 0.2
    #   2 * (-0.1 * ln 0.8) + (0.2 - 0.0001) * ln(0.2 / 0.0001) = 0.044629 + 1.519420 = 1.564049
    assert drift.psi([50, 50, 0], [40, 40, 20]) == pytest.approx(1.564049, abs=1e-6)


def test_numeric_bins_are_quantiles_of_the_reference_with_a_bin_for_missing_values():
    reference = pd.Series(np.arange(1, 101, dtype=float))  # 1..100
    current = pd.Series([1.0, 25.75, 30.0, 60.0, 90.0, 1000.0, np.nan])
    ref_counts, cur_counts, edges = drift.numeric_counts(reference, current, bins=4)
    # Quartiles of 1..100 (linear interpolation): 25.75, 50.5, 75.25; a value on an edge is in the lower bin.
    assert edges == [25.75, 50.5, 75.25]
    assert ref_counts.tolist() == [25, 25, 25, 25, 0]
    assert cur_counts.tolist() == [2, 1, 1, 2, 1]  # 1000 falls in the last bin, NaN in the missing bin
    # The bins never move with the current data.
    assert drift.numeric_counts(reference, current * 10, bins=4)[2] == edges


def test_categorical_psi_counts_a_new_category_and_missing_values():
    reference = pd.Series(["a"] * 50 + ["b"] * 50, dtype=object)
    current = pd.Series(["a"] * 40 + ["b"] * 40 + ["c"] * 20, dtype=object)
    ref_counts, cur_counts, categories = drift.categorical_counts(reference, current)
    assert categories == ["a", "b", "c"]
    assert (ref_counts.tolist(), cur_counts.tolist()) == ([50, 50, 0], [40, 40, 20])
    result = drift.feature_drift(reference, current, "categorical")
    assert result["psi"] == pytest.approx(1.564049, abs=1e-6)  # the example above
    assert result["test"] == "chi-square" and result["p_value"] < 1e-4

    with_missing = pd.Series(["a"] * 45 + [None] * 5, dtype=object)
    _, counts, categories = drift.categorical_counts(reference, with_missing)
    assert dict(zip(categories, counts.tolist())) == {"(missing)": 5, "a": 45, "b": 0}


def test_benjamini_hochberg_matches_a_hand_example():
    # p = 0.01 0.04 0.03 0.20 (n = 4). Sorted with ranks: 0.01(1) 0.03(2) 0.04(3) 0.20(4);
    # p * n / rank = 0.04 0.06 0.0533 0.20; running minimum from the largest rank down:
    # 0.04 0.0533 0.0533 0.20; back in the given order: 0.04 0.0533 0.0533 0.20.
    adjusted = drift.benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    assert adjusted == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    # At 0.05, three raw p-values pass but only one survives the correction.
    assert sum(p < 0.05 for p in adjusted) == 1
    assert drift.benjamini_hochberg([]) == []
    assert drift.benjamini_hochberg([0.9, 0.8]) == pytest.approx([0.9, 0.9])


def schema(*features: tuple[str, str]):
    return SimpleNamespace(features=[{"name": name, "kind": kind} for name, kind in features])


def frame(rng, n, *, shift=0.0, new_colour_share=0.0):
    colours = rng.choice(["red", "green", "blue"], n).astype(object)
    colours[rng.random(n) < new_colour_share] = "purple"
    return pd.DataFrame({
        "steady": rng.normal(size=n),
        "moving": rng.normal(loc=shift, size=n),
        "plan": rng.choice(["basic", "plus"], n).astype(object),
        "colour": colours,
    })


FEATURES = schema(("steady", "numeric"), ("moving", "numeric"), ("plan", "categorical"), ("colour", "categorical"))


def dataset(reference, current, **kwargs):
    return drift.dataset_drift(reference, current, FEATURES, psi_threshold=0.2, p_threshold=0.05,
                               reference_labels=kwargs.get("ref_labels", np.zeros(len(reference), int)),
                               current_labels=kwargs.get("cur_labels", np.zeros(len(current), int)))


def test_clearly_shifted_features_are_flagged_and_steady_ones_are_not():
    rng = np.random.default_rng(1)
    reference, current = frame(rng, 3000), frame(rng, 2000, shift=1.0, new_colour_share=0.3)
    labels = dict(ref_labels=(rng.random(3000) < 0.25).astype(int), cur_labels=(rng.random(2000) < 0.45).astype(int))
    report = dataset(reference, current, **labels)
    assert report["method"] == "PSI > 0.2"
    assert sorted(report["drifted"]) == ["colour", "moving"]
    assert report["share"] == 0.5
    assert report["features"]["moving"]["psi"] > 0.5 and report["features"]["steady"]["psi"] < 0.05
    assert all(f["decided_by"] == "psi" for f in report["features"].values())
    assert report["target"]["current_positive_rate"] - report["target"]["reference_positive_rate"] == pytest.approx(
        report["target"]["change"])
    assert report["target"]["change"] > 0.15 and report["target"]["psi"] > 0.05


def test_with_large_samples_a_tiny_but_significant_shift_is_not_drift():
    rng = np.random.default_rng(0)
    reference, current = frame(rng, 5000), frame(rng, 5000, shift=0.15)
    moving = dataset(reference, current)["features"]["moving"]
    assert moving["p_value_adjusted"] < 1e-6  # a p-value test would cry wolf on this many rows
    assert moving["psi"] < 0.2 and moving["drifted"] is False


def test_when_either_side_is_small_the_corrected_p_value_decides_not_the_noisy_psi():
    rng = np.random.default_rng(0)
    reference, current = frame(rng, 40), frame(rng, 40)  # the same distribution
    report = dataset(reference, current)
    steady = report["features"]["steady"]
    assert report["method"].startswith("p-value tests")
    assert steady["decided_by"] == "p-value"
    assert steady["psi"] > 0.2  # ten bins of four rows: PSI is mostly noise here
    assert report["drifted"] == []

    # One small side is enough to switch to p-values: 5,000 reference rows, 300 new ones, a real shift.
    big, small = frame(rng, 5000), frame(rng, 300, shift=1.0)
    report = dataset(big, small)
    assert report["features"]["moving"]["decided_by"] == "p-value"
    assert report["drifted"] == ["moving"]
    assert report["share"] == 0.25


def test_no_rows_on_one_side_reports_no_drift_instead_of_failing():
    rng = np.random.default_rng(0)
    report = dataset(frame(rng, 100), frame(rng, 0))
    assert report["share"] == 0.0 and report["drifted"] == [] and "no new rows" in report["note"]
    assert math.isfinite(drift.feature_drift(pd.Series([1.0, 2.0]), pd.Series([np.nan, np.nan]), "numeric")["psi"])


def test_a_column_with_one_value_in_every_new_row_is_broken_when_the_reference_would_almost_never_repeat_it():
    rng = np.random.default_rng(0)
    reference = frame(rng, 2000)
    current = frame(rng, 300)
    current["moving"] = 0.25  # a plausible value, the export's default in every row
    current["colour"] = None  # a join that lost its right side
    report = dataset(reference, current)
    assert sorted(report["broken"]) == ["colour", "moving"]
    assert report["broken"]["moving"].startswith("every one of the 300 new values is 0.25, while the reference has 2,000 distinct values")
    assert "is missing" in report["broken"]["colour"]
    assert {"moving", "colour"} <= set(report["drifted"])
    assert report["features"]["steady"]["broken"] is None and report["features"]["plan"]["broken"] is None


def test_a_run_of_one_common_value_is_not_broken_on_a_few_rows_but_is_on_many():
    # "basic" is half the reference: 20 new rows all "basic" happen by chance once in a million draws or so
    # (2 x 0.5**20 = 1.9e-6, above the 1e-6 line); 40 rows (1.8e-12) do not.
    reference = pd.Series(["basic", "plus"] * 500, dtype=object)
    assert drift.broken(reference, pd.Series(["basic"] * 20, dtype=object)) is None
    assert "is 'basic'" in drift.broken(reference, pd.Series(["basic"] * 40, dtype=object))
    # Too few rows to say anything, rows that vary, or a reference that is itself constant: never broken.
    assert drift.broken(pd.Series(np.arange(100.0)), pd.Series([5.0] * (drift.BROKEN_MIN_ROWS - 1))) is None
    assert drift.broken(pd.Series(np.arange(100.0)), pd.Series([5.0] * 30 + [6.0])) is None
    assert drift.broken(pd.Series([1.0] * 100), pd.Series([1.0] * 100)) is None


def test_no_rows_on_one_side_reports_no_broken_columns():
    rng = np.random.default_rng(0)
    assert dataset(frame(rng, 100), frame(rng, 0))["broken"] == {}


def hand_written_benjamini_hochberg(p_values: list[float]) -> list[float]:
    """The project's own adjustment before it used scipy's, kept as the reference."""
    p = np.asarray(p_values, dtype=float)
    n = len(p)
    if n == 0:
        return []
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty(n)
    result[order] = np.clip(adjusted, 0, 1)
    return result.tolist()


def test_benjamini_hochberg_gives_the_hand_written_figures_on_random_p_values():
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 50, 400):
        for p in (rng.random(n), rng.random(n).round(1), rng.random(n) ** 6, np.r_[rng.random(n), [0.0, 1.0]]):
            assert drift.benjamini_hochberg(p.tolist()) == pytest.approx(hand_written_benjamini_hochberg(p.tolist()), rel=1e-12, abs=0)
        with_nan = rng.random(n)
        with_nan[rng.integers(0, n)] = np.nan
        assert all(math.isnan(v) for v in drift.benjamini_hochberg(with_nan.tolist()))
        assert all(math.isnan(v) for v in hand_written_benjamini_hochberg(with_nan.tolist()))
