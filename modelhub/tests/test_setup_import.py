"""`init_cl_system --model`: a fitted pipeline becomes v1.0; anything else is refused and leaves nothing behind."""
import json

import joblib
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from ingestion.models import DatasetSchema, DataBatch, MasterPartition
from modelhub import serving, training
from modelhub.models import Deployment, ModelVersion
from modelhub.setup import SetupError, initialise

from .commands import run_command
from .helpers import HUB_ROWS, schema_like


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
    version, predictions = serving.predict(demo.frame.iloc[2000:2010].replace({"": None}))
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


def other_classes(fit):
    labels = ["leave" if v else "stay" for v in fit.y]
    return training.build_pipeline(fit.schema, LogisticRegression(max_iter=2000), scale=True).fit(fit.X, labels)


@pytest.mark.parametrize("make, message", [
    (regressor, "holds a Pipeline, which is not a scikit-learn classifier with predict_proba"),
    (unfitted, "is not fitted"),
    (other_columns, "cannot predict on this schema's columns"),
    (other_classes, r"predicts the classes \['leave', 'stay'\]; it must predict exactly the target's labels"),
    (None, "could not be loaded as a joblib/pickle file"),
], ids=["regressor", "unfitted", "other-columns", "other-classes", "not-joblib"])
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
    assert code == 1 and out == ""
    assert "is not fitted" in err

    code, out, err = run_command("init_cl_system", "--data", str(data), "--target", "churn", "--id-column", "customer_id",
                                 "--model", str(demo_model_file))
    assert code == 0, err
    assert "Initialised: model v1.0 (imported Pipeline) is active" in out
    assert ModelVersion.active().version == "1.0" and DataBatch.objects.get().status == DataBatch.Status.MERGED

    code, _, err = run_command("init_cl_system", "--data", str(data), "--target", "churn", "--model", str(demo_model_file))
    assert code == 1 and "already initialised" in err
