"""django-q2 entry points: one line of glue each."""
from .models import TrainingRun
from .retraining import execute, retrain_now


def scheduled_retraining() -> str:
    return retrain_now(trigger=TrainingRun.Trigger.SCHEDULE).status


def run_queued_retraining(run_id: int) -> str:
    return execute(TrainingRun.objects.get(pk=run_id)).status


def run_scoring_job(job_id: int) -> str:
    from .models import ScoringJob
    from .scoring import run

    return run(ScoringJob.objects.get(pk=job_id)).status
