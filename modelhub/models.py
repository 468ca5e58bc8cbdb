from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


SHARE = [MinValueValidator(0.0), MaxValueValidator(1.0)]
# A row whose positive-class probability is at least this is predicted positive, for a version
# trained before thresholds were chosen per version (ModelVersion.threshold).
DEFAULT_DECISION_THRESHOLD = 0.5


class ValidationPolicy(models.Model):
    """The gates a candidate must pass, and how each version's decision threshold is chosen; one row
    (pk=1), edited in the admin, every change audited. README: "How a candidate is judged"."""

    class Metric(models.TextChoices):
        AUC = "auc", "ROC AUC"
        PR_AUC = "pr_auc", "PR AUC (average precision)"
        ACCURACY = "accuracy", "Accuracy"
        BALANCED_ACCURACY = "balanced_accuracy", "Balanced accuracy"
        F1 = "f1", "F1"

    class ThresholdRule(models.TextChoices):
        MAX_F1 = "max_f1", "Maximise F1"
        EXPECTED_COST = "expected_cost", "Lowest expected cost"
        FIXED = "fixed", "Fixed value"

    primary_metric = models.CharField(max_length=20, choices=Metric.choices, default=Metric.AUC,
                                      help_text="What the candidate is judged by first: its minimum, its drop against the live model, the baseline.")
    min_primary = models.FloatField(null=True, blank=True, validators=SHARE, default=0.6,
                                    help_text="The candidate's primary metric on the holdout must be at least this (empty: no minimum).")
    max_primary_drop = models.FloatField(
        validators=SHARE, default=0.02,
        help_text="Live minus candidate primary metric, on the same held-out rows, at most this, unless the paired bootstrap "
        "interval of the difference includes zero (then the drop is not shown to be real).")
    min_accuracy = models.FloatField(validators=SHARE, default=0.70, help_text="The candidate's holdout accuracy must be at least this.")
    max_accuracy_drop = models.FloatField(validators=SHARE, default=0.05, help_text="Live accuracy minus candidate accuracy, on the same holdout, at most this.")
    max_drift = models.FloatField(
        validators=SHARE,
        default=0.15,
        help_text="Share of features that drifted, at most this. Past it, the candidate deploys only if it explains the change "
        "(better than the live model on the new rows by the interval, no worse on the older ones: 'adapted'); "
        "otherwise the batches wait for a person ('unexplained'). 1 switches the drift gate off.",
    )
    psi_threshold = models.FloatField(validators=[MinValueValidator(0.0)], default=0.2, help_text="A feature drifts when its PSI passes this (large samples).")
    drift_p_value = models.FloatField(validators=SHARE, default=0.05, help_text="A feature drifts when its test's FDR-adjusted p-value is below this (small samples).")
    min_auc = models.FloatField(null=True, blank=True, validators=SHARE, help_text="Optional: the candidate's ROC AUC must be at least this.")
    require_beats_baseline = models.BooleanField(
        default=True, help_text="The candidate's primary metric must beat a model with no skill (always the majority class; "
        "a random ranking for the AUCs).")
    max_label_collapse = models.FloatField(
        validators=SHARE,
        default=0.20,
        help_text="If the live model's accuracy on the new batches is this much below its holdout accuracy, "
        "the labels are suspect and the run waits for a person.",
    )
    threshold_rule = models.CharField(max_length=20, choices=ThresholdRule.choices, default=ThresholdRule.MAX_F1,
                                      help_text="How each new version's decision threshold is chosen, on out-of-fold predictions of its training rows.")
    false_positive_cost = models.FloatField(validators=[MinValueValidator(0.0)], default=1.0,
                                            help_text="Lowest expected cost: the cost of a false positive (for churn, a retention offer to a customer who would stay).")
    false_negative_cost = models.FloatField(validators=[MinValueValidator(0.0)], default=5.0,
                                            help_text="Lowest expected cost: the cost of a false negative (for churn, the value of a customer lost without an offer).")
    fixed_threshold = models.FloatField(validators=SHARE, default=DEFAULT_DECISION_THRESHOLD,
                                        help_text="Fixed value: the probability from which a row is predicted positive.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        verbose_name_plural = "validation policy"

    def __str__(self) -> str:
        return "Validation policy"

    @classmethod
    def get(cls) -> "ValidationPolicy":
        policy, _ = cls.objects.get_or_create(pk=1)
        return policy


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DEPLOYED = "deployed", "Deployed"
        REJECTED = "rejected", "Rejected"
        SKIPPED = "skipped", "Skipped (no new data)"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        INIT = "init", "Initial set-up"
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Manual (web)"
        CLI = "cli", "Command line"
        API = "api", "API"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When it was last handed to the worker.")
    enqueue_count = models.PositiveSmallIntegerField(default=0)
    force = models.BooleanField(default=False, help_text="Retrain even without new data.")
    new_batches = models.ManyToManyField(
        "ingestion.DataBatch", blank=True, related_name="training_runs",
        help_text="The staged batches this run trained on for the first time: merged if it deployed, held if it was rejected.",
    )
    live_version = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    candidate = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stages = models.JSONField(default=list, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    details = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("retrain_model", "Can start a retraining")]
        constraints = [
            # Two workers (or the schedule and a button) must never train at once: the second
            # insert or status change to running fails here, whatever the process.
            models.UniqueConstraint(fields=["status"], condition=Q(status="running"), name="one_running_retraining"),
            # Two requests at once (two clicks, the schedule and a button) make one queued run.
            models.UniqueConstraint(fields=["status"], condition=Q(status="queued"), name="one_queued_retraining"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        REJECTED = "rejected", "Rejected"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    major = models.PositiveIntegerField()
    minor = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    schema = models.ForeignKey("ingestion.DatasetSchema", on_delete=models.PROTECT)
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="versions")
    artifact = models.CharField(max_length=300, help_text="Name in the models storage.")
    sha256 = models.CharField(max_length=64)
    trained_at = models.DateTimeField()
    deployed_at = models.DateTimeField(null=True, blank=True)
    imported = models.BooleanField(default=False)
    estimator = models.CharField(max_length=200, blank=True)
    training_rows = models.PositiveIntegerField(default=0)
    holdout_rows = models.PositiveIntegerField(default=0)
    training_seconds = models.FloatField(default=0)
    trained_on = models.JSONField(default=list, blank=True, help_text="Ids of the batches in its training data.")
    metrics = models.JSONField(default=dict, blank=True)
    validation = models.JSONField(default=dict, blank=True)
    drift = models.JSONField(default=dict, blank=True)
    candidates = models.JSONField(default=list, blank=True, help_text="Every estimator tried, with its cross-validated score.")
    environment = models.JSONField(default=dict, blank=True)
    profile = models.JSONField(default=dict, blank=True, help_text=(
        "What its training rows held, per feature: the missing share and a number's range; a request "
        "that leaves out a feature never missing in training is refused, values out of range are flagged."))

    class Meta:
        ordering = ["-major", "-minor"]
        permissions = [
            ("deploy_modelversion", "Can deploy or roll back model versions"),
            ("batch_predict", "Can run batch predictions on a CSV"),
        ]
        # Covers figures.history_stamp, read on every page that shows the history.
        indexes = [models.Index(fields=["status", "deployed_at"], name="version_status_deployed")]
        constraints = [
            models.UniqueConstraint(fields=["major", "minor"], name="unique_version_number"),
            # Two concurrent deploys cannot both leave their version active.
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_version"),
        ]

    def __str__(self) -> str:
        return f"v{self.version}"

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def threshold(self) -> float:
        """The probability from which this version predicts the positive label: chosen when it was
        trained (modelhub.thresholds, kept in metrics["threshold"]); 0.5 for a version without one."""
        chosen = (self.metrics or {}).get("threshold")
        return float(chosen["value"]) if isinstance(chosen, dict) and chosen.get("value") is not None else DEFAULT_DECISION_THRESHOLD

    @property
    def primary_metric(self) -> str:
        """The metric its gates judged first; accuracy for a version trained before there was a choice."""
        return (self.metrics or {}).get("primary_metric", "accuracy")

    @property
    def file_stem(self) -> str:
        return f"model_v{self.major}_{self.minor}"

    @classmethod
    def parse(cls, version: str) -> tuple[int, int]:
        text = version.strip().lstrip("vV")
        try:
            major, minor = (int(part) for part in text.split("."))
        except ValueError:
            raise ValueError(f"{version!r} is not a version number like 1.2") from None
        return major, minor

    @classmethod
    def named(cls, name: str, versions=None) -> "ModelVersion":
        """The version called `name` ("1.2" or "v1.2"); ValueError for a name that is not a
        version number, DoesNotExist for one that names no version."""
        major, minor = cls.parse(name)
        return (versions if versions is not None else cls.objects).get(major=major, minor=minor)

    @classmethod
    def active(cls) -> "ModelVersion | None":
        return cls.objects.filter(status=cls.Status.ACTIVE).select_related("schema").first()


class Deployment(models.Model):
    """The ledger: every change of the active version, with who, when and why."""

    class Kind(models.TextChoices):
        INITIAL = "initial", "Initial"
        DEPLOY = "deploy", "Deploy after validation"
        FORCED = "forced", "Forced deploy"
        ROLLBACK = "rollback", "Rollback"

    created_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    from_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.TextField(blank=True)
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        source = f"v{self.from_version.version}" if self.from_version_id else "nothing"
        return f"{self.get_kind_display()}: {source} → v{self.to_version.version}"


class ScoringJob(models.Model):
    """A CSV scored by the worker in chunks, with its progress, and its result kept for a while."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Scoring"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired (result removed)"

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    original_name = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    input_path = models.CharField(max_length=300, blank=True, help_text="Relative to CL_HOME.")
    result_path = models.CharField(max_length=300, blank=True, help_text="Relative to CL_HOME.")
    rows_done = models.BigIntegerField(default=0)
    rows_estimate = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # The scoring chain (modelhub.scoring): the one job handed to the worker, how many times it
    # was handed over (the task carries that number; an older task finds it changed and does
    # nothing), when; and, as for a run (modelhub.jobs), the running job's heartbeat and worker.
    in_flight = models.BooleanField(default=False)
    dispatches = models.PositiveIntegerField(default=0)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process scoring it.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One scoring task in the worker's queue at a time, whatever the process that starts it.
            models.UniqueConstraint(fields=["in_flight"], condition=Q(in_flight=True), name="one_scoring_in_flight"),
        ]

    def __str__(self) -> str:
        return f"scoring {self.pk} ({self.original_name})"

    @property
    def progress(self) -> float:
        if self.status == self.Status.DONE:
            return 1.0
        return min(self.rows_done / self.rows_estimate, 0.99) if self.rows_estimate else 0.0

    @property
    def seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at and self.started_at else None

    @property
    def result_name(self) -> str:
        stem = self.original_name.rsplit(".", 1)[0] or "scored"
        return f"{stem}_predictions_v{self.version.version}.csv" if self.version_id else f"{stem}_predictions.csv"
