from django.db import migrations, models


def copy_batch_runs(apps, schema_editor):
    """Each batch named the run that last merged or held it; that run now lists it among its new batches."""
    DataBatch = apps.get_model("ingestion", "DataBatch")
    TrainingRun = apps.get_model("modelhub", "TrainingRun")
    for batch in DataBatch.objects.exclude(run=None).only("pk", "run_id"):
        TrainingRun.objects.get(pk=batch.run_id).new_batches.add(batch.pk)


def keep_one_queued_run(apps, schema_editor):
    """Before requests were coalesced, two clicks made two queued runs: the newest stays queued."""
    TrainingRun = apps.get_model("modelhub", "TrainingRun")
    queued = list(TrainingRun.objects.filter(status="queued").order_by("-pk").values_list("pk", flat=True))
    TrainingRun.objects.filter(pk__in=queued[1:]).update(status="failed", error="replaced by a later request for a retraining")


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0002_initial"),
        ("modelhub", "0002_policy_ranges"),
    ]
    # The batches' own link to their run goes once it has been copied here.
    run_before = [("ingestion", "0003_master_summary_no_run")]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="new_batches",
            field=models.ManyToManyField(
                blank=True, related_name="training_runs", to="ingestion.databatch",
                help_text="The staged batches this run trained on for the first time: merged if it deployed, held if it was rejected.",
            ),
        ),
        migrations.RunPython(copy_batch_runs, migrations.RunPython.noop),
        migrations.RemoveField(model_name="trainingrun", name="override_reason"),
        migrations.AddField(model_name="trainingrun", name="worker",
                            field=models.CharField(blank=True, help_text="host:pid of the process running it.", max_length=200)),
        migrations.AddField(model_name="trainingrun", name="enqueued_at",
                            field=models.DateTimeField(blank=True, help_text="When it was last handed to the worker.", null=True)),
        migrations.AddField(model_name="trainingrun", name="enqueue_count", field=models.PositiveSmallIntegerField(default=0)),
        migrations.AlterField(model_name="trainingrun", name="trigger", field=models.CharField(
            choices=[("init", "Initial set-up"), ("schedule", "Schedule"), ("manual", "Manual (web)"), ("cli", "Command line"),
                     ("api", "API")], max_length=10)),
        migrations.RunPython(keep_one_queued_run, migrations.RunPython.noop),
        migrations.AddConstraint(model_name="trainingrun", constraint=models.UniqueConstraint(
            condition=models.Q(("status", "queued")), fields=("status",), name="one_queued_retraining")),
    ]
