"""What runs when a django-q2 worker process starts (connected to `post_spawn` in ops.apps).

The web process does nothing at its start: `make run` runs `manage.py health --repair` before
it serves, and the watchdog repairs every minute (ops.repairs). Never stops a worker from starting.
"""
import logging

from django.db import DatabaseError, close_old_connections

log = logging.getLogger("clsite.ops")


def on_worker_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's post_spawn: a new worker process, after a start or after one was killed.

    It repairs at once (ops.repairs.repair) so the runs a killed predecessor left running are
    failed and their data handed to the next run without waiting for the watchdog, then says it
    is alive."""
    from . import repairs, watch

    try:
        done = repairs.anything_done(repairs.repair())
        if done:
            log.warning("repaired at worker start: %s", done)
    except DatabaseError:
        log.warning("worker start-up repair skipped: the database is not ready (run `manage.py migrate`)", exc_info=True)
    except Exception:
        log.exception("worker start-up repair failed; the watchdog tries again within a minute")
    try:
        watch.beat()
    except DatabaseError:
        log.warning("worker heartbeat not written at start", exc_info=True)
    finally:
        close_old_connections()
