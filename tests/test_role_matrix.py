"""Coverage that cannot rot: every route the URL resolver knows has an access decision for
every role, and each decision is checked. A new page, admin model or admin URL without a row
here fails this test.

Outcomes: "login" (a redirect to a login page), 403, 405, or "ok" (200, or a redirect that is
not to a login page). The roles: anonymous, nobody (logged in, no role), viewer, analyst,
engineer (ML Engineer), admin (superuser).
"""
import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task

from api.services import create_token
from audit.models import AuditEvent
from clsite import home
from ingestion.models import DatasetSchema, DataBatch, MasterPartition
from modelhub.models import Deployment, ModelVersion, ScoringJob, TrainingRun, ValidationPolicy
from ops.models import Alert

ROLES = ["anonymous", "nobody", "viewer", "analyst", "engineer", "admin"]
LOGIN, OK = "login", "ok"


def everyone(outcome):
    return dict.fromkeys(ROLES, outcome)


def post_only():
    """A GET to a POST-only route: the login page for strangers, 405 for everyone else."""
    return {role: LOGIN if role == "anonymous" else 405 for role in ROLES}


def from_role(first: str, *, below=403):
    """ok from this role up; anonymous to the login page; the roles below get `below`."""
    ranks = ROLES.index(first)
    return {role: LOGIN if role == "anonymous" else OK if i >= ranks else below for i, role in enumerate(ROLES)}


# The site's own routes: (method, route) -> outcome per role. POST-only routes are tried with
# GET too (405 for anyone who gets that far).
SITE = {
    ("GET", "login/"): everyone(OK),
    ("POST", "logout/"): everyone(LOGIN),  # logged out, and sent to the login page
    ("GET", "logout/"): post_only(),
    ("GET", ""): from_role("viewer"),
    ("GET", "data/"): from_role("viewer"),
    ("GET", "data/upload/"): from_role("analyst"),
    ("GET", "data/template.csv"): from_role("viewer"),
    ("GET", "data/<int:pk>/"): from_role("viewer"),
    ("POST", "data/<int:pk>/release/"): from_role("engineer"),
    ("GET", "data/<int:pk>/release/"): post_only(),
    ("POST", "data/<int:pk>/discard/"): from_role("engineer"),
    ("GET", "data/<int:pk>/discard/"): post_only(),
    ("GET", "models/"): from_role("viewer"),
    ("GET", "models/compare/"): from_role("viewer"),
    ("GET", "models/<str:version>/"): from_role("viewer"),
    ("POST", "models/<str:version>/activate/"): from_role("engineer"),
    ("GET", "models/<str:version>/activate/"): post_only(),
    ("GET", "runs/"): from_role("viewer"),
    ("POST", "runs/start/"): from_role("engineer"),
    ("GET", "runs/start/"): post_only(),
    ("GET", "runs/<int:pk>/"): from_role("viewer"),
    ("GET", "deployments/"): from_role("viewer"),
    ("GET", "predict/"): from_role("viewer"),
    ("POST", "predict/"): from_role("viewer"),
    ("POST", "predict/batch/"): from_role("analyst"),
    ("GET", "predict/batch/"): post_only(),
    # A scoring job (the analyst's own) and its result: no one else's, but an admin sees all.
    ("GET", "predict/jobs/<int:pk>/"): {**from_role("analyst"), "engineer": 404},
    ("GET", "predict/jobs/<int:pk>/result.csv"): {**from_role("analyst"), "engineer": 404},
    ("GET", "status/"): from_role("viewer"),
    # An empty schedule form, past the permission: the form's own 400 with what to fix.
    ("POST", "status/schedule/"): {**from_role("engineer"), "engineer": 400, "admin": 400},
    ("GET", "status/schedule/"): post_only(),
    ("GET", "healthz"): everyone(OK),
    # The front's question (hidden from outside by nginx): asked with no upload, no one may send one.
    ("GET", "__cl/upload-gate"): {role: 401 if role == "anonymous" else 403 for role in ROLES},
}

# The API: a token per role (anonymous: none). "ok" here is any answer past the token and the
# permission (a 400 for an empty body included): the decision is who gets that far.
def api_from(first: str):
    return {role: 401 if role == "anonymous" else OK if ROLES.index(role) >= ROLES.index(first) else 403 for role in ROLES}


API = {
    ("GET", "api/v1/openapi.json"): api_from("nobody"),
    ("GET", "api/v1/docs"): {**from_role("nobody"), "nobody": OK},  # for people logged in to the site
    ("GET", "api/v1/"): everyone(404),  # ninja's root: nothing there
    ("POST", "api/v1/predict"): api_from("viewer"),
    ("GET", "api/v1/models"): api_from("viewer"),
    ("GET", "api/v1/models/<version>"): api_from("viewer"),
    ("POST", "api/v1/models/<version>/activate"): api_from("engineer"),
    ("POST", "api/v1/batches"): api_from("analyst"),
    ("POST", "api/v1/runs"): api_from("engineer"),
    ("GET", "api/v1/runs/<run_id>"): api_from("viewer"),
    ("POST", "api/v1/scorings"): api_from("analyst"),
    ("GET", "api/v1/scorings/<job_id>"): {**api_from("analyst"), "engineer": 404},  # the analyst's own job
    ("GET", "api/v1/scorings/<job_id>/result"): {**api_from("analyst"), "engineer": 404},
}

# The admin: nobody without a staff role gets past its login page. For each registered model:
# whether an ML engineer may see it, and whether an admin may add and delete there.
STAFF_ONLY = {"anonymous": LOGIN, "nobody": LOGIN, "viewer": LOGIN, "analyst": LOGIN}
HISTORY = "history"  # written by services only: nobody adds or deletes it in the admin
ADMIN_MODELS = {
    # model: (ML engineer sees it, admin adds, admin deletes)
    "modelhub/modelversion": (True, False, False),
    "modelhub/trainingrun": (True, False, False),
    "modelhub/deployment": (True, False, False),
    "modelhub/validationpolicy": (True, False, False),  # one row: edited, never added or deleted
    "ingestion/databatch": (True, False, False),
    "ingestion/datasetschema": (True, False, False),
    "ingestion/masterpartition": (True, False, False),
    "audit/auditevent": (True, False, False),
    "ops/alert": (True, False, False),
    "auth/user": (False, True, True),
    "axes/accessattempt": (False, False, True),  # deleting the attempts unlocks
    "axes/accesslog": (False, False, True),
    "axes/accessfailurelog": (False, False, True),
    "django_q/schedule": (False, True, True),
    "django_q/success": (False, False, True),
    "django_q/failure": (False, False, True),
    "django_q/ormq": (False, False, True),
    "api/apitoken": (False, True, False),  # revoked, never deleted: the audit log names them
}
ADMIN_PAGES = {
    "admin/": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/login/": everyone(OK),
    # POST only; the admin sends a non-staff user elsewhere first.
    "admin/logout/": {"anonymous": LOGIN, "nobody": OK, "viewer": OK, "analyst": OK, "engineer": 405, "admin": 405},
    "admin/password_change/": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/password_change/done/": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/autocomplete/": {**STAFF_ONLY, "engineer": 404, "admin": 404},  # no autocomplete fields: nothing to find
    "admin/jsi18n/": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/r/<path:content_type_id>/<path:object_id>/": {**STAFF_ONLY, "engineer": 404, "admin": 404},  # no model has a site URL
    "admin/<app list>": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/(?P<url>.*)$": {**STAFF_ONLY, "engineer": 404, "admin": 404},  # the catch-all: the admin's own 404
    "admin/modelhub/modelversion/<int:pk>/rollback/": {**STAFF_ONLY, "engineer": OK, "admin": OK},
    "admin/auth/user/<id>/password/": {**STAFF_ONLY, "engineer": 403, "admin": OK},
}


def admin_model_decision(model: str, kind: str) -> dict:
    engineer_sees, admin_adds, admin_deletes = ADMIN_MODELS[model]
    if kind == "object":  # /admin/<model>/<id>/ only redirects to the change page, for anyone staff
        return {**STAFF_ONLY, "engineer": OK, "admin": OK}
    if kind in ("changelist", "change", "history"):
        return {**STAFF_ONLY, "engineer": OK if engineer_sees else 403, "admin": OK}
    if kind == "add":
        return {**STAFF_ONLY, "engineer": 403, "admin": OK if admin_adds else 403}
    if kind == "delete":
        return {**STAFF_ONLY, "engineer": 403, "admin": OK if admin_deletes else 403}
    raise KeyError(f"{model} {kind}")


def _app_list(route: str) -> str:
    """The admin's one app-list route, whose pattern names the apps in registration order."""
    return "admin/<app list>" if route.startswith("admin/^(?P<app_label>") else route


def routes():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)
    return list(walk(get_resolver().url_patterns))


def decision(route: str) -> list[tuple[str, dict]]:
    """(method, outcomes) for a route; KeyError when the matrix has no row for it."""
    route = _app_list(route)
    if route.startswith("api/"):
        rows = [(method, outcome) for (method, r), outcome in API.items() if r == route]
        if not rows:
            raise KeyError(route)
        return rows
    if not route.startswith("admin/"):
        rows = [(method, outcome) for (method, r), outcome in SITE.items() if r == route]
        if not rows:
            raise KeyError(route)
        return rows
    if route in ADMIN_PAGES:
        return [("GET", ADMIN_PAGES[route])]
    parts = route[len("admin/"):].split("/")
    model = "/".join(parts[:2])
    if model not in ADMIN_MODELS:
        raise KeyError(route)
    rest = "/".join(parts[2:])
    kind = {"": "changelist", "add/": "add", "<path:object_id>/history/": "history", "<path:object_id>/delete/": "delete",
            "<path:object_id>/change/": "change", "<path:object_id>/": "object"}.get(rest)
    if kind is None:
        raise KeyError(route)
    return [("GET", admin_model_decision(model, kind))]


def test_every_route_has_a_decision_for_every_role():
    missing = []
    for route in routes():
        try:
            for _, outcomes in decision(route):
                assert set(outcomes) == set(ROLES), route
        except KeyError:
            missing.append(route)
    assert not missing, f"routes with no access decision in the role matrix: {missing}"


@pytest.fixture
def objects(ready, users):
    """One object of every kind the routes name."""
    now = timezone.now()
    task = Task.objects.create(id="t1", name="t1", func="x", started=now, stopped=now, success=True)
    failed = Task.objects.create(id="t2", name="t2", func="x", started=now, stopped=now, success=False)
    batch = DataBatch.objects.filter(status=DataBatch.Status.MERGED).first()
    return {
        "modelhub/modelversion": ModelVersion.objects.first().pk, "modelhub/trainingrun": TrainingRun.objects.first().pk,
        "modelhub/deployment": Deployment.objects.first().pk, "modelhub/validationpolicy": ValidationPolicy.get().pk,
        "ingestion/databatch": batch.pk, "ingestion/datasetschema": DatasetSchema.current().pk,
        "ingestion/masterpartition": MasterPartition.objects.first().pk,
        "audit/auditevent": AuditEvent.objects.create(action="x").pk,
        "ops/alert": Alert.objects.create(key="k", subject="s", body="b", opened_at=now).pk,
        "auth/user": users["viewer"].pk,
        "axes/accessattempt": AccessAttempt.objects.create(username="u", ip_address="10.1.1.1", failures_since_start=1,
                                                           get_data="", post_data="").pk,
        "axes/accesslog": AccessLog.objects.create(username="u", ip_address="10.1.1.1").pk,
        "axes/accessfailurelog": AccessFailureLog.objects.create(username="u", ip_address="10.1.1.1", locked_out=False).pk,
        "django_q/schedule": Schedule.objects.first().pk, "django_q/success": task.pk, "django_q/failure": failed.pk,
        "django_q/ormq": OrmQ.objects.create(key="default", payload="x").pk,
        "api/apitoken": create_token(user=users["analyst"], name="matrix")[0].pk,
        "batch": batch.pk, "run": TrainingRun.objects.first().pk, "version": "1.0", "job": _done_job(users["analyst"]).pk,
    }


def _done_job(owner) -> ScoringJob:
    job = ScoringJob.objects.create(original_name="m.csv", created_by=owner, status=ScoringJob.Status.DONE,
                                    result_path="scoring/matrix-result.csv", version=ModelVersion.active())
    path = home.path(job.result_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("customer_id,probability,prediction\n")
    return job


def url_for(route: str, objects: dict, users) -> str:
    from django.contrib.contenttypes.models import ContentType

    if _app_list(route) == "admin/<app list>":
        return "/admin/modelhub/"
    if route == "admin/autocomplete/":
        return "/admin/autocomplete/?app_label=ingestion&model_name=databatch&field_name=schema"
    path = "/" + route
    if route.startswith("admin/"):
        model = "/".join(route.split("/")[1:3])
        replacements = {
            "<path:object_id>": str(objects.get(model, 1)), "<int:pk>": str(objects["modelhub/modelversion"]),
            "<id>": str(users["viewer"].pk),
            "<path:content_type_id>": str(ContentType.objects.get_for_model(DataBatch).pk),
            "(?P<url>.*)$": "no-such-page/",
        }
        if "<path:content_type_id>" in route:
            replacements["<path:object_id>"] = str(objects["batch"])
    elif route.startswith("api/"):
        replacements = {"<version>": objects["version"], "<run_id>": str(objects["run"]), "<job_id>": str(objects["job"])}
    else:
        pk = objects["run"] if route.startswith("runs/") else objects["job"] if route.startswith("predict/jobs/") else objects["batch"]
        replacements = {"<int:pk>": str(pk), "<str:version>": objects["version"]}
    for placeholder, value in replacements.items():
        path = path.replace(placeholder, value)
    return path


def outcome_of(response, *, api: bool = False) -> object:
    if api:
        return response.status_code if response.status_code in (401, 403, 404, 405) else OK
    if response.status_code in (301, 302):
        return LOGIN if "/login/" in response["Location"] else OK
    return OK if response.status_code == 200 or (response.status_code == 503 and response.json().get("status")) else response.status_code


def test_each_role_gets_exactly_its_decision_on_every_route(objects, users):
    from api import auth

    auth.forget()
    wrong = []
    clients, tokens = {"anonymous": Client()}, {"anonymous": {}}
    for role in ROLES[1:]:
        clients[role] = Client()
        clients[role].force_login(users[role])
        tokens[role] = {"HTTP_AUTHORIZATION": f"Bearer {create_token(user=users[role])[1]}"}
    for route in routes():
        for method, outcomes in decision(route):
            url = url_for(route, objects, users)
            for role, expected in outcomes.items():
                client = clients[role]
                headers = tokens[role] if route.startswith("api/") and route != "api/v1/docs" else {}
                response = client.get(url, **headers) if method == "GET" else client.post(url, {}, **headers)
                got = outcome_of(response, api=route.startswith("api/") and route != "api/v1/docs")
                if got != expected:
                    wrong.append(f"{role:<9} {method} {url}: expected {expected}, got {got} ({response.status_code})")
                if route in ("logout/",) and method == "POST" and role != "anonymous":
                    client.force_login(users[role])  # logged out by the check: log back in
    assert not wrong, "\n".join(wrong)


ACTIONS = [
    ("modelhub/modelversion", "rollback_to_version"),
    ("ingestion/databatch", "release_batches"),
    ("ingestion/databatch", "discard_batches"),
    ("auth/user", "deactivate_users"),
]


@pytest.mark.parametrize("model, action", ACTIONS)
def test_a_post_straight_to_an_admin_action_without_its_permission_changes_nothing(model, action, objects, users):
    from modelhub import roles

    # A staff user with the view permissions of an ML engineer but neither deploy nor batch
    # management nor user management: the actions are not his.
    clerk = get_user_model().objects.create_user("clerk", password="a-long-enough-passphrase", is_staff=True)
    roles.assign_role(clerk, roles.VIEWER)
    clerk.is_staff = True
    clerk.save()
    client = Client()
    client.force_login(clerk)
    before = (ModelVersion.active().pk, list(DataBatch.objects.values_list("pk", "status")),
              list(get_user_model().objects.values_list("pk", "is_active")))
    response = client.post(f"/admin/{model}/", {"action": action, "_selected_action": [objects[model]], "post": "yes", "reason": "x"})
    # Refused, or the admin does not know the action for this user: it offers and runs only permitted ones.
    assert response.status_code in (200, 302, 403), response.status_code
    if response.status_code != 403:
        assert f'value="{action}"' not in client.get(f"/admin/{model}/").content.decode()
    after = (ModelVersion.active().pk, list(DataBatch.objects.values_list("pk", "status")),
             list(get_user_model().objects.values_list("pk", "is_active")))
    assert after == before
