"""Screenshots of every page as each role, for looking at the layout (not a test).

    .venv/bin/python bench/screenshots.py [--out bench/out] [--keep]

Builds a throw-away CL_HOME with a realistic history (v1.0 initial, v1.1 deployed, v1.2 rejected
with its batch held, a refused upload, a queued run), serves it with `manage.py runserver` on a
free port and photographs the pages with Debian's Chromium (never a downloaded browser) at
desktop width, plus a few at phone width. PNGs go to bench/out/ (git-ignored).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

PY = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_state(home: Path) -> dict:
    """Migrate and make the history the pages show; returns ids the screenshots need."""
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from ingestion import services as ingestion
    from modelhub import retraining
    from modelhub.models import TrainingRun
    from testing import builders

    demo = builders.DemoData(home / "demo_files")
    builders.initialise(demo)
    users = builders.make_users()

    def ingest(name, path, user):
        with open(path, "rb") as fh:
            return ingestion.ingest_file(source=fh, original_name=name, user=user)

    good = ingest("new_customers_march.csv", demo.write("a.csv", slice(2000, 2600)), users["analyst"])
    deployed = retraining.retrain_now(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL)
    flipped = ingest("april_export_with_a_very_long_file_name_from_the_crm_system_v2_final.csv",
                     demo.flipped("b.csv", slice(2600, 3400)), users["analyst"])
    rejected = retraining.retrain_now(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL)
    frame = demo.frame.iloc[3400:3460].copy()
    for i in range(0, 60, 4):
        frame.loc[frame.index[i], "tenure"] = "twelve"
    frame.loc[frame.index[5], "churn"] = "Maybe"
    frame.loc[frame.index[6], "contract"] = "Three year"
    bad = ingest("bad.csv", demo.write("bad.csv", frame=frame), users["analyst"])
    staged = ingest("may.csv", demo.write("c.csv", slice(3500, 3700)), users["analyst"])
    from modelhub.runs import request_retraining

    queued = request_retraining(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL, enqueue=False).run
    from modelhub import scoring
    from modelhub.models import ModelVersion, ScoringJob

    job = scoring.submit(source=demo.write("score.csv", frame=demo.frame.iloc[:500].drop(columns=["churn"])),
                         original_name="customers_to_score.csv", user=users["analyst"])
    scoring.run(ScoringJob.objects.get(pk=job.pk))
    return {
        "job": job.pk,
        "good": good.pk, "held": flipped.pk, "bad": bad.pk, "staged": staged.pk, "deployed_run": deployed.pk,
        "rejected_run": rejected.pk, "queued_run": queued.pk, "v10": ModelVersion.objects.get(major=1, minor=0).pk,
        "rejected_version": rejected.candidate.version if rejected.candidate else None,
    }


def shoot(base: str, out: Path, ids: dict) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from testing.builders import PASSWORD

    shots = []
    plan = {
        None: [("login", "/login/"), ("healthz", "/healthz")],
        "viewer": [("overview", "/"), ("data", "/data/"), ("models", "/models/"), ("model_v1_0", "/models/1.0/"),
                   ("runs", "/runs/"), ("deployments", "/deployments/"), ("predict", "/predict/"), ("upload_403", "/data/upload/"),
                   ("status", "/status/"), ("compare", "/models/compare/?a=1.0&b=1.1")],
        "analyst": [("data", "/data/"), ("upload", "/data/upload/"), ("batch_good", f"/data/{ids['good']}/"),
                    ("batch_bad", f"/data/{ids['bad']}/"), ("predict", "/predict/"), ("scoring_job", f"/predict/jobs/{ids['job']}/"),
                    ("api_docs", "/api/v1/docs"), ("compare", "/models/compare/")],
        "engineer": [("overview", "/"), ("runs", "/runs/"), ("run_deployed", f"/runs/{ids['deployed_run']}/"),
                     ("run_rejected", f"/runs/{ids['rejected_run']}/"), ("run_queued", f"/runs/{ids['queued_run']}/"),
                     ("models", "/models/"), ("model_v1_0", "/models/1.0/"), ("model_v1_1", "/models/1.1/"),
                     ("model_rejected", f"/models/{ids['rejected_version']}/"), ("batch_held", f"/data/{ids['held']}/"),
                     ("compare", f"/models/compare/?a=1.1&b={ids['rejected_version']}"),
                     ("deployments", "/deployments/?at=2000-01-01T00:00"), ("status", "/status/"), ("admin_index", "/admin/"),
                     ("admin_versions", "/admin/modelhub/modelversion/"), ("admin_version", f"/admin/modelhub/modelversion/{ids['v10']}/change/")],
        "admin": [("overview", "/"), ("admin_index", "/admin/"), ("not_found", "/models/9.9/")],
    }
    phone = {("viewer", "overview"), ("viewer", "data"), ("engineer", "runs"), ("engineer", "model_v1_0"), ("analyst", "batch_bad"),
             (None, "login"), ("engineer", "status"), ("engineer", "compare")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for role, pages in plan.items():
            context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
            page = context.new_page()
            if role:
                page.goto("/login/")
                page.fill("#id_username", role)
                page.fill("#id_password", PASSWORD)
                with page.expect_navigation():
                    page.click("button[type=submit]")
            for name, url in pages:
                page.goto(url)
                page.wait_for_load_state("networkidle")
                shots.append(_save(page, out / f"{role or 'anon'}_{name}.png"))
                if (role, name) in phone:
                    page.set_viewport_size({"width": 390, "height": 844})
                    page.reload()
                    page.wait_for_load_state("networkidle")
                    shots.append(_save(page, out / f"{role or 'anon'}_{name}_phone.png"))
                    page.set_viewport_size({"width": 1280, "height": 900})
            if role == "viewer":  # a prediction's result
                page.goto("/predict/")
                with page.expect_navigation():
                    page.click("form button[type=submit]")
                shots.append(_save(page, out / "viewer_predict_result.png"))
            if role == "analyst":  # the progress bar, held mid-upload
                page.goto("/data/upload/")
                page.route("**/data/upload/", lambda route: None if route.request.method == "POST" else route.continue_())
                page.set_input_files("#id_file", str(ROOT / "demo" / "batches" / "new_customers_2.csv"))
                page.click("#upload-button")
                page.wait_for_timeout(300)
                shots.append(_save(page, out / "analyst_upload_in_progress.png"))
                page.unroute_all(behavior="ignoreErrors")
            if role == "engineer":  # the admin action's confirmation page, and the rejected-upload form
                page.goto("/admin/modelhub/modelversion/")
                page.check(f"input[name=_selected_action][value='{ids['v10']}']")
                page.select_option("select[name=action]", label="Roll back to this version")
                with page.expect_navigation():
                    page.click("button[name=index]")
                shots.append(_save(page, out / "engineer_admin_rollback_confirmation.png"))
                page.goto(f"/admin/modelhub/modelversion/{ids['v10']}/rollback/")
                shots.append(_save(page, out / "engineer_admin_rollback_button_confirmation.png"))
            context.close()
        # Last, since it locks this address out: the lock-out page after too many wrong passwords.
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
        page = context.new_page()
        for _ in range(5):
            page.goto("/login/")
            page.fill("#id_username", "someone")
            page.fill("#id_password", "wrong password")
            with page.expect_navigation():
                page.click("button[type=submit]")
        shots.append(_save(page, out / "anon_lockout.png"))
        context.close()
        browser.close()
    return shots


OVERFLOW_JS = """() => {
  const issues = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    issues.push(`page is ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window`);
  document.querySelectorAll(".plotly-graph-div").forEach((chart, i) => {
    const svg = chart.querySelector(".main-svg"), box = chart.parentElement;
    if (svg && svg.getBoundingClientRect().width > box.clientWidth + 1)
      issues.push(`chart ${i} is ${Math.round(svg.getBoundingClientRect().width)}px wide in a ${box.clientWidth}px box`);
  });
  document.querySelectorAll(".card, main table").forEach((el, i) => {
    if (el.scrollWidth > el.clientWidth + 1) issues.push(`${el.tagName.toLowerCase()}.${el.className} #${i} scrolls sideways`);
  });
  return issues;
}"""


def _save(page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    for issue in page.evaluate(OVERFLOW_JS):
        print(f"{path.name}: {issue}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--keep", action="store_true", help="keep the throw-away CL_HOME")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="cl-screens-"))
    os.environ.update(CL_HOME=str(home), DJANGO_SECRET_KEY="screenshots-only", DJANGO_DEBUG="false",
                      DJANGO_SETTINGS_MODULE="clsite.settings", DJANGO_ALLOW_ASYNC_UNSAFE="true")
    server = None
    try:
        ids = build_state(home)
        port = free_port()
        server = subprocess.Popen([PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/login/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        shots = shoot(base, out, ids)
        print(f"{len(shots)} screenshots in {out}")
        return 0
    finally:
        if server:
            server.terminate()
            server.wait(10)
        if args.keep:
            print(f"CL_HOME kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
