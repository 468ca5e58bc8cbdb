import time

from ingestion.management.base import InitialisedCommand
from modelhub import runs
from modelhub.models import TrainingRun
from modelhub.retraining import retrain_now

EXIT = {TrainingRun.Status.DEPLOYED: 0, TrainingRun.Status.SKIPPED: 0, TrainingRun.Status.REJECTED: 3}
WAIT_SECONDS = 1


class Command(InitialisedCommand):
    help = ("Run the retraining pipeline now (or wait for the one already running). "
            "Exit 0 deployed or skipped (no new data), 3 rejected, 1 failed.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="retrain even when no new data is staged")

    def handle(self, *args, **options):
        run = retrain_now(trigger=TrainingRun.Trigger.CLI, force=options["force"])
        if run.status == TrainingRun.Status.RUNNING:
            self.stdout.write(f"run {run.pk} is already running; waiting for it to end (Ctrl-C stops waiting, not the run)")
            run = wait_for(run)
        report_run(self, run)
        code = EXIT.get(run.status, 1)
        if code:
            raise SystemExit(code)


def wait_for(run: TrainingRun) -> TrainingRun:
    while run.status in runs.PENDING:
        time.sleep(WAIT_SECONDS)
        runs.sweep()  # a run whose worker dies meanwhile is failed, and the wait ends
        run.refresh_from_db()
    return run


def report_run(command, run: TrainingRun) -> None:
    for stage in run.stages:
        command.stdout.write(f"  {stage['stage']:<9} {stage['seconds']:>8.2f}s  {stage['detail']}")
    if run.status == TrainingRun.Status.DEPLOYED:
        command.stdout.write(command.style.SUCCESS(f"run {run.pk}: deployed v{run.candidate.version}"))
    elif run.status == TrainingRun.Status.SKIPPED:
        command.stdout.write(f"run {run.pk}: skipped: {'; '.join(run.reasons)}")
    elif run.status == TrainingRun.Status.REJECTED:
        command.stderr.write(f"run {run.pk}: candidate v{run.candidate.version} rejected; its new batches are held:")
        for reason in run.reasons:
            command.stderr.write(f"  - {reason}")
    else:
        command.stderr.write(f"run {run.pk}: failed: {run.error}")
