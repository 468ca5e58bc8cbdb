from django.core.management.base import BaseCommand

from ingestion.uploads import human_bytes
from ops import retention


class Command(BaseCommand):
    help = ("Apply the retention policy: remove old temporary files, old refused and discarded files, and old raw files of "
            "merged batches, and upload files a crash left without a batch (quarantined by the repair; listed until then); "
            "rotate a large retraining log. Never the master dataset or a model version's artifact.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")

    def handle(self, *args, **options):
        done = retention.apply(dry_run=options["dry_run"])
        for removal in done.removals:
            self.stdout.write(f"{human_bytes(removal.size):>10}  {removal.path}  ({removal.why})")
        self.stdout.write(done.summary())
        if done.orphans:
            self.stdout.write(f"kept {len(done.orphans)} quarantined orphan file(s), {human_bytes(sum(r.size for r in done.orphans))}:")
            for orphan in done.orphans:
                self.stdout.write(f"{human_bytes(orphan.size):>10}  {orphan.path}  ({orphan.why})")
