import json

from django.core.management.base import BaseCommand

from ops import alerts, health

MARK = {health.OK: "ok", health.WARNING: "WARN", health.FAILING: "FAIL"}


class Command(BaseCommand):
    help = ("Is the loop healthy? Worker, schedule, runs, last success, data waiting, held data, mirrors, disk, alert mail; "
            "each with what to do. Exit 0 healthy, 1 unhealthy.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--repair", action="store_true",
                            help="first put right what needs no person: fail runs whose worker died, hand lost runs over again, "
                                 "rewrite stale mirror files, restore the system schedules")

    def handle(self, *args, **options):
        report = health.report(repair=options["repair"])
        if report.checks[0].name != "database":
            alerts.evaluate(report)  # a cron job running this tells people even when the worker is dead
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.print(report)
        if not report.healthy:
            raise SystemExit(1)

    def print(self, report: health.Report) -> None:
        for check in report.checks:
            self.stdout.write(f"{MARK[check.status]:<5} {check.title:<13} {check.summary}")
            if check.status != health.OK and check.fix:
                self.stdout.write(f"{'':<19}→ {check.fix}")
        repaired = {name: done for name, done in report.repaired.items() if done and (not isinstance(done, dict) or any(done.values()))}
        if repaired:
            self.stdout.write(f"repaired: {json.dumps(repaired)}")
        self.stdout.write(self.style.SUCCESS("healthy") if report.healthy else self.style.ERROR(f"unhealthy: {', '.join(report.failing)}"))
