from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from clsite.space import NoSpace
from ingestion.management.base import InitialisedCommand
from ingestion.models import DataBatch
from ingestion.services import IngestionError, ingest_path


class Command(InitialisedCommand):
    help = "Stage a CSV file as an upload would; exit 1 with the reasons if it is refused."
    # Data only: Django's system checks would import the web views and, through them,
    # scikit-learn, adding a second and ~80 MB to every run (ingest may run from cron).
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("csv", type=Path)
        parser.add_argument("--user", help="record the upload as this user's")

    def handle(self, *args, **options):
        path: Path = options["csv"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"there is no user {options['user']!r}")
        try:
            batch = ingest_path(path, user=user)
        except (IngestionError, NoSpace) as exc:
            raise CommandError(f"{path.name} was not taken: {exc}" if isinstance(exc, NoSpace) else str(exc)) from None
        print_report(self, batch)
        if batch.status == DataBatch.Status.REJECTED:
            raise CommandError(f"{path.name} was refused: {batch.report.get('summary')}; the file is kept in {batch.raw_path or 'no file (too large)'}")


def print_report(command, batch: DataBatch) -> None:
    report = batch.report
    out = command.stdout if batch.status == DataBatch.Status.STAGED else command.stderr
    out.write(f"batch {batch.pk}: {batch.original_name}: {report.get('summary')}")
    for error in report.get("errors", []):
        where = ", ".join(p for p in (f"line {error['line']}" if error.get("line") else "", f"column {error['column']}" if error.get("column") else "") if p)
        out.write(f"  error   {where + ': ' if where else ''}{error['message']}")
    if report.get("error_count", 0) > len(report.get("errors", [])):
        out.write(f"  ... and {report['error_count'] - len(report['errors'])} more problem(s)")
    for warning in report.get("warnings", []):
        out.write(f"  warning {warning['message']}")
    if batch.status == DataBatch.Status.STAGED:
        command.stdout.write(command.style.SUCCESS(f"staged {batch.rows:,} rows in {batch.raw_path}"))
