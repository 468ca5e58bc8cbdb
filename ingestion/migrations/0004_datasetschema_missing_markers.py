"""Missing-value markers kept with the schema.

Existing schemas get the default list ("", NA, N/A, NaN, null, None). This changes how their
files are read from now on: in uploads checked after this migration, and in nothing already
stored, those words are missing values. An "NA" in a numeric column was refused before and is
missing now; an "NA" (or "None", ...) in a categorical column was a category before (and may be
one of the schema's known values) and is a missing value now. Batches staged, merged or held
before keep the values they were stored with.
"""
from django.db import migrations, models

import ingestion.models


class Migration(migrations.Migration):

    dependencies = [
        ("ingestion", "0003_master_summary_no_run"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetschema",
            name="missing_markers",
            field=models.JSONField(
                blank=True, default=ingestion.models.default_missing_markers,
                help_text="Values that mean 'no value' in an upload (compared trimmed, in any case); the empty string always does.",
            ),
        ),
    ]
