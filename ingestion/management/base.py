"""What the commands that need a set-up system have in common.

Used by ingestion's commands (ingest, data_stats) and modelhub's (retrain, rollback). It lives here
because "set up" means the dataset schema, an ingestion model, exists; ingestion imports nothing
from modelhub, and this keeps it so.
"""
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from ingestion.models import DatasetSchema

NOT_MIGRATED = "the database is not set up: run `manage.py migrate` first (`make run` does it)"
NOT_INITIALISED = ("the system is not initialised yet: run `manage.py init_cl_system --data FILE.csv --target COLUMN` first "
                   "(`make run` does it with the demo data)")


def require_initialised() -> None:
    """CommandError with what to do, when the database or the schema is not there yet."""
    try:
        initialised = DatasetSchema.objects.exists()
    except DatabaseError:
        raise CommandError(NOT_MIGRATED) from None
    if not initialised:
        raise CommandError(NOT_INITIALISED)


class InitialisedCommand(BaseCommand):
    """A command that needs the system set up: says so plainly instead of failing deep inside."""

    def execute(self, *args, **options):
        require_initialised()
        return super().execute(*args, **options)
