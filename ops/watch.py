"""The watchdog: every minute, in the worker, the worker says it is alive and puts right what
needs no person (runs whose worker died, lost runs, stale mirrors, missing schedules), then
people are told what does."""
import logging

from django.utils import timezone

from modelhub import runs

from . import alerts, health
from .models import WorkerBeat

log = logging.getLogger("clsite.ops")


def beat() -> None:
    WorkerBeat.objects.update_or_create(worker=runs.worker_name(), defaults={"beat_at": timezone.now()})


def tick() -> dict:
    beat()
    report = health.report(repair=True)
    told = alerts.evaluate(report)
    return {"healthy": report.healthy, "failing": report.failing, "repaired": report.repaired, "alerts": told}
