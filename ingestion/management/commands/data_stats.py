import json

from ingestion.management.base import InitialisedCommand
from ingestion.selectors import data_stats


class Command(InitialisedCommand):
    help = "Rows in the master dataset, staged, archived, rejected and held files, class balance and per-column summaries."
    # Data only: Django's system checks would import the web views and, through them,
    # scikit-learn, adding a second and ~80 MB to every run (ingest may run from cron).
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the same dict as ingestion.services.get_data_stats()")

    def handle(self, *args, **options):
        stats = data_stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats, indent=2, default=str))
            return
        self.stdout.write(f"master dataset: {stats['master_rows']:,} rows in {stats['master_partitions']} partition(s)")
        self.stdout.write(f"staged: {stats['staged_files']} file(s), {stats['staged_rows']:,} rows   held: {stats['held_files']}   "
                          f"archived: {stats['archived_files']}   rejected: {stats['rejected_files']}   discarded: {stats['discarded_files']}")
        balance = ", ".join(f"{label}: {v['rows']:,} ({v['share']:.1%})" for label, v in stats["class_balance"].items())
        self.stdout.write(f"class balance: {balance or 'no data'}")
        for name, column in stats["columns"].items():
            if column["kind"] == "numeric" and column["count"]:
                self.stdout.write(f"  {name:<24} numeric      mean {column['mean']:.3f}  std {column['std']:.3f}  "
                                  f"min {column['min']:.3f}  max {column['max']:.3f}  missing {column['missing']}")
            elif column["kind"] == "categorical":
                top = ", ".join(f"{k} ({v})" for k, v in list(column["top"].items())[:3])
                self.stdout.write(f"  {name:<24} categorical  {column['distinct_seen']} values, top: {top}  missing {column['missing']}")
