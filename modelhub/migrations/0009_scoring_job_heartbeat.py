from django.db import migrations, models


class Migration(migrations.Migration):
    """A scoring job carries a heartbeat and its worker, as a retraining run does (modelhub.jobs)."""

    dependencies = [
        ("modelhub", "0008_scoring_chain"),
    ]

    operations = [
        migrations.RenameField(model_name="scoringjob", old_name="beat_at", new_name="heartbeat_at"),
        migrations.AddField(
            model_name="scoringjob",
            name="worker",
            field=models.CharField(blank=True, help_text="host:pid of the process scoring it.", max_length=200),
        ),
    ]
