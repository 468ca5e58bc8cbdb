"""Model files are verified before loading: a tampered or missing one is refused, the live model keeps serving."""
import pandas as pd
import pytest

from modelhub import artifacts, serving, services
from modelhub.models import Deployment, ModelVersion

from .helpers import HUB_ROWS, deployed_copy, served, tamper


def test_it_refuses_to_load_a_tampered_artifact_naming_it(hub, cl_home):
    tamper(cl_home, hub)
    with pytest.raises(artifacts.ArtifactError, match=r"model_v1_0\.joblib has been altered .*refusing to load it"):
        artifacts.load(hub.artifact, hub.sha256)


def test_it_refuses_a_missing_artifact_naming_it(hub, cl_home):
    (cl_home / "models/versions/model_v1_0.joblib").unlink()
    with pytest.raises(artifacts.ArtifactError, match=r"model_v1_0\.joblib is missing"):
        artifacts.load(hub.artifact, hub.sha256)


def test_a_verified_file_that_does_not_unpickle_is_refused_cleanly(cl_home):
    data = b"not a joblib file"
    sha = artifacts.write(data, "model_v9_9.joblib")
    with pytest.raises(artifacts.ArtifactError, match=r"model_v9_9\.joblib could not be loaded"):
        artifacts.load("model_v9_9.joblib", sha)


def test_a_rollback_to_a_tampered_version_is_refused_and_the_live_model_keeps_serving(hub, cl_home, demo):
    v11 = deployed_copy()
    rows = demo.frame.iloc[HUB_ROWS.stop:HUB_ROWS.stop + 20].replace({"": None})
    _, before = served(rows)
    tamper(cl_home, hub)

    with pytest.raises(services.DeploymentError, match=r"model_v1_0\.joblib has been altered"):
        services.activate_version(version=None, user=None, reason="bad week")
    with pytest.raises(services.DeploymentError, match=r"model_v1_0\.joblib has been altered"):
        services.activate_version(version=ModelVersion.objects.get(major=1, minor=0), user=None, reason="bad week")

    assert ModelVersion.active().pk == v11.pk
    assert ModelVersion.objects.get(major=1, minor=0).status == ModelVersion.Status.RETIRED
    assert Deployment.objects.count() == 2
    serving.forget()  # as a freshly started web process
    version, after = served(rows)
    assert version.version == "1.1"
    pd.testing.assert_frame_equal(after, before)
    assert set(after.columns) == {"customer_id", "probability", "prediction"}


def test_serving_keeps_its_loaded_model_when_the_active_file_is_altered_underneath(hub, cl_home, demo):
    rows = demo.frame.iloc[:5].replace({"": None})
    version, before = served(rows)
    tamper(cl_home, hub)
    _, after = served(rows)  # no reload: the active version did not change
    pd.testing.assert_frame_equal(after, before)
    serving.forget()
    with pytest.raises(artifacts.ArtifactError, match="altered"):  # and a new process will not load it
        served(rows)


def test_serving_reloads_when_the_active_version_changes(hub, demo):
    rows = demo.frame.iloc[:5].replace({"": None})
    assert served(rows)[0].version == "1.0"
    deployed_copy()
    assert served(rows)[0].version == "1.1"
    services.activate_version(version=None, user=None, reason="back")
    assert served(rows)[0].version == "1.0"


def test_each_version_file_is_written_once_under_its_own_name(hub, cl_home):
    v11 = deployed_copy()
    files = sorted(p.name for p in (cl_home / "models/versions").iterdir())
    assert files == ["model_v1_0.joblib", "model_v1_1.joblib"]
    for version in (ModelVersion.objects.get(pk=hub.pk), v11):
        assert artifacts.read_verified(version.artifact, version.sha256)
        assert (cl_home / "models/metadata" / f"{version.file_stem}.json").exists()
