"""The system's own periodic tasks, owned here and made again whenever they are missing.

The retraining schedule is the users' (modelhub.schedule); these are the system's: the watchdog
every minute (the worker's heartbeat, runs whose worker died, alerts, mirrors) and the daily
clean-up of old files.
"""
from datetime import timedelta

from django.utils import timezone
from django_q.models import Schedule

SYSTEM = {
    "watchdog": {"func": "ops.tasks.watchdog", "schedule_type": Schedule.MINUTES, "minutes": 1},
    "cleanup": {"func": "ops.tasks.cleanup", "schedule_type": Schedule.CRON, "cron": "30 3 * * *"},
}


def ensure() -> list[str]:
    """Create the system schedules that are missing; returns their names. Re-runnable."""
    made = []
    for name, fields in SYSTEM.items():
        if not Schedule.objects.filter(name=name).exists():
            Schedule.objects.create(name=name, repeats=-1, next_run=timezone.now() + timedelta(seconds=5), **fields)
            made.append(name)
        # Schedule names are not unique in the database: two processes starting at once may
        # both have made one. The oldest stays.
        extra = Schedule.objects.filter(name=name).order_by("pk").values_list("pk", flat=True)[1:]
        Schedule.objects.filter(pk__in=list(extra)).delete()
    return made
