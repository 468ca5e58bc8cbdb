from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0002_initial"),
    ]

    operations = [
        migrations.RemoveField(model_name="databatch", name="run"),
        migrations.CreateModel(
            name="MasterSummary",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("rows", models.BigIntegerField(default=0)),
                ("replaced_rows", models.BigIntegerField(default=0, help_text="Rows of the partitions that newer rows with the same id replaced.")),
                ("stats", models.JSONField(blank=True, default=dict)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"verbose_name_plural": "master summary"},
        ),
    ]
