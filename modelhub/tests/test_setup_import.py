"""`init_cl_system --model`: a fitted pipeline becomes v1.0; anything else is refused and leaves nothing behind."""
import json

import joblib
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from ingestion.models import DatasetSchema, DataBatch, MasterPartition
from modelhub import training
from modelhub.models import Deployment, ModelVersion
from modelhub.setup import SetupError, initialise

from .commands import run_command
from .helpers import HUB_ROWS, schema_like, served


def test_an_imported_pipeline_becomes_the_active_v1_0(hub, cl_home, demo):
    assert (hub.version, hub.status, hub.imported) == ("1.0", ModelVersion.Status.ACTIVE, True)
    assert hub.estimator == "imported Pipeline"
    assert hub.holdout_rows > 150 and hub.training_rows + hub.holdout_rows == 1200
    assert 0.7 < hub.metrics["accuracy"] < 1 and hub.metrics["auc"] > 0.75
    assert set(hub.metrics["feature_importance"]) == {f["name"] for f in hub.schema.features}
    deployment = Deployment.objects.get()
    assert (deployment.kind, deployment.from_version, deployment.reason) == ("initial", None, "imported from churn_model.joblib")
    metadata = json.loads((cl_home / "models/active/metadata.json").read_text())
    assert metadata["version"] == "1.0" and metadata["imported"] is True and metadata["sha256"] == hub.sha256
    # Saved again by the app, so it loads only bytes it wrote and verified.
    assert (cl_home / "models/active/model.joblib").read_bytes() == (cl_home / "models/versions/model_v1_0.joblib").read_bytes()
    version, predictions = served(demo.frame.iloc[2000:2010].replace({"": None}))
    assert version.version == "1.0" and set(predictions["prediction"]) <= {"Yes", "No"}


def test_a_model_predicting_the_targets_own_labels_uses_the_positive_one(cl_home, demo, fresh_db, demo_fit, tmp_path):
    # Fitted on "No"/"Yes" rather than 0/1: its probability columns must be matched by label.
    model = training.build_pipeline(demo_fit.schema, LogisticRegression(max_iter=2000), scale=True).fit(demo_fit.X, demo_fit.labels)
    joblib.dump(model, tmp_path / "labels.joblib")
    version = initialise(data=demo.write("initial.csv", HUB_ROWS), target="churn", id_column="customer_id",
                         model_file=tmp_path / "labels.joblib")
    assert version.metrics["accuracy"] > 0.7 and version.metrics["auc"] > 0.75  # the wrong column would score ~0.25


def regressor(fit):
    return training.build_pipeline(fit.schema, LinearRegression(), scale=True).fit(fit.X, fit.y)


def unfitted(fit):
    return training.build_pipeline(fit.schema, LogisticRegression(), scale=True)


def other_columns(fit):
    renamed = [{**f, "name": f"old_{f['name']}"} for f in fit.schema.features]
    schema = schema_like(renamed, target="churn", positive_label="Yes")
    X = fit.X.rename(columns=lambda name: f"old_{name}")
    return training.build_pipeline(schema, LogisticRegression(max_iter=2000), scale=True).fit(X, fit.y)


def not_an_estimator(fit):
    return {"coefficients": [0.1, 0.2], "note": "a dict saved with joblib"}


def other_classes(fit):
    labels = ["leave" if v else "stay" for v in fit.y]
    return training.build_pipeline(fit.schema, LogisticRegression(max_iter=2000), scale=True).fit(fit.X, labels)


@pytest.mark.parametrize("make, message", [
    (regressor, "holds a Pipeline, which is not a scikit-learn classifier with predict_proba"),
    (unfitted, "is not fitted"),
    (other_columns, "cannot predict on this schema's columns"),
    (other_classes, r"predicts the classes \['leave', 'stay'\]; it must predict exactly the target's labels"),
    (not_an_estimator, "holds a dict, which is not a scikit-learn classifier with predict_proba"),
    (None, "could not be loaded as a joblib/pickle file"),
], ids=["regressor", "unfitted", "other-columns", "other-classes", "not-an-estimator", "not-joblib"])
def test_an_unusable_model_is_refused_and_leaves_nothing_behind(make, message, cl_home, demo, fresh_db, demo_fit, tmp_path):
    path = tmp_path / "model.joblib"
    if make is None:
        path.write_text("not a model")
    else:
        joblib.dump(make(demo_fit), path)
    data = demo.write("initial.csv", HUB_ROWS)
    with pytest.raises(SetupError, match=message):
        initialise(data=data, target="churn", id_column="customer_id", model_file=path)

    for model in (DatasetSchema, DataBatch, MasterPartition, ModelVersion, Deployment):
        assert not model.objects.exists(), model.__name__
    leftovers = [p.relative_to(cl_home).as_posix() for p in (cl_home / "data").rglob("*") if p.is_file()]
    leftovers += [p.relative_to(cl_home).as_posix() for p in (cl_home / "models").rglob("*") if p.is_file()]
    assert leftovers == []


def test_after_a_refused_import_the_set_up_can_simply_be_run_again(cl_home, demo, fresh_db, demo_fit, demo_model_file, tmp_path):
    joblib.dump(unfitted(demo_fit), tmp_path / "unfitted.joblib")
    data = demo.write("initial.csv", HUB_ROWS)
    code, out, err = run_command("init_cl_system", "--data", str(data), "--target", "churn", "--id-column", "customer_id",
                                 "--model", str(tmp_path / "unfitted.joblib"))
    assert code == 1 and "a pickle file runs any code it holds, so this trusts the file" in out
    assert "is not fitted" in err

    code, out, err = run_command("init_cl_system", "--data", str(data), "--target", "churn", "--id-column", "customer_id",
                                 "--model", str(demo_model_file))
    assert code == 0, err
    assert "Initialised: model v1.0 (imported Pipeline) is active" in out
    assert "Validation policy, from the class balance: judged by ROC AUC ( at least 0.600," not in out  # no stray space
    assert "Validation policy, from the class balance: judged by ROC AUC (at least 0.600, a real drop" in out
    assert ModelVersion.active().version == "1.0" and DataBatch.objects.get().status == DataBatch.Status.MERGED

    code, _, err = run_command("init_cl_system", "--data", str(data), "--target", "churn", "--model", str(demo_model_file))
    assert code == 1 and "already initialised" in err


def test_a_model_fitted_on_every_initial_row_lets_the_first_good_batch_deploy_and_still_holds_flipped_labels(
        cl_home, demo, fresh_db, demo_fit, tmp_path):
    """A team's first step is "import the model we have", usually fitted on all the data it has:
    its holdout scores are in-sample, so the first comparison uses only rows of later batches."""
    import pandas as pd

    from ingestion.services import ingest_path
    from modelhub.models import TrainingRun
    from modelhub.retraining import retrain_now
    from testing.builders import DemoData

    frame = DemoData(tmp_path / "all").frame.iloc[HUB_ROWS].replace({"": None})
    schema = demo_fit.schema
    fitted_on_all = training.build_pipeline(schema, HistGradientBoostingClassifier(max_iter=300, max_depth=None, random_state=0),
                                            scale=False).fit(training.features_frame(frame, schema), training.labels(frame, schema))
    joblib.dump(fitted_on_all, tmp_path / "everything.joblib")
    v10 = initialise(data=demo.write("initial.csv", HUB_ROWS), target="churn", id_column="customer_id",
                     model_file=tmp_path / "everything.joblib")
    assert v10.metrics["accuracy"] > 0.9 and v10.metrics["holdout_may_be_in_sample"] is True  # in-sample, not evidence

    good = ingest_path(demo.write("good.csv", slice(HUB_ROWS.stop, HUB_ROWS.stop + 1500)))
    run = retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, run.reasons
    assert "batches newer than the imported model" in run.candidate.validation["compared_on"]
    good.refresh_from_db()
    assert good.status == DataBatch.Status.MERGED

    flipped = ingest_path(demo.flipped("flipped.csv", slice(HUB_ROWS.stop + 1500, HUB_ROWS.stop + 2000)))
    run = retrain_now()
    assert run.status == TrainingRun.Status.REJECTED and any("suspected label problems" in r for r in run.reasons), run.reasons
    flipped.refresh_from_db()
    assert flipped.status == DataBatch.Status.HELD
    assert pd.notna(run.candidate.metrics["accuracy"])
