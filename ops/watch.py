"""The watchdog: every minute, in the worker, the worker says it is alive and puts right what
needs no person (ops.repairs: runs whose worker died, lost runs, stale mirrors, missing
schedules; and a stopped scoring chain), then people are told what does (ops.alerts)."""
import logging

from django.utils import timezone

from modelhub import runs, scoring

from . import alerts, health, repairs
from .models import WorkerBeat

log = logging.getLogger("clsite.ops")


def beat() -> None:
    WorkerBeat.objects.update_or_create(worker=runs.worker_name(), defaults={"beat_at": timezone.now()})


def tick() -> dict:
    beat()
    repaired = repairs.repair()
    report = health.report()
    told = alerts.evaluate(report)
    # The scoring chain restarted if its task was lost or its worker died (modelhub.scoring).
    try:
        handed = scoring.kick()
    except Exception:
        log.exception("could not restart the scoring chain")
        handed = None
    return {"healthy": report.healthy, "failing": report.failing, "repaired": repaired, "alerts": told,
            "scoring_handed_over": handed}
