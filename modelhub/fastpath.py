"""Fast path for one row: a fitted pipeline compiled once, when it is loaded, into numpy arithmetic.

Calling the Pipeline for one row costs 10-20 ms, nearly all of it in pandas and in scikit-learn's
per-call work (building a DataFrame, validating dtypes, selecting columns, the one-hot encoder's
set arithmetic, one OpenMP region per boosted tree), not in the model's arithmetic.
compile_model() reads the fitted steps once (tens of milliseconds, most of it the self-check
below) and keeps only what a prediction needs:

- numeric branch (SimpleImputer, StandardScaler): the imputer's statistics, the scaler's mean and
  scale, applied with the same float64 operations in the same order as scikit-learn;
- categorical branch (SimpleImputer, OneHotEncoder): for each column, a table from category to its
  slice of the encoded row. The slices are read off the fitted branch itself, by transforming every
  known category, a missing value and an unknown one, so "(missing)", infrequent categories,
  unknown ones and drop settings come out as the encoder makes them instead of being re-derived;
- the ColumnTransformer's output order (its transformers in order; "drop" and remainder="drop"
  leave their columns out);
- the estimator: LogisticRegression as x @ coef_.T + intercept_ and scipy's expit, the operations
  predict_proba runs; HistGradientBoostingClassifier's trees flattened into arrays and walked for
  all trees at once, the leaf values added in scikit-learn's order, then expit. (Calling the fitted
  estimator on the encoded row instead still costs about 1.5 ms with one thread: its input
  validation, then one Cython call and OpenMP region per tree.) Batches of rows do call the
  fitted estimator, whose per-call costs are then shared by the rows;
- a calibrated version's estimator, modelhub.calibration.CalibratedModel wrapping one of these two:
  the wrapped estimator compiled as above, then its probability through the version's
  Calibrator.apply, the very function CalibratedModel.predict_proba calls. The self-check below
  compares the calibrated probabilities with the Pipeline's, as for any other model.

Raw values are read as training.features_frame reads them: numbers by pd.to_numeric with
errors="coerce" (None, NaN and "" are missing), categories as text with None and NaN missing.
Note that "" in a categorical column is the category "", as in the Pipeline, not a missing
value: callers that mean blank as missing map it to None first (modelhub.inputs does, for the
predict page, the API and batch scoring).

Fallback rule: the Pipeline answers whenever the fast path cannot vouch for the answer.
- Whole model: a model that is not a Pipeline of one ColumnTransformer and one estimator, a
  transformer or estimator type not listed above (exact types, not subclasses), a setting the
  compiler does not model (missing indicators, sparse output, categorical splits in the trees,
  more than two classes, columns chosen by position...), or a compiled program that disagrees with
  the Pipeline on probe rows built from the model's own categories. `compiled` is then False and
  `fallback_reason` says why.
- One row (or one batch): a value whose reading the fast path does not reproduce (a number where
  a category is expected, numbers written as " 12" or "1_000", infinity, pd.NA, ...). That row,
  or the whole batch, goes to the Pipeline, which gives its answer or raises its own error.

Use: predictor = compile_model(pipeline, schema, positive_label=...) when a version is loaded,
then predictor.proba_one({feature: value}), .proba_many([rows]) or .proba_frame(frame).
"""
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ingestion import values as value_rules

from . import training
from .calibration import METHODS as CALIBRATION_METHODS, CalibratedModel, Calibrator

log = logging.getLogger("clsite.modelhub")

# The same operations in the same order give the same bits; this only allows for a BLAS that
# sums a dot product in another order for another memory alignment.
SELF_CHECK_TOLERANCE = 1e-12
# Strings that are numbers by ingestion.values' rule, which float() and pd.to_numeric read
# alike. Others ("1_000", " 12", "inf", full-width digits...) go to the Pipeline.
_UNKNOWN_PROBE = "\x00fastpath probe: not a category\x00"
_PLAIN_TYPES = {type(None), str, float, int}
_PROBE_NUMBERS = (None, 0, 1, -1.5, 2.25, "3.5", 10, 1000.0, 123.456, -7, "", 0.001)


class CannotCompile(Exception):
    """The model holds something the compiler does not know; the message says what."""


class _Unusual(Exception):
    """A value the fast path cannot vouch for: the row (or batch) goes to the Pipeline."""


class Predictor:
    """Positive-class probabilities from one model version, compiled or through its Pipeline."""

    def __init__(self, pipeline, schema, positive_label: str | None, program: "_Program | None", fallback_reason: str | None):
        self.pipeline = pipeline
        self.schema = schema
        self.positive_label = positive_label
        self._program = program
        self.fallback_reason = fallback_reason

    @property
    def compiled(self) -> bool:
        return self._program is not None

    def proba_one(self, row: Mapping[str, Any]) -> float:
        """Probability of the positive class for one row of raw values, keyed by feature name."""
        if self._program is not None:
            try:
                return self._program.proba_one(row)
            except _Unusual:
                pass
        return float(self._pipeline_proba(training.features_frame(pd.DataFrame([row]), self.schema))[0])

    def proba_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """proba_one for each row, in one vectorised pass (an API call's 10,000 rows).

        One value the fast path cannot vouch for sends the whole batch to the Pipeline, as one
        frame, so that the Pipeline's error (if it has one) is the answer as it would be today.
        """
        rows = list(rows)
        if not rows:
            return np.empty(0)
        return self.proba_columns({name: [row.get(name) for row in rows] for name in self.schema.feature_names})

    def proba_columns(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """The same for columns already read by modelhub.inputs: numbers as float64 arrays (NaN
        missing), categories as text or None; one column per feature."""
        if self._program is not None:
            try:
                if len(next(iter(columns.values()), ())) == 1:  # one row: the scalar program, a tenth of the vector one's cost
                    return np.array([self._program.proba_one({name: columns[name][0] for name in self._program.inputs})])
                return self._program.proba_columns({name: columns[name] for name in self._program.inputs})
            except _Unusual:
                pass
        return self._pipeline_proba(training.features_frame(pd.DataFrame(dict(columns)), self.schema))

    def proba_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The same for a DataFrame with the schema's columns, as batch scoring (modelhub.scoring) passes."""
        if len(frame) == 0:
            return np.empty(0)
        features = training.features_frame(frame, self.schema)
        if self._program is not None:
            try:
                return self._program.proba_columns({name: _column(features[name]) for name in self._program.inputs})
            except _Unusual:
                pass
        return self._pipeline_proba(features)

    def _pipeline_proba(self, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(training.positive_proba(self.pipeline, features, self.positive_label), dtype=np.float64)

    def __repr__(self) -> str:
        state = "compiled" if self.compiled else f"fallback: {self.fallback_reason}"
        return f"<Predictor {state}>"


def compile_model(pipeline, schema, *, positive_label: str | None = None) -> Predictor:
    """Compile a fitted model once; the Predictor falls back to the Pipeline when it must.

    `positive_label` as for training.positive_proba: None for our models (positive class 1),
    the schema's positive label for an imported one.
    """
    try:
        program = _compile(pipeline, schema, positive_label)
        _self_check(program, pipeline, schema, positive_label)
    except CannotCompile as exc:
        reason = str(exc)
    except Exception as exc:  # fitted internals unlike those read here: the Pipeline still answers
        log.warning("fast path: compiling the model failed; the Pipeline will answer", exc_info=True)
        reason = f"compiler error: {exc!r}"
    else:
        return Predictor(pipeline, schema, positive_label, program, None)
    log.info("fast path off for this model: %s", reason)
    return Predictor(pipeline, schema, positive_label, None, reason)


# --- reading raw values as training.features_frame does ----------------------------------------

def _number(value: Any) -> float:
    """The float pd.to_numeric(errors="coerce") makes of `value`, or _Unusual."""
    if value is None:
        return math.nan
    kind = type(value)
    if kind is str:
        if value == "":
            return math.nan
        if not value_rules.is_number_text(value):
            raise _Unusual
        number = float(value)
    elif kind is float or isinstance(value, np.floating):
        number = float(value)
    elif kind is int or kind is bool or isinstance(value, (np.integer, np.bool_)):
        if not -2**63 <= int(value) < 2**63:  # beyond int64 pandas reads it as object or uint64
            raise _Unusual
        number = float(value)
    else:
        raise _Unusual
    if math.isinf(number):
        raise _Unusual  # the imputer refuses infinity: the Pipeline raises its own error
    return number


def _numbers(values: Sequence) -> np.ndarray:
    """A column of raw values read as features_frame reads it, or _Unusual."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        numbers = values  # features_frame's own output
    else:
        objects = np.fromiter(values, dtype=object, count=len(values))
        # pd.to_numeric itself reads them (unlike _number, which must avoid its cost per call);
        # the check keeps out objects whose reading depends on the dtype pandas would infer for
        # the column of a whole DataFrame (booleans, Decimals, numpy scalars, pd.NA, huge ints...).
        kinds = set(map(type, objects))
        if not kinds <= _PLAIN_TYPES or (int in kinds and not all(-2**63 <= v < 2**63 for v in objects if type(v) is int)):
            raise _Unusual
        numbers = pd.to_numeric(objects, errors="coerce").astype(np.float64)
    if np.isinf(numbers).any():
        raise _Unusual  # the imputer refuses infinity: the Pipeline raises its own error
    return numbers


def _category_code(value: Any, table: dict[str, int], missing: int, unknown: int | None) -> int:
    """Row of a column's block for `value`; None/NaN are missing as features_frame makes them."""
    if isinstance(value, str):
        code = table.get(value, unknown)
        if code is None:  # handle_unknown="error": let the Pipeline raise
            raise _Unusual
        return code
    if value is None or (isinstance(value, float) and value != value):
        return missing
    raise _Unusual  # a number or other object: sklearn compares it with the text categories


# --- the compiled program ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Impute:
    statistics: np.ndarray
    keep: np.ndarray | None  # columns kept: the imputer drops those it never saw a value of

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), self.statistics, x)
        return x if self.keep is None else x[:, self.keep]


@dataclass(frozen=True)
class _Standardise:
    mean: np.ndarray | None
    scale: np.ndarray | None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # As StandardScaler.transform: subtract, then divide (not multiply by a reciprocal).
        if self.mean is not None:
            x = x - self.mean
        if self.scale is not None:
            x = x / self.scale
        return x


@dataclass(frozen=True)
class _NumericBranch:
    columns: tuple[str, ...]
    steps: tuple[Callable[[np.ndarray], np.ndarray], ...]
    width: int

    @property
    def names(self) -> tuple[str, ...]:
        return self.columns

    def one(self, row: Mapping[str, Any]) -> list[np.ndarray]:
        return [_through(self.steps, np.array([[_number(row.get(name)) for name in self.columns]]))[0]]

    def many(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return _through(self.steps, np.column_stack([_numbers(columns[name]) for name in self.columns]))


def _through(steps, x: np.ndarray) -> np.ndarray:
    for step in steps:
        x = step(x)
    return x


@dataclass(frozen=True)
class _CategoricalColumn:
    name: str
    table: dict[str, int]  # category -> row of `block`
    block: np.ndarray  # one row per known category, then the missing value's, then an unknown's
    unknown: int | None  # None: the encoder refuses unknown categories

    @property
    def missing(self) -> int:
        return len(self.table)

    def code(self, value: Any) -> int:
        return _category_code(value, self.table, self.missing, self.unknown)

    def codes(self, values: Sequence) -> np.ndarray:
        """code() of each value, looking up each distinct value once."""
        if isinstance(values, pd.Categorical):  # batch scoring: Arrow found the distinct values
            distinct, found = values.categories, values.codes
        else:
            try:
                # Missing values (None, NaN, pd.NA) get -1, as notna() in features_frame sees them.
                found, distinct = pd.factorize(np.fromiter(values, dtype=object, count=len(values)))
            except TypeError:  # unhashable values: the Pipeline raises its own error
                raise _Unusual from None
        # Index -1 takes the last entry: the missing value's row.
        return np.array([self.code(value) for value in distinct] + [self.missing], dtype=np.intp)[found]


@dataclass(frozen=True)
class _CategoricalBranch:
    columns: tuple[_CategoricalColumn, ...]
    width: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def one(self, row: Mapping[str, Any]) -> list[np.ndarray]:
        return [column.block[column.code(row.get(column.name))] for column in self.columns]

    def many(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return np.hstack([column.block[column.codes(columns[column.name])] for column in self.columns])


@dataclass(frozen=True)
class _Logistic:
    coef_t: np.ndarray  # coef_.T, the operand predict_proba multiplies by
    intercept: np.ndarray

    def one(self, x: np.ndarray) -> float:
        return float(expit(x[None, :] @ self.coef_t + self.intercept)[0, 0])

    def many(self, X: np.ndarray) -> np.ndarray:
        return expit((X @ self.coef_t + self.intercept).reshape(-1))


@dataclass(frozen=True)
class _Forest:
    """Every tree's nodes in flat arrays; a leaf is its own child, so walking `depth` steps from
    every root at once ends on each tree's leaf."""
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    baseline: np.ndarray  # shape (1,)
    estimator: HistGradientBoostingClassifier

    def one(self, x: np.ndarray) -> float:
        # Every node's decision for this row at once (a few thousand comparisons in one numpy
        # call), then each step of the walk is a single gather for all trees.
        seen = x[self.feature]
        go_left = seen <= self.threshold  # NaN compares False: right, unless...
        if np.isnan(x).any():
            go_left |= np.isnan(seen) & self.missing_left
        step = np.where(go_left, self.left, self.right)
        node = self.roots
        for _ in range(self.depth):
            node = step[node]
        # add.accumulate adds left to right, as _raw_predict adds one tree after another (np.sum
        # would add pairwise and could differ in the last bits).
        raw = np.add.accumulate(np.concatenate((self.baseline, self.value[node])))[-1:]
        return float(expit(raw)[0])

    def many(self, X: np.ndarray) -> np.ndarray:
        # For many rows the estimator's own Cython loop is the fast way; its validation and
        # per-tree overhead are paid once per batch.
        return self.estimator.predict_proba(X)[:, 1]


@dataclass(frozen=True)
class _Calibrated:
    scorer: _Logistic | _Forest
    calibrator: Calibrator

    def one(self, x: np.ndarray) -> float:
        return float(self.calibrator.apply(np.array([self.scorer.one(x)]))[0])

    def many(self, X: np.ndarray) -> np.ndarray:
        return self.calibrator.apply(self.scorer.many(X))


@dataclass(frozen=True)
class _Program:
    branches: tuple[_NumericBranch | _CategoricalBranch, ...]
    scorer: _Logistic | _Forest | _Calibrated
    positive_column: int  # the predict_proba column training.positive_proba takes

    def encode_one(self, row: Mapping[str, Any]) -> np.ndarray:
        parts = []
        for branch in self.branches:
            parts.extend(branch.one(row))
        return np.concatenate(parts)

    @property
    def inputs(self) -> list[str]:
        """The features the encoded row depends on."""
        return [name for branch in self.branches for name in branch.names]

    def encode_many(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return np.hstack([branch.many(columns) for branch in self.branches])

    def proba_one(self, row: Mapping[str, Any]) -> float:
        return _pick(self.scorer.one(self.encode_one(row)), self.positive_column)

    def proba_columns(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        return _pick(self.scorer.many(self.encode_many(columns)), self.positive_column)


def _column(values: pd.Series) -> Sequence:
    # A categorical column stays a Categorical: its codes are the encoder's lookups, done once per category.
    return values.array if isinstance(values.dtype, pd.CategoricalDtype) else values.to_numpy()


def _pick(class_one, column: int):
    # Every estimator compiled computes column 1 and makes column 0 as 1 - column 1.
    return class_one if column == 1 else 1 - class_one


# --- compiling -----------------------------------------------------------------------------------

def _compile(pipeline, schema, positive_label: str | None) -> _Program:
    if type(pipeline) is not Pipeline:
        raise CannotCompile(f"the model is a {type(pipeline).__name__}, not a scikit-learn Pipeline")
    steps = [step for _, step in pipeline.steps if step is not None and step != "passthrough"]
    if len(steps) != 2 or type(steps[0]) is not ColumnTransformer:
        raise CannotCompile("the Pipeline is not one ColumnTransformer followed by an estimator")
    prepare, estimator = steps
    branches = _compile_prepare(prepare, schema)
    width = sum(branch.width for branch in branches)
    scorer = _compile_estimator(estimator, width)
    return _Program(tuple(branches), scorer, _positive_column(estimator.classes_, positive_label))


def _compile_prepare(prepare: ColumnTransformer, schema) -> list:
    if not hasattr(prepare, "feature_names_in_"):
        raise CannotCompile("the ColumnTransformer was not fitted on a DataFrame")
    if getattr(prepare, "sparse_output_", False):
        raise CannotCompile("the ColumnTransformer's output is sparse")
    kinds = {feature["name"]: feature["kind"] for feature in schema.features}
    branches = []
    for name, transformer, columns in prepare.transformers_:
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            raise CannotCompile(f"transformer {name!r} is {transformer!r}")
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not columns:
            continue  # the ColumnTransformer skips an empty selection
        if not all(isinstance(column, str) and column in kinds for column in columns):
            raise CannotCompile(f"transformer {name!r} takes columns that are not the schema's features by name")
        branches.append(_compile_branch(name, transformer, columns, kinds))
    if not branches:
        raise CannotCompile("the ColumnTransformer outputs nothing")
    return branches


def _compile_branch(name: str, transformer, columns: list[str], kinds: dict[str, str]):
    steps = _fitted_steps(transformer)
    types = [type(step) for step in steps]
    if all(kind in (SimpleImputer, StandardScaler) for kind in types):
        if any(kinds[column] != "numeric" for column in columns):
            raise CannotCompile(f"transformer {name!r} scales columns the schema calls categorical")
        return _compile_numeric(steps, columns)
    if types and types[-1] is OneHotEncoder and all(kind is SimpleImputer for kind in types[:-1]):
        if any(kinds[column] == "numeric" for column in columns):
            raise CannotCompile(f"transformer {name!r} one-hot encodes columns the schema calls numeric")
        return _compile_categorical(transformer, steps, columns)
    raise CannotCompile(f"transformer {name!r} holds steps the compiler does not know: {', '.join(t.__name__ for t in types)}")


def _fitted_steps(transformer) -> list:
    if type(transformer) is Pipeline:
        return [step for _, step in transformer.steps if step is not None and step != "passthrough"]
    return [transformer]


def _check_imputer(imputer: SimpleImputer) -> None:
    missing = imputer.missing_values
    if not (isinstance(missing, float) and math.isnan(missing)) or imputer.add_indicator:
        raise CannotCompile("a SimpleImputer with other missing_values or a missing indicator")


def _compile_numeric(steps: list, columns: list[str]) -> _NumericBranch:
    if steps[0].n_features_in_ != len(columns):
        raise CannotCompile("a numeric branch whose first step saw other columns")
    compiled = []
    for step in steps:
        if type(step) is SimpleImputer:
            _check_imputer(step)
            statistics = np.asarray(step.statistics_, dtype=np.float64)
            empty = np.isnan(statistics)
            keep = np.flatnonzero(~empty) if empty.any() and not step.keep_empty_features else None
            compiled.append(_Impute(statistics, keep))
        else:
            compiled.append(_Standardise(step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None))
    width = _through(compiled, np.zeros((1, len(columns)))).shape[1]
    return _NumericBranch(tuple(columns), tuple(compiled), width)


def _compile_categorical(transformer, steps: list, columns: list[str]) -> _CategoricalBranch:
    encoder: OneHotEncoder = steps[-1]
    for imputer in steps[:-1]:
        _check_imputer(imputer)
    if encoder.sparse_output:
        raise CannotCompile("a OneHotEncoder with sparse output")
    if steps[0].n_features_in_ != len(columns) or encoder.n_features_in_ != len(columns):
        raise CannotCompile("a categorical branch that drops or adds columns")
    categories = [list(known) for known in encoder.categories_]
    if not all(isinstance(category, str) for known in categories for category in known):
        raise CannotCompile("a OneHotEncoder fitted on categories that are not text")
    if any(_UNKNOWN_PROBE in known for known in categories):
        raise CannotCompile("a OneHotEncoder that knows the compiler's unknown-category probe")
    widths = list(encoder._n_features_outs)  # private, but the self-check would catch a change
    blocks, unknown_ok = _probe_blocks(transformer, columns, categories, widths)
    compiled = []
    for name, known, block in zip(columns, categories, blocks):
        table = {category: i for i, category in enumerate(known)}
        compiled.append(_CategoricalColumn(name, table, block, len(known) + 1 if unknown_ok else None))
    return _CategoricalBranch(tuple(compiled), sum(widths))


def _probe_blocks(transformer, columns: list[str], categories: list[list[str]], widths: list[int]) -> tuple[list[np.ndarray], bool]:
    """Each column's output for each known category, a missing value and an unknown one.

    The encoder and imputers treat columns independently, so one transform of a frame holding
    every column's probe values, one row each, gives every block at once.
    """
    try:
        return _probe_once(transformer, columns, categories, widths, with_unknown=True), True
    except ValueError:  # handle_unknown="error"
        return _probe_once(transformer, columns, categories, widths, with_unknown=False), False


def _probe_once(transformer, columns, categories, widths, *, with_unknown: bool) -> list[np.ndarray]:
    probes = [known + [np.nan] + ([_UNKNOWN_PROBE] if with_unknown else []) for known in categories]
    rows = max(len(values) for values in probes)
    frame = pd.DataFrame({name: pd.Series(values + [values[0]] * (rows - len(values)), dtype=object)
                          for name, values in zip(columns, probes)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drop= with unknown categories warns; the answer is what counts
        out = transformer.transform(frame)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (rows, sum(widths)):
        raise CannotCompile("a categorical branch whose output width is not the encoder's")
    edges = np.cumsum([0] + widths)
    return [np.ascontiguousarray(out[:len(values), start:stop])
            for values, start, stop in zip(probes, edges[:-1], edges[1:])]


def _compile_estimator(estimator, width: int):
    if type(estimator) is CalibratedModel:
        calibrator = estimator.calibrator
        if type(calibrator) is not Calibrator or calibrator.method not in CALIBRATION_METHODS:
            raise CannotCompile("a CalibratedModel whose calibrator the compiler does not know")
        return _Calibrated(_compile_estimator(estimator.estimator, width), calibrator)
    if len(getattr(estimator, "classes_", ())) != 2:
        raise CannotCompile("the estimator is not a binary classifier")
    if getattr(estimator, "n_features_in_", width) != width:
        raise CannotCompile("the estimator expects another number of columns")
    if type(estimator) is LogisticRegression:
        return _compile_logistic(estimator, width)
    if type(estimator) is HistGradientBoostingClassifier:
        return _compile_forest(estimator)
    raise CannotCompile(f"the estimator {type(estimator).__name__} is not one the compiler knows")


def _compile_logistic(estimator: LogisticRegression, width: int) -> _Logistic:
    coef = estimator.coef_
    if not isinstance(coef, np.ndarray) or coef.shape != (1, width) or coef.dtype != np.float64:
        raise CannotCompile("a LogisticRegression whose coef_ is not one dense float64 row")
    return _Logistic(coef.T, np.asarray(estimator.intercept_))


def _compile_forest(estimator: HistGradientBoostingClassifier) -> _Forest:
    if estimator.n_trees_per_iteration_ != 1 or type(estimator._loss).__name__ != "HalfBinomialLoss":
        raise CannotCompile("a HistGradientBoostingClassifier without the binary log loss")
    if getattr(estimator, "_preprocessor", None) is not None:
        raise CannotCompile("a HistGradientBoostingClassifier that encodes categorical features itself")
    trees = [predictor.nodes for iteration in estimator._predictors for predictor in iteration]
    nodes = np.concatenate(trees)
    if nodes["is_categorical"].any():
        raise CannotCompile("a HistGradientBoostingClassifier with categorical splits")
    sizes = np.array([len(tree) for tree in trees])
    roots = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    shift = np.repeat(roots, sizes)
    own = np.arange(len(nodes))
    leaf = nodes["is_leaf"].astype(bool)
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
    if baseline.shape != (1,):
        raise CannotCompile("a HistGradientBoostingClassifier with more than one baseline")
    return _Forest(
        feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
        threshold=nodes["num_threshold"].astype(np.float64),
        left=np.where(leaf, own, nodes["left"].astype(np.intp) + shift),
        right=np.where(leaf, own, nodes["right"].astype(np.intp) + shift),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        value=nodes["value"].astype(np.float64),
        roots=roots.astype(np.intp),
        depth=int(nodes["depth"].max()),
        baseline=baseline,
        estimator=estimator,
    )


class _ClassesOnly:
    """Stands in for a model in training.positive_proba to learn which column it takes."""

    def __init__(self, classes):
        self.classes_ = classes

    def predict_proba(self, X) -> np.ndarray:
        return np.arange(len(self.classes_), dtype=np.float64).reshape(1, -1)


def _positive_column(classes, positive_label: str | None) -> int:
    # Asking positive_proba itself keeps the positive-class rule in one place.
    return int(training.positive_proba(_ClassesOnly(classes), None, positive_label)[0])


# --- the self-check ------------------------------------------------------------------------------

def _self_check(program: _Program, pipeline, schema, positive_label: str | None) -> None:
    """Compare the program with the Pipeline on rows holding every known category, missing and
    unknown values and assorted numbers: the encoded rows must be identical, the probabilities
    equal to SELF_CHECK_TOLERANCE: one row at a time, as a batch of raw values and as a batch
    read by features_frame."""
    rows = _probe_rows(program, schema)
    features = training.features_frame(pd.DataFrame(rows), schema)
    raw = {name: [row.get(name) for row in rows] for name in program.inputs}
    read = {name: features[name].to_numpy() for name in program.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_rows = pipeline[:-1].transform(features)
        if not isinstance(expected_rows, np.ndarray):
            raise CannotCompile("the ColumnTransformer does not output a dense array")
        # The Pipeline hands these rows to its estimator; scoring them here saves a transform.
        expected = training.positive_proba(pipeline[-1], expected_rows, positive_label)
    for encoded in (program.encode_many(raw), program.encode_many(read), np.stack([program.encode_one(row) for row in rows])):
        if encoded.shape != expected_rows.shape or not np.array_equal(encoded, expected_rows):
            raise CannotCompile("self-check: the encoded rows differ from the ColumnTransformer's")
    for got in (program.proba_columns(raw), program.proba_columns(read), np.array([program.proba_one(row) for row in rows])):
        difference = float(np.max(np.abs(got - expected)))
        if not difference <= SELF_CHECK_TOLERANCE:
            raise CannotCompile(f"self-check: the probabilities differ from the Pipeline's by {difference:.3g}")


def _probe_rows(program: _Program, schema) -> list[dict]:
    values = {}
    for branch in program.branches:
        if isinstance(branch, _CategoricalBranch):
            for column in branch.columns:
                values[column.name] = list(column.table) + [None] + ([_UNKNOWN_PROBE] if column.unknown is not None else [])
    for feature in schema.features:
        values.setdefault(feature["name"], list(_PROBE_NUMBERS) if feature["kind"] == "numeric" else [None])
    count = max(len(column) for column in values.values())
    # Shifting each column by its position mixes the values across rows.
    return [{name: column[(i + j) % len(column)] for j, (name, column) in enumerate(values.items())} for i in range(count)]
