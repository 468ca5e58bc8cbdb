from django.db import migrations, models


class Migration(migrations.Migration):
    """Versions trained before this have no profile: requests to them are checked by the schema
    alone (missing values allowed, no range warnings), as before."""

    dependencies = [("modelhub", "0006_version_history_index")]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="profile",
            field=models.JSONField(blank=True, default=dict, help_text=(
                "What its training rows held, per feature: the missing share and a number's range; a request "
                "that leaves out a feature never missing in training is refused, values out of range are flagged.")),
        ),
    ]
