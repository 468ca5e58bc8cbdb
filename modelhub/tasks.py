"""django-q2 entry points: one line of glue each (after a check of the worker's connection: a
database restart while the worker was idle must not fail the task on its first query, leaving
its run or job waiting for the watchdog)."""
from .jobs import reconnect_if_broken
from .models import TrainingRun
from .retraining import execute, retrain_now


def scheduled_retraining() -> str:
    reconnect_if_broken()
    return retrain_now(trigger=TrainingRun.Trigger.SCHEDULE).status


def run_queued_retraining(run_id: int) -> str:
    reconnect_if_broken()
    return execute(TrainingRun.objects.get(pk=run_id)).status


def run_scoring_job(job_id: int, attempt: int | None = None) -> str:
    """One link of the scoring chain (modelhub.scoring): scores its job, then hands the next one over.
    (`attempt` is None only in a task queued before the chain existed.)"""
    from .scoring import run_task

    reconnect_if_broken()
    return run_task(job_id, attempt)
