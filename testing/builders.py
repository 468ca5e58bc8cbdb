"""Builders for tests: users per role, CSV files cut from the demo data, an initialised system."""
from pathlib import Path

import pandas as pd
from django.contrib.auth import get_user_model

from modelhub import roles

DEMO = Path(__file__).resolve().parent.parent / "demo" / "telco_churn.csv"
PASSWORD = "a-test-password"


def make_users() -> dict:
    """One user per role, named after it: viewer, analyst, engineer, admin, and nobody (no role)."""
    roles.ensure_roles()
    User = get_user_model()
    made = {}
    for username, role in (("viewer", roles.VIEWER), ("analyst", roles.ANALYST), ("engineer", roles.ML_ENGINEER), ("admin", "Admin")):
        made[username] = _user(User, username)
        roles.assign_role(made[username], role)
    made["nobody"] = _user(User, "nobody")
    return made


def _user(User, username: str):
    user = User.objects.filter(username=username).first()
    return user or User.objects.create_user(username=username, password=PASSWORD)


def client_for(user):
    """A test client logged in as `user` (no login page: for tests about what the user may do)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def login_page(client, username: str, password: str = PASSWORD, url: str = "/login/"):
    """A login through the page itself, as a person does (django-axes watches it); the response."""
    return client.post(url, {"username": username, "password": password, "next": "/"})


class DemoData:
    """Slices of the demo dataset written as CSV files in a folder of the test's own."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.frame = pd.read_csv(DEMO, dtype=str, keep_default_na=False)

    def write(self, name: str, rows: slice | None = None, frame: pd.DataFrame | None = None, **kwargs) -> Path:
        data = frame if frame is not None else self.frame.iloc[rows]
        path = self.folder / name
        data.to_csv(path, index=False, **kwargs)
        return path

    def flipped(self, name: str, rows: slice) -> Path:
        data = self.frame.iloc[rows].copy()
        data["churn"] = data["churn"].map({"Yes": "No", "No": "Yes"})
        return self.write(name, frame=data)


def initialise(demo: DemoData, rows: slice = slice(0, 2000)):
    from modelhub.setup import initialise as init

    return init(data=demo.write("initial.csv", rows), target="churn", id_column="customer_id")


def grow_history(extra: int) -> int:
    """`extra` more retired versions (each with its run and deployment, sharing the active
    version's artifact) and refused batches, cheaply; returns how many versions there are."""
    from datetime import timedelta

    from django.utils import timezone

    from ingestion.models import DataBatch
    from modelhub.models import Deployment, ModelVersion, TrainingRun

    active = ModelVersion.active()
    start = ModelVersion.objects.count()
    now = timezone.now()
    runs = TrainingRun.objects.bulk_create([
        TrainingRun(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.DEPLOYED, started_at=now, finished_at=now)
        for _ in range(extra)])
    versions = ModelVersion.objects.bulk_create([
        ModelVersion(major=1, minor=start + i, status=ModelVersion.Status.RETIRED, schema=active.schema, run=run,
                     artifact=active.artifact, sha256=active.sha256, trained_at=now - timedelta(days=extra - i),
                     deployed_at=now - timedelta(days=extra - i), estimator=active.estimator, metrics=active.metrics,
                     validation=active.validation, drift=active.drift, training_rows=active.training_rows)
        for i, run in enumerate(runs)])
    Deployment.objects.bulk_create([
        Deployment(created_at=version.deployed_at, kind=Deployment.Kind.DEPLOY, to_version=version, from_version=active, run=version.run)
        for version in versions])
    DataBatch.objects.bulk_create([
        DataBatch(original_name=f"b{i}.csv", sha256=f"history-{start}-{i}", size_bytes=10, rows=5,
                  status=DataBatch.Status.REJECTED, report={"summary": "refused"}) for i in range(extra)])
    return ModelVersion.objects.count()
