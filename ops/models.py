from django.db import models


class WorkerBeat(models.Model):
    """The last time a worker process ran the watchdog task: proof that the worker and its
    scheduler are alive. One row per worker process (host:pid)."""

    worker = models.CharField(max_length=200, unique=True)
    beat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.worker} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class Alert(models.Model):
    """A problem people were told about: one mail when it opens, none while it lasts, and
    another only if it comes back after it was solved."""

    key = models.CharField(max_length=100, unique=True, help_text="What the problem is, e.g. run-failed-12 or worker-silent.")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    link = models.CharField(max_length=300, blank=True)
    opened_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_to = models.JSONField(default=list, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return self.subject
