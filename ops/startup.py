"""Put right at start-up what a crash or a hand may have left wrong: runs of a killed worker,
stale mirror files, missing system schedules. Never stops a process from starting."""
import logging

from django.db import DatabaseError, close_old_connections

log = logging.getLogger("clsite.ops")


def repair() -> None:
    from . import health

    try:
        done = health.report(repair=True).repaired
        if any(done.get(key) for key in ("mirrors", "schedules")) or any((done.get("runs") or {}).values()):
            log.warning("repaired at start-up: %s", done)
    except DatabaseError:
        log.warning("start-up repair skipped: the database is not ready (run `manage.py migrate`)", exc_info=True)
    except Exception:
        log.exception("start-up repair failed; `manage.py health --repair` tries again")
    finally:
        close_old_connections()


def on_worker_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's post_spawn: a new worker process, after a start or after one was killed."""
    from . import watch

    repair()
    try:
        watch.beat()
    except DatabaseError:
        log.warning("worker heartbeat not written at start", exc_info=True)
