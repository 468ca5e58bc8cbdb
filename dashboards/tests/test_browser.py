"""The pages in a real browser: Debian's Chromium driven by Playwright against a live server.

Never downloads a browser: Chromium is /usr/bin/chromium (`make browser` installs it). Each test
starts from a freshly initialised system (conftest's `initialised`: v1.0 trained on 2,000 demo
rows, real commits, so the live server thread sees the data).
"""
import os
import re
from urllib.parse import urlsplit

import pytest
from playwright import sync_api

from testing.builders import PASSWORD

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
TIMEOUT_MS = 15_000

expect = sync_api.expect


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):  # a failure, never a silent skip: .ci/run installs it
        pytest.fail(f"Debian's Chromium is not at {CHROMIUM}: run `make browser` (apt-get install chromium)", pytrace=False)
    # Playwright's sync API keeps an asyncio loop in this thread; Django refuses ORM calls from a
    # thread with a running loop unless told that this is deliberate (the tests call services
    # between page actions; no async code shares the connection).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Session:
    """One browser context logged in as one user; records every URL the pages ask for."""

    def __init__(self, browser, live_server):
        self.base = live_server.url
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=self.base)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()

    def login(self, username: str):
        page = self.page
        page.goto("/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        expect(page.locator(".who")).to_contain_text(username)
        return page

    def foreign_requests(self) -> list[str]:
        """Requests that left this machine (data:, blob: and about: URLs never leave it)."""
        return [url for url in self.requests
                if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOCAL_HOSTS]


@pytest.fixture
def session(browser, live_server, initialised, users):
    sessions = []

    def open_as(username: str) -> Session:
        s = Session(browser, live_server)
        sessions.append(s)
        s.login(username)
        return s

    yield open_as
    for s in sessions:
        s.context.close()


def stage(demo, name: str, rows: slice):
    """Stage a batch straight through the service (what an upload does), for tests about retraining."""
    from ingestion import services

    with open(demo.write(name, rows), "rb") as fh:
        batch = services.ingest_file(source=fh, original_name=name)
    assert batch.status == "staged", batch.report
    return batch


def test_an_analyst_uploads_through_the_form_and_reads_the_report(session, users, demo):
    from ingestion.models import DataBatch

    s = session("analyst")
    page = s.page
    page.click("nav >> text=Data")
    page.click("text=Upload a CSV")
    expect(page).to_have_url(re.compile(r"/data/upload/$"))
    expect(page.locator("#progress")).to_be_hidden()

    # Hold the upload in flight so the progress bar can be seen before the report replaces the page.
    held, released = [], []

    def hold_the_post(route):
        if route.request.method == "POST" and not released:
            held.append(route)
        else:
            route.continue_()

    page.route(re.compile(r".*/data/upload/$"), hold_the_post)
    page.set_input_files("#id_file", str(demo.write("b.csv", slice(2000, 2400))))
    page.click("#upload-button")
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#upload-button")).to_be_disabled()
    expect(page.locator("#progress-text")).not_to_be_empty()
    for _ in range(500):
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the upload never reached the server"
    released.append(True)
    held[0].continue_()
    # The page becomes the batch report (upload.js shows the server's answer under its address).
    expect(page.locator("main")).to_contain_text("accepted: 400 rows")
    batch = DataBatch.objects.get(original_name="b.csv")
    assert batch.status == DataBatch.Status.STAGED and batch.uploaded_by == users["analyst"]
    expect(page).to_have_url(re.compile(rf"/data/{batch.pk}/$"))
    expect(page.locator("main")).to_contain_text("accepted: 400 rows")
    expect(page.locator("h1 .badge")).to_have_text("Staged")
    expect(page.locator(".msg.success")).to_contain_text("b.csv: accepted: 400 rows")

    # A malformed file: refused, and the report names each problem's line and column.
    frame = demo.frame.iloc[2400:2420].copy()
    frame.loc[frame.index[3], "tenure"] = "twelve"  # data row 4 = line 5 (the header is line 1)
    frame.loc[frame.index[7], "churn"] = "Maybe"  # line 9
    page.goto("/data/upload/")
    page.set_input_files("#id_file", str(demo.write("bad.csv", frame=frame)))
    page.click("#upload-button")
    expect(page.locator("h1 .badge")).to_have_text("Rejected")
    expect(page).to_have_url(re.compile(r"/data/\d+/$"))
    expect(page.locator("main")).to_contain_text("Refused")
    problems = page.locator("table tr", has=page.locator("td"))
    expect(problems.filter(has_text="twelve")).to_have_count(1)
    assert problems.filter(has_text="twelve").locator("td").first.inner_text().strip() == "5"
    assert "tenure" in problems.filter(has_text="twelve").inner_text()
    assert problems.filter(has_text="Maybe").locator("td").first.inner_text().strip() == "9"
    assert not s.foreign_requests()


def test_an_ml_engineer_retrains_from_the_runs_page_then_rolls_back(session, users, demo):
    from modelhub import retraining
    from modelhub.models import ModelVersion, TrainingRun

    stage(demo, "new.csv", slice(2000, 2400))
    s = session("engineer")
    page = s.page
    page.goto("/runs/")
    with page.expect_navigation(url=re.compile(r"/runs/\d+/$")):
        page.click("button:has-text('Retrain now')")
    run = TrainingRun.objects.latest("pk")
    assert run.status == TrainingRun.Status.QUEUED and run.requested_by == users["engineer"]
    expect(page).to_have_url(re.compile(rf"/runs/{run.pk}/$"))
    expect(page.locator("h1 .badge")).to_have_text("Queued")
    expect(page.locator(".msg.success")).to_contain_text(f"Run {run.pk} is queued")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(1)

    # No worker runs in the tests: carry the run out here, as the worker would (on a page that
    # does not refresh itself meanwhile).
    page.goto("/data/")
    retraining.execute(run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.DEPLOYED, (run.reasons, run.error)
    page.goto(f"/runs/{run.pk}/")
    expect(page.locator("h1 .badge")).to_have_text("Deployed")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    expect(page.locator("main")).to_contain_text("v1.1")

    page.goto("/models/1.0/")
    expect(page.locator("h1 .badge")).to_have_text("Retired")
    page.fill("textarea[name=reason]", "v1.1 misreads the new accounts")
    with page.expect_navigation():
        page.click("button:has-text('Roll back to v1.0')")
    expect(page.locator(".msg.success")).to_contain_text("v1.0 is now the active model")
    expect(page.locator("h1 .badge")).to_have_text("Active")
    assert ModelVersion.active().version == "1.0"

    page.goto("/deployments/")
    newest = page.locator("table tr", has=page.locator("td")).first
    expect(newest).to_contain_text("Rollback")
    expect(newest).to_contain_text("v1.1")
    expect(newest).to_contain_text("v1.0")
    expect(newest).to_contain_text("engineer")
    expect(newest).to_contain_text("v1.1 misreads the new accounts")
    assert not s.foreign_requests()


def test_an_ml_engineer_rolls_back_with_the_admin_action(session, demo):
    from modelhub import retraining
    from modelhub.models import Deployment, ModelVersion

    stage(demo, "new.csv", slice(2000, 2400))
    assert retraining.retrain_now().status == "deployed"
    v10 = ModelVersion.objects.get(major=1, minor=0)
    s = session("engineer")
    page = s.page
    page.goto("/admin/modelhub/modelversion/")
    page.check(f"input[name=_selected_action][value='{v10.pk}']")
    page.select_option("select[name=action]", label="Roll back to this version")
    with page.expect_navigation():
        page.click("button[name=index]")
    expect(page.locator("h1")).to_contain_text("Roll back to v1.0?")
    reason = page.locator("textarea[name=reason]")
    expect(reason).to_be_visible()
    assert reason.get_attribute("required") is None  # a rollback's reason is optional; a forced deployment's is not
    reason.fill("rollback drill from the admin")
    with page.expect_navigation():
        page.click("input[type=submit][value^='Yes, roll back']")
    expect(page.locator(".messagelist .success")).to_contain_text("v1.1 → v1.0 is now active")
    assert ModelVersion.active() == v10
    row = page.locator("#result_list tr", has=page.locator(f"input[value='{v10.pk}']"))
    expect(row).to_contain_text("Active")
    ledger = Deployment.objects.order_by("-created_at").first()
    assert ledger.kind == "rollback" and ledger.user.username == "engineer" and ledger.reason == "rollback drill from the admin"
    assert not s.foreign_requests()


def test_charts_render_offline_from_our_own_static_files(session):
    s = session("viewer")
    page = s.page
    scripts = []
    page.on("response", lambda response: scripts.append((response.url, response.status)) if "plotly" in response.url else None)
    page.goto("/models/1.0/")
    chart = page.locator("div.plotly-graph-div").first
    expect(chart).to_be_visible()
    expect(chart.locator("svg").first).to_be_attached()
    assert page.locator("div.plotly-graph-div").count() >= 3
    assert page.evaluate("() => typeof window.Plotly") == "object"
    # Every chart fits its card once the page has loaded (none drawn at plotly's 700px fallback).
    page.wait_for_load_state("load")
    page.wait_for_timeout(100)
    too_wide = page.evaluate("""() => [...document.querySelectorAll('.plotly-graph-div')]
        .map(chart => [chart.querySelector('.main-svg').getBoundingClientRect().width, chart.parentElement.clientWidth])
        .filter(([chart, card]) => chart > card + 1)""")
    assert not too_wide, too_wide
    assert any(url.endswith("/static/plotly/plotly.min.js") and status == 200 for url, status in scripts), scripts
    page.goto("/data/")
    expect(page.locator("div.plotly-graph-div svg").first).to_be_attached()
    assert s.requests and not s.foreign_requests(), s.foreign_requests()


def test_a_viewer_has_no_upload_button_and_is_refused_the_upload_page(session):
    s = session("viewer")
    page = s.page
    page.goto("/data/")
    expect(page.locator("h1")).to_have_text("Data")
    expect(page.locator("a:has-text('Upload a CSV')")).to_have_count(0)
    response = page.goto("/data/upload/")
    assert response.status == 403
    page.goto("/runs/")
    expect(page.locator("button:has-text('Retrain now')")).to_have_count(0)
    page.goto("/models/1.0/")
    expect(page.locator("textarea[name=reason]")).to_have_count(0)


CSP_WATCH = """() => {
  window.cspViolations = [];
  document.addEventListener("securitypolicyviolation", e => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
}"""


def test_no_page_breaks_the_content_security_policy_and_charts_still_render(session, demo):
    from modelhub import retraining

    stage(demo, "new.csv", slice(2000, 2400))
    assert retraining.retrain_now().status == "deployed"
    s = session("admin")
    page = s.page
    console = []
    page.on("console", lambda message: console.append(message.text) if message.type in ("error", "warning") else None)
    page.add_init_script(CSP_WATCH.replace("() => {", "").rstrip("}"))
    from modelhub import scoring
    from modelhub.models import ScoringJob

    frame = demo.frame.iloc[:50].drop(columns=["churn"])
    job = scoring.submit(source=demo.write("score.csv", frame=frame), original_name="score.csv", user=None)
    scoring.run(ScoringJob.objects.get(pk=job.pk))
    pages = ["/", "/data/", "/data/upload/", "/models/", "/models/1.0/", "/models/1.1/", "/models/compare/?a=1.0&b=1.1",
             "/runs/", "/deployments/",
             "/predict/", f"/predict/jobs/{job.pk}/", "/status/", "/api/v1/docs", "/admin/", "/admin/modelhub/modelversion/",
             "/admin/audit/auditevent/", "/admin/auth/user/"]
    for url in pages:
        response = page.goto(url)
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"], url
        page.wait_for_load_state("load")
        assert page.evaluate("() => window.cspViolations") == [], url
    page.goto("/models/1.1/")
    expect(page.locator("div.plotly-graph-div svg").first).to_be_attached()
    assert page.locator("div.plotly-graph-div .main-svg").count() >= 3
    assert not [text for text in console if "Content Security Policy" in text or "Refused to" in text], console
