"""The fast path for one row: the Pipeline's probabilities, without the Pipeline's per-call cost.

No database: models are fitted here, small, once per module.
"""
import io
from decimal import Decimal
from types import SimpleNamespace

import joblib
import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from ingestion.schema import learn_schema
from modelhub import artifacts, calibration, evaluation, fastpath, training
from testing import builders

from .helpers import HUB_ROWS, schema_like, synthetic_frame

TOLERANCE = 1e-9
FAMILIES = [candidate.name for candidate in training.CANDIDATES]
BY_NAME = {candidate.name: candidate for candidate in training.CANDIDATES}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # OpenMP threads waiting for each other on a busy machine cost the boosted trees' predict
    # calls milliseconds each; one thread changes no result (rows are scored independently).
    with training.limited_threads():
        yield


def fit(schema, name: str, frame: pd.DataFrame):
    candidate = BY_NAME[name]
    pipeline = training.build_pipeline(schema, candidate.estimator, scale=candidate.scale)
    return pipeline.fit(training.features_frame(frame, schema), training.labels(frame, schema))


def pipeline_proba(model, schema, rows: list[dict], positive_label=None) -> np.ndarray:
    """The Pipeline's answer for the rows, built as serving builds a frame."""
    return training.positive_proba(model, training.features_frame(pd.DataFrame(rows), schema), positive_label)


def pipeline_not_called(features):
    raise AssertionError("the Pipeline answered, not the fast path")


def one_by_one(predictor, rows: list[dict]) -> np.ndarray:
    return np.array([predictor.proba_one(row) for row in rows])


def assert_same_answers(predictor, model, schema, rows, positive_label=None):
    """One row at a time, as a batch of dicts and as a DataFrame: the Pipeline's probabilities,
    and from the fast path itself when the predictor is compiled."""
    expected = pipeline_proba(model, schema, rows, positive_label)
    if predictor.compiled:
        predictor._pipeline_proba = pipeline_not_called
    try:
        assert np.max(np.abs(one_by_one(predictor, rows) - expected)) <= TOLERANCE
        assert np.max(np.abs(predictor.proba_many(rows) - expected)) <= TOLERANCE
        assert np.max(np.abs(predictor.proba_frame(pd.DataFrame(rows)) - expected)) <= TOLERANCE
        # Columns as modelhub.inputs hands them over: all the rows at once, and one row alone.
        frame = training.features_frame(pd.DataFrame(rows), schema)
        columns = {name: frame[name].to_numpy() if frame[name].dtype == np.float64 else frame[name].where(frame[name].notna(), None).tolist()
                   for name in frame.columns}
        assert np.max(np.abs(predictor.proba_columns(columns) - expected)) <= TOLERANCE
        first = predictor.proba_columns({name: column[:1] for name, column in columns.items()})
        assert abs(first[0] - expected[0]) <= TOLERANCE
    finally:
        vars(predictor).pop("_pipeline_proba", None)


# --- the demo data -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def churn(tmp_path_factory) -> SimpleNamespace:
    """The demo rows the model hub's tests use, read as a CSV upload is: fitted on the rows the
    hash keeps, scored on the ones it holds out. (bench/fastpath.py checks the whole file.)"""
    csv = builders.DemoData(tmp_path_factory.mktemp("fastpath")).write("demo.csv", HUB_ROWS)
    learned = learn_schema(csv, target="churn", id_column="customer_id")
    schema = schema_like(learned.features, target=learned.target, positive_label=learned.positive_label)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False).replace({"": None})
    held_out = evaluation.holdout_mask(frame, "customer_id", schema.feature_names + ["churn"], settings.CL_HOLDOUT_PERCENT)
    rows = frame[held_out].drop(columns=["churn", "customer_id"]).to_dict("records")
    return SimpleNamespace(schema=schema, train=frame[~held_out], rows=rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_it_gives_the_pipelines_probability_on_every_demo_holdout_row(churn, family):
    model = fit(churn.schema, family, churn.train)
    predictor = fastpath.compile_model(model, churn.schema)
    assert predictor.compiled and predictor.fallback_reason is None
    assert len(churn.rows) > 200
    assert_same_answers(predictor, model, churn.schema, churn.rows)


# --- calibrated versions ---------------------------------------------------------------------------

# The first candidate of each estimator kind (the list itself changes as candidates are tuned).
KINDS = {kind.__name__: next(c.name for c in training.CANDIDATES if type(c.estimator) is kind)
         for kind in (LogisticRegression, HistGradientBoostingClassifier)}


def calibrated(model, schema, frame: pd.DataFrame, method: str):
    """The fitted pipeline with a calibrator of `method` fitted on its own probabilities for the
    rows (the fast path's answers must equal the Pipeline's, whatever the calibrator's fit)."""
    proba = training.positive_proba(model, training.features_frame(frame, schema))
    calibrator = calibration.FITTERS[method](proba, training.labels(frame, schema))
    return Pipeline(model.steps[:-1] + [(model.steps[-1][0], calibration.CalibratedModel(model.steps[-1][1], calibrator))])


@pytest.mark.parametrize("method", calibration.METHODS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_it_gives_a_calibrated_pipelines_probability_on_every_demo_holdout_row(churn, kind, method):
    raw = fit(churn.schema, KINDS[kind], churn.train)
    model = calibrated(raw, churn.schema, churn.train, method)
    predictor = fastpath.compile_model(model, churn.schema)
    assert predictor.compiled, predictor.fallback_reason
    assert_same_answers(predictor, model, churn.schema, churn.rows)
    # The calibrator is applied: the answers are not the raw model's.
    assert np.max(np.abs(predictor.proba_many(churn.rows) - pipeline_proba(raw, churn.schema, churn.rows))) > 1e-3
    # Artifacts are joblib files: the loaded copy answers the same and compiles again.
    loaded = joblib.load(io.BytesIO(artifacts.dump(model)))
    again = fastpath.compile_model(loaded, churn.schema)
    assert again.compiled and np.array_equal(again.proba_many(churn.rows), predictor.proba_many(churn.rows))
    assert np.array_equal(pipeline_proba(loaded, churn.schema, churn.rows), pipeline_proba(model, churn.schema, churn.rows))


def test_a_calibrator_it_does_not_know_sends_the_model_to_the_pipeline(churn):
    class Shifted(calibration.Calibrator):
        def apply(self, proba):
            return np.clip(np.asarray(proba) + 0.01, 0, 1)

    raw = fit(churn.schema, KINDS["LogisticRegression"], churn.train)
    model = Pipeline(raw.steps[:-1] + [("model", calibration.CalibratedModel(raw.steps[-1][1], Shifted("sigmoid")))])
    predictor = fastpath.compile_model(model, churn.schema)
    assert not predictor.compiled and "calibrator" in predictor.fallback_reason
    assert_same_answers(predictor, model, churn.schema, churn.rows[:10])


# --- synthetic frames: missing, unknown and infrequent values, one kind of column only ------------

FEATURES = {
    "x1": {"name": "x1", "kind": "numeric"},
    "x2": {"name": "x2", "kind": "numeric"},
    "colour": {"name": "colour", "kind": "categorical"},
    "band": {"name": "band", "kind": "categorical"},
    "plan": {"name": "plan", "kind": "categorical"},
    "member": {"name": "member", "kind": "categorical"},
}
SHAPES = {
    "mixed": ["x1", "x2", "colour", "plan"],
    "numeric only": ["x1", "x2"],
    "categorical only": ["colour", "band", "plan"],
}


def awkward_frame(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """synthetic_frame's rows with gaps, a banded x1 the label follows, and a plan column whose
    rare values the encoder groups as infrequent (fewer than min_frequency=5 rows)."""
    frame = synthetic_frame(n, seed=seed, signal="linear")
    frame["band"] = pd.cut(frame["x1"], [-np.inf, -0.5, 0.5, np.inf], labels=["low", "mid", "high"]).astype(object)
    rng = np.random.default_rng(seed)
    frame["plan"] = rng.choice(["basic", "plus", "pro"], n).astype(object)
    frame["member"] = rng.choice(["y", "n"], n).astype(object)
    frame.loc[[5, 17, 40], "plan"] = "legacy"
    frame.loc[[8, 90], "plan"] = "trial"
    frame = frame.astype(object)
    frame.loc[::7, "x1"] = None
    frame.loc[3::11, "colour"] = None
    frame.loc[4::13, "plan"] = None
    return frame


def awkward_rows(frame: pd.DataFrame, schema) -> list[dict]:
    """The held-out rows, then every kind of value a caller may send."""
    held_out = evaluation.holdout_mask(frame, "row_id", schema.feature_names + ["label"], 20)
    rows = frame[held_out][schema.feature_names].to_dict("records")
    odd = [
        {"x1": None, "x2": "0.75", "colour": "purple", "plan": "enterprise", "band": "extreme"},  # unknown categories
        {"x1": 3, "x2": "", "colour": None, "plan": "legacy", "band": None},  # an infrequent one, missing ones
        {"x1": "-1.25e0", "x2": float("nan"), "colour": "(missing)", "plan": "trial", "band": "(missing)"},
        {"x1": 0.5, "x2": -2, "colour": float("nan"), "plan": "", "band": "low"},
        {"colour": "red"},  # features left out altogether
    ]
    return rows + [{name: row[name] for name in schema.feature_names if name in row} for row in odd]


def few_rows(schema) -> list[dict]:
    """Enough of awkward_rows for a model that is scored by its Pipeline (15 ms a row)."""
    rows = awkward_rows(awkward_frame(), schema)
    return rows[:5] + rows[-5:]


@pytest.fixture(scope="module")
def synthetic() -> dict:
    return {}


def fitted_shape(synthetic: dict, shape: str, family: str):
    if (shape, family) not in synthetic:
        schema = schema_like([FEATURES[name] for name in SHAPES[shape]], target="label", positive_label="yes")
        frame = awkward_frame()
        model = fit(schema, family, frame)
        synthetic[shape, family] = SimpleNamespace(schema=schema, model=model, rows=awkward_rows(frame, schema),
                                                   predictor=fastpath.compile_model(model, schema))
    return synthetic[shape, family]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_it_gives_the_pipelines_probability_with_missing_unknown_and_infrequent_values(synthetic, shape, family):
    case = fitted_shape(synthetic, shape, family)
    assert case.predictor.compiled, case.predictor.fallback_reason
    assert_same_answers(case.predictor, case.model, case.schema, case.rows)


def test_the_synthetic_frames_hold_infrequent_categories_and_columns_without_any(synthetic):
    # So that the test above meets both ways an unknown category is encoded: as the infrequent
    # column where there is one (plan), as all zeros where there is none (colour).
    case = fitted_shape(synthetic, "mixed", FAMILIES[0])
    encoder = case.model.named_steps["prepare"].named_transformers_["categorical"][-1]
    infrequent = dict(zip(["colour", "plan"], encoder.infrequent_categories_))
    assert set(infrequent["plan"]) == {"legacy", "trial"} and infrequent["colour"] is None


@pytest.mark.parametrize("family", [FAMILIES[0], FAMILIES[2]])
def test_values_it_cannot_vouch_for_go_to_the_pipeline_and_get_its_answer(synthetic, family):
    case = fitted_shape(synthetic, "mixed", family)
    predictor = case.predictor
    rows = [
        {"x1": " 12", "x2": "1_000", "colour": "red", "plan": "basic"},  # pandas and float() read these differently
        {"x1": Decimal("0.5"), "x2": True, "colour": 7, "plan": pd.NA},
        {"x1": pd.NA, "x2": 2**70, "colour": 1.5, "plan": "pro"},
        {"x1": np.float32(0.5), "x2": np.int64(-2), "colour": np.str_("red"), "plan": np.float64("nan")},
    ]
    for row in rows:
        assert abs(predictor.proba_one(row) - pipeline_proba(case.model, case.schema, [row])[0]) <= TOLERANCE
    batch = case.rows + rows
    assert np.max(np.abs(predictor.proba_many(batch) - pipeline_proba(case.model, case.schema, batch))) <= TOLERANCE
    assert predictor.compiled


def test_it_raises_as_the_pipeline_does_for_an_infinite_number(synthetic):
    case = fitted_shape(synthetic, "mixed", FAMILIES[0])
    predictor = case.predictor
    row = {"x1": float("inf"), "x2": 1.0, "colour": "red", "plan": "basic"}
    with pytest.raises(ValueError, match="infinity"):
        pipeline_proba(case.model, case.schema, [row])
    with pytest.raises(ValueError, match="infinity"):
        predictor.proba_one(row)
    with pytest.raises(ValueError, match="infinity"):
        predictor.proba_many([row, {"x1": 1.0}])


# --- other pipelines: column order and drops, encoder settings, imported models ---------------------

MIXED = schema_like([FEATURES[name] for name in SHAPES["mixed"]], target="label", positive_label="yes")


def fitted(model, schema=MIXED, frame=None, target=None):
    frame = awkward_frame() if frame is None else frame
    return model.fit(training.features_frame(frame, schema), training.labels(frame, schema) if target is None else target)


@pytest.mark.filterwarnings("ignore:Found unknown categories")  # drop= with unknown categories warns
@pytest.mark.parametrize("drop", [None, "first", "if_binary"])
def test_it_follows_the_column_order_the_dropped_columns_and_the_encoders_drop_setting(drop):
    # Categories first, colour dropped by name, x2 left to remainder="drop": the output is in
    # whatever order, and of whatever columns, the ColumnTransformer was given.
    schema = schema_like([FEATURES[name] for name in ("x1", "x2", "colour", "plan", "member")], target="label", positive_label="yes")
    encoder = OneHotEncoder(drop=drop, handle_unknown="infrequent_if_exist", min_frequency=5, sparse_output=False)
    prepare = ColumnTransformer([
        ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="(missing)"), encoder), ["plan", "member"]),
        ("gone", "drop", ["colour"]),
        ("numeric", make_pipeline(StandardScaler(), SimpleImputer(strategy="mean")), ["x1"]),
    ])
    model = fitted(Pipeline([("prepare", prepare), ("model", LogisticRegression())]), schema)
    predictor = fastpath.compile_model(model, schema)
    assert predictor.compiled, predictor.fallback_reason
    rows = awkward_rows(awkward_frame(), schema) + [{"x1": 1.0, "member": "maybe"}, {"member": None, "plan": "pro"}]
    assert_same_answers(predictor, model, schema, rows)


def test_an_encoder_that_refuses_unknown_categories_still_refuses_them():
    categorical = make_pipeline(SimpleImputer(strategy="constant", fill_value="(missing)"), OneHotEncoder(sparse_output=False))
    prepare = ColumnTransformer([("numeric", SimpleImputer(strategy="median"), ["x1", "x2"]), ("categorical", categorical, ["colour"])])
    model = fitted(Pipeline([("prepare", prepare), ("model", LogisticRegression())]))
    predictor = fastpath.compile_model(model, MIXED)
    assert predictor.compiled, predictor.fallback_reason
    with pytest.raises(ValueError, match="unknown categor"):
        predictor.proba_one({"x1": 0.5, "x2": 1.0, "colour": "purple"})
    known = [{"x1": 0.5, "x2": None, "colour": "blue"}, {"x1": None, "x2": -1, "colour": None}]
    assert_same_answers(predictor, model, MIXED, known)


@pytest.mark.parametrize("positive, column", [("yes", 1), ("no", 0)])
def test_it_takes_the_positive_class_by_label_for_an_imported_pipeline(positive, column):
    frame = awkward_frame()
    schema = schema_like(MIXED.features, target="label", positive_label=positive)
    model = fitted(training.build_pipeline(schema, LogisticRegression(), scale=True), schema, frame, frame["label"].to_numpy(dtype=str))
    assert list(model.classes_) == ["no", "yes"]
    predictor = fastpath.compile_model(model, schema, positive_label=positive)
    assert predictor.compiled and predictor._program.positive_column == column
    assert_same_answers(predictor, model, schema, awkward_rows(frame, schema), positive_label=positive)


def test_it_falls_back_to_the_pipeline_for_an_imported_model_that_is_not_a_pipeline():
    frame = awkward_frame()
    schema = schema_like([FEATURES["x2"]], target="label", positive_label="yes")
    model = fitted(LogisticRegression(), schema, frame, frame["label"].to_numpy(dtype=str))
    predictor = fastpath.compile_model(model, schema, positive_label="yes")
    assert not predictor.compiled and "not a scikit-learn Pipeline" in predictor.fallback_reason
    rows = [{"x2": 0.3}, {"x2": "-1.5"}, {"x2": 2}, {"x2": np.float32(0.5)}, {"x2": "1e-1", "x1": None}]
    assert_same_answers(predictor, model, schema, rows, positive_label="yes")


@pytest.mark.parametrize("unknown", ["transformer", "estimator"])
def test_it_falls_back_to_the_pipeline_for_a_step_it_does_not_know(unknown):
    numeric = make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler() if unknown == "transformer" else StandardScaler())
    prepare = ColumnTransformer([("numeric", numeric, ["x1", "x2"])])
    estimator = LogisticRegression() if unknown == "transformer" else DecisionTreeClassifier(max_depth=4, random_state=0)
    model = fitted(Pipeline([("prepare", prepare), ("model", estimator)]))
    predictor = fastpath.compile_model(model, MIXED)
    assert not predictor.compiled
    assert ("MinMaxScaler" if unknown == "transformer" else "DecisionTreeClassifier") in predictor.fallback_reason
    assert_same_answers(predictor, model, MIXED, few_rows(MIXED))


def test_it_turns_itself_off_when_it_disagrees_with_the_pipeline_on_its_probe_rows(monkeypatch, synthetic):
    case = fitted_shape(synthetic, "mixed", FAMILIES[0])
    # A compiler bug: scaling that forgets to divide.
    monkeypatch.setattr(fastpath._Standardise, "__call__", lambda self, x: x - self.mean)
    predictor = fastpath.compile_model(case.model, case.schema)
    assert not predictor.compiled and predictor.fallback_reason.startswith("self-check")
    assert_same_answers(predictor, case.model, case.schema, few_rows(case.schema))


def test_an_empty_batch_gives_no_probabilities(synthetic):
    case = fitted_shape(synthetic, "mixed", FAMILIES[0])
    assert case.predictor.proba_many([]).shape == (0,)
