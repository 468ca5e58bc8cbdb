"""What every background job shares (a retraining run, a scoring job, any later kind): a worker
name, a heartbeat, how a dead one is told from a slow one, and a failure that tells the truth.

A job model has `status` (with Status.RUNNING), `heartbeat_at` and `worker` (host:pid). While
the job works, a thread of its own writes the heartbeat every HEARTBEAT_SECONDS, whatever the
work is doing; a job silent for STALE_AFTER, or whose process on this machine is gone, has lost
its worker and is failed by its kind's sweep (modelhub.runs.sweep, modelhub.scoring.sweep, run by
ops.repairs.repair() at a worker's start and every minute). Neither depends on how long the work
takes: CL_RUN_TIMEOUT_MINUTES (django-q2's timeout) bounds that.
"""
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Callable

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

log = logging.getLogger("clsite.modelhub")

HEARTBEAT_SECONDS = 5
STALE_AFTER = timedelta(seconds=60)
# How long a job's own error handler keeps trying to record its failure while the database is
# unreachable; after that its kind's sweep fails it (a run's sweep with the reason from the log).
OUTAGE_RETRY_SECONDS = 180
DATABASE_DOWN = (OperationalError, InterfaceError)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """`with Heartbeat(job):` a thread writes the running job's heartbeat_at every `every` seconds."""

    def __init__(self, job, every: float = HEARTBEAT_SECONDS):
        self.running = type(job).objects.filter(pk=job.pk, status=job.Status.RUNNING)
        self.name, self.every = f"{type(job).__name__} {job.pk}", every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat {self.name}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            while not self.stop.wait(self.every):
                try:
                    self.running.update(heartbeat_at=timezone.now())
                except Exception:  # a database away for a while must not end the beat: it resumes when it is back
                    log.warning("heartbeat of %s not written", self.name, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection


def is_dead(job, now) -> bool:
    """Has this running job lost its worker? Silent for STALE_AFTER, or its process on this machine is gone."""
    if job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER:
        return True
    host, _, pid = job.worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: only its silence tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True  # its process on this machine is gone
    except PermissionError:
        pass
    return False


def failure_reason(exc: BaseException) -> str:
    """The error to show for a job that failed on `exc`, on one line: a database or storage failure
    says so, so that nobody takes it for a bug in the job or for a dead worker."""
    cause = next((e for e in _chain(exc) if isinstance(e, DATABASE_DOWN)), None)
    if cause is not None:
        return f"the database failed or could not be reached ({_one_line(cause)})"
    cause = next((e for e in _chain(exc) if isinstance(e, OSError) and not isinstance(e, ConnectionError)), None)
    if cause is not None:
        return f"storage failed: a file could not be read or written ({_one_line(cause)})"
    return _one_line(exc)


def write_despite_outage(write: Callable[[], object], *, what: str, seconds: float = OUTAGE_RETRY_SECONDS) -> bool:
    """write(), tried again with a growing pause (1, 2, 4 ... 15 s) while the database is unreachable,
    for up to `seconds`. False when it never got through (logged); any other error is raised."""
    deadline, pause = time.monotonic() + seconds, 1.0
    while True:
        _fresh_connection()
        try:
            write()
            return True
        except DATABASE_DOWN as exc:
            if time.monotonic() + pause > deadline:
                log.error("%s: not recorded, the database is still unreachable after %.0f s (%s)", what, seconds, _one_line(exc))
                return False
            log.warning("%s: the database is unreachable (%s); trying again in %.0f s", what, _one_line(exc), pause)
        time.sleep(pause)
        pause = min(pause * 2, 15.0)


def _fresh_connection() -> None:
    # A connection the outage broke stays broken until closed; outside a transaction, close it
    # so the next query connects again.
    if not connection.in_atomic_block:
        try:
            close_old_connections()
        except DATABASE_DOWN:
            pass  # closing a broken connection may complain; it is closed all the same


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
