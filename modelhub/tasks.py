"""django-q2 entry points: one line of glue each.

(A connection a database restart broke while the worker was idle is replaced before the task's
first query: django-q2 closes old connections before each task, and CONN_HEALTH_CHECKS, set in
clsite/settings.py, makes Django test a kept one before using it.)"""
from .models import TrainingRun
from .retraining import execute, retrain_now


def scheduled_retraining() -> str:
    return retrain_now(trigger=TrainingRun.Trigger.SCHEDULE).status


def run_queued_retraining(run_id: int) -> str:
    return execute(TrainingRun.objects.get(pk=run_id)).status


def run_scoring_job(job_id: int, attempt: int | None = None) -> str:
    """One link of the scoring chain (modelhub.scoring): scores its job, then hands the next one over.
    (`attempt` is None only in a task queued before the chain existed.)"""
    from .scoring import run_task

    return run_task(job_id, attempt)
