import json

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from ops import alerts, health, repairs

MARK = {health.OK: "ok", health.WARNING: "WARN", health.FAILING: "FAIL"}


class Command(BaseCommand):
    help = ("Is the loop healthy? Worker, schedule, runs, background jobs, last success, data waiting, held data, mirrors, "
            "task broker, disk, alert mail; "
            "each with what to do. Exit 0 healthy, 1 unhealthy. Also raises the alerts: a problem that is new is mailed to "
            "the ML engineers (as the watchdog does every minute), so a cron job running this tells people even when the "
            "worker or the broker is down.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--repair", action="store_true",
                            help="first put right what needs no person: fail runs and scoring jobs whose worker died, hand lost ones over again, "
                                 "rewrite stale mirror files, restore the system schedules, quarantine orphan upload files, make CL_HOME's folders "
                                 "(`make run` does this at every start)")

    def handle(self, *args, **options):
        repaired = {}
        if options["repair"]:
            try:
                repaired = repairs.repair()
            except DatabaseError:
                pass  # the report says the database cannot be read, and what to do
        report = health.report()
        told = alerts.evaluate(report) if report.checks[0].name != "database" else {"opened": []}
        if options["json"]:
            self.stdout.write(json.dumps({**report.as_dict(), "repaired": repaired, "alerts_opened": told["opened"]}, indent=2))
        else:
            self.print(report, repaired, told["opened"])
        if not report.healthy:
            raise SystemExit(1)

    def print(self, report: health.Report, repaired: dict, opened: list[str]) -> None:
        for check in report.checks:
            self.stdout.write(f"{MARK[check.status]:<5} {check.title:<13} {check.summary}")
            if check.status != health.OK and check.fix:
                self.stdout.write(f"{'':<19}→ {check.fix}")
        done = repairs.anything_done(repaired)
        if done:
            self.stdout.write(f"repaired: {json.dumps(done)}")
        if opened:
            self.stdout.write(f"alerts raised (mailed to the ML engineers): {', '.join(opened)}")
        self.stdout.write(self.style.SUCCESS("healthy") if report.healthy else self.style.ERROR(f"unhealthy: {', '.join(report.failing)}"))
