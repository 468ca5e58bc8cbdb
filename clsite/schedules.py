"""Every django-q2 Schedule row the system makes, owned by this one module.

The retraining schedule is the users': set from the Runs page and `schedule_retraining`, audited.
The system's own (SYSTEM) are the watchdog every minute (the worker's heartbeat, runs whose worker
died, alerts, mirrors) and the daily clean-up of old files, made again whenever they are missing
(ensure(), called by ops.repairs).
"""
import re
from datetime import datetime, timedelta

from croniter import CroniterError, croniter
from django.utils import timezone
from django_q.models import Schedule

# The retraining schedule, the users'.
NAME = "retraining"
TASK = "modelhub.tasks.scheduled_retraining"
# The week, by the short names people type and the names shown; cron numbers Monday 1 to Sunday 0.
WEEKDAYS = (("mon", "Monday"), ("tue", "Tuesday"), ("wed", "Wednesday"), ("thu", "Thursday"), ("fri", "Friday"),
            ("sat", "Saturday"), ("sun", "Sunday"))
DAYS = {key: (i + 1) % 7 for i, (key, _) in enumerate(WEEKDAYS)}
DAY_NAMES = {str(DAYS[key]): name for key, name in WEEKDAYS}
DEFAULT_CRON = "0 2 * * *"


class ScheduleError(ValueError):
    pass


def _time(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if not match:
        raise ScheduleError(f"{text!r} is not a time like 02:00 (24-hour HH:MM)")
    return int(match[1]), int(match[2])


def daily_cron(at: str) -> str:
    hour, minute = _time(at)
    return f"{minute} {hour} * * *"


def weekly_cron(day: str, at: str) -> str:
    key = day.strip().lower()[:3]
    if key not in DAYS:
        raise ScheduleError(f"{day!r} is not a day of the week (mon, tue, ... sun)")
    hour, minute = _time(at)
    return f"{minute} {hour} * * {DAYS[key]}"


def valid_cron(expression: str) -> str:
    expression = " ".join(expression.split())
    if not croniter.is_valid(expression) or len(expression.split()) != 5:
        raise ScheduleError(f"{expression!r} is not a five-field cron expression (minute hour day month weekday)")
    # Well-formed is not enough: "0 0 30 2 *" never comes, and croniter raises when asked for its
    # next run. Every date that exists comes within 8 years (29 February), so look that far only.
    try:
        croniter(expression, timezone.localtime(), max_years_between_matches=8).get_next(datetime)
    except CroniterError:
        raise ScheduleError(f"{expression!r} never runs: no date matches it (such as 30 February)") from None
    return expression


def set_cron(expression: str) -> Schedule:
    expression = valid_cron(expression)
    next_run = croniter(expression, timezone.localtime()).get_next(datetime)
    schedule, _ = Schedule.objects.update_or_create(
        name=NAME, defaults={"func": TASK, "schedule_type": Schedule.CRON, "cron": expression, "repeats": -1, "next_run": next_run},
    )
    return schedule


def turn_off() -> bool:
    deleted, _ = Schedule.objects.filter(name=NAME).delete()
    return bool(deleted)


def change(*, user, cron: str | None) -> Schedule | None:
    """Set the retraining schedule to a cron expression, or turn it off (None); audited.
    Every door (the Runs page, `schedule_retraining`) comes here."""
    from audit.services import record

    before = current()
    old = before.cron if before else None
    schedule = set_cron(cron) if cron is not None else (turn_off() and None)
    new = schedule.cron if schedule else None
    if new != old:
        record(actor=user, action="schedule.changed", target="retraining schedule",
               details={"old": in_words(old) if old else "off", "new": in_words(new) if new else "off", "cron": new})
    return schedule


def current() -> Schedule | None:
    return Schedule.objects.filter(name=NAME).first()


def day_of(weekday: str) -> str | None:
    """The short name of a cron weekday field that names one day ("1" -> "mon"; "0" and "7" are Sunday), else None."""
    if weekday == "7":
        weekday = "0"
    return next((key for key, number in DAYS.items() if str(number) == weekday), None)


def in_words(cron: str) -> str:
    """'0 2 * * *' -> 'daily at 02:00'; other expressions are shown as they are."""
    parts = cron.split()
    if len(parts) == 5 and parts[0].isdigit() and parts[1].isdigit() and parts[2:4] == ["*", "*"]:
        at = f"{int(parts[1]):02d}:{int(parts[0]):02d}"
        if parts[4] == "*":
            return f"daily at {at}"
        if parts[4] in DAY_NAMES:
            return f"every {DAY_NAMES[parts[4]]} at {at}"
    return f"cron {cron!r}"


def describe() -> str:
    schedule = current()
    if schedule is None:
        return "retraining schedule: off (retrain only on demand)"
    next_run = timezone.localtime(schedule.next_run)
    return f"retraining schedule: {in_words(schedule.cron)} {next_run:%Z} (next {next_run:%Y-%m-%d %H:%M})"


# The system's own schedules.
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
