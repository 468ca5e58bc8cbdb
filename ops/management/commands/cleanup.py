from django.core.management.base import BaseCommand

from ingestion.uploads import human_bytes
from ops import retention


class Command(BaseCommand):
    help = ("Apply the retention policy: remove old temporary files, old refused and discarded files, and old raw files of "
            "merged batches; rotate a large retraining log. Never the master dataset or a model version's artifact.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")

    def handle(self, *args, **options):
        done = retention.apply(dry_run=options["dry_run"])
        for removal in done.removals:
            self.stdout.write(f"{human_bytes(removal.size):>10}  {removal.path}  ({removal.why})")
        self.stdout.write(done.summary())
