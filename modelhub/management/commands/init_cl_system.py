from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ingestion import values
from ingestion.schema import SchemaError
from modelhub import policies
from modelhub.models import ValidationPolicy
from modelhub.setup import SetupError, initialise


class Command(BaseCommand):
    help = "One-time set-up: learn the schema from CSV, build the master dataset, train (or import) model v1.0, create roles and the default schedule."

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, type=Path, help="the first labelled CSV")
        parser.add_argument("--target", required=True, help="the column to predict (exactly two labels)")
        parser.add_argument("--id-column", default="", help="a column that identifies each row (optional)")
        parser.add_argument("--positive-label", default="", help="which target label is the positive class (default: yes/1/true, else the rarer one)")
        parser.add_argument("--model", type=Path,
                            help="import this fitted scikit-learn binary classifier (joblib) as v1.0 instead of training. "
                                 "Loading a pickle runs any code in it: import only a file you trust.")
        parser.add_argument("--missing-values", default=",".join(m for m in values.DEFAULT_MISSING_MARKERS if m), metavar="\"NA,N/A,...\"",
                            help="comma-separated values that mean 'no value' in this dataset's files, compared trimmed and in any "
                                 "case; an empty cell always does (default: %(default)s). Kept with the schema for every upload.")

    def handle(self, *args, **options):
        if options["model"]:
            self.stdout.write(f"Loading {options['model']}: a pickle file runs any code it holds, so this trusts the file.")
        markers = values.marker_list(options["missing_values"].split(","))
        shown = ", ".join(repr(marker) for marker in markers if marker)
        self.stdout.write(f"Missing values: empty cells{' and ' + shown if shown else ''} (--missing-values).")
        try:
            version = initialise(data=options["data"], target=options["target"], id_column=options["id_column"],
                                 positive_label=options["positive_label"], model_file=options["model"], missing_markers=markers)
        except (SetupError, SchemaError) as exc:
            raise CommandError(str(exc)) from None
        metrics = version.metrics
        self.stdout.write(self.style.SUCCESS(
            f"Initialised: model v{version.version} ({version.estimator}) is active; "
            f"holdout accuracy {metrics.get('accuracy', 0):.3f}, AUC {metrics.get('auc') or 0:.3f}; "
            f"{version.training_rows} training rows, {version.holdout_rows} held out."
        ))
        self.stdout.write(f"Validation policy, from the class balance: {policies.summary(ValidationPolicy.get())}. "
                          "ML engineers change it in the admin.")
        if version.imported:
            self.stdout.write("These holdout scores are not evidence: the imported model may have been fitted on those rows. "
                              "The first retraining compares it only on rows of later batches.")
