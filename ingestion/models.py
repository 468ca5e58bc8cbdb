from django.conf import settings
from django.db import models
from django.db.models import Q

from . import values


def default_missing_markers() -> list[str]:
    return values.marker_list(values.DEFAULT_MISSING_MARKERS)


class DatasetSchema(models.Model):
    """The contract every upload is checked against, learned from the first dataset.

    `features` is a list of {"name", "kind": "numeric"|"categorical", "categories": [...]}
    in the order of the first file. `major` is the model version's major number.
    `missing_markers` are the values that mean "no value" in this dataset's files (the empty
    string always, NA, N/A, ... as set at init_cl_system), compared trimmed and case-insensitively.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    major = models.PositiveIntegerField(unique=True)
    target = models.CharField(max_length=200)
    positive_label = models.CharField(max_length=200)
    negative_label = models.CharField(max_length=200)
    id_column = models.CharField(max_length=200, blank=True)
    features = models.JSONField()
    missing_markers = models.JSONField(
        default=default_missing_markers, blank=True,
        help_text="Values that mean 'no value' in an upload (compared trimmed, in any case); the empty string always does.",
    )

    class Meta:
        ordering = ["-major"]

    def __str__(self) -> str:
        return f"schema {self.major} (target {self.target})"

    @classmethod
    def current(cls) -> "DatasetSchema | None":
        return cls.objects.order_by("-major").first()

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f["name"] for f in self.features if f["kind"] == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f["name"] for f in self.features if f["kind"] == "categorical"]

    @property
    def columns(self) -> list[str]:
        """The header a file must have, in the order of the template."""
        head = [self.id_column] if self.id_column else []
        return head + self.feature_names + [self.target]

    @property
    def markers(self) -> frozenset[str]:
        """The missing-value markers as compared (values.marker_set): what every door reads as missing."""
        return values.marker_set(self.missing_markers)

    @property
    def labels(self) -> list[str]:
        return [self.negative_label, self.positive_label]


class DataBatch(models.Model):
    """One uploaded file, stored byte for byte, and where it stands in its life cycle."""

    class Status(models.TextChoices):
        STAGED = "staged", "Staged"
        MERGED = "merged", "Merged"
        REJECTED = "rejected", "Rejected"
        HELD = "held", "Held"
        DISCARDED = "discarded", "Discarded"

    class Source(models.TextChoices):
        WEB = "web", "Web upload"
        CLI = "cli", "Command line"
        INIT = "init", "Initial dataset"

    original_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.BigIntegerField()
    rows = models.BigIntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, db_index=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    schema = models.ForeignKey(DatasetSchema, null=True, blank=True, on_delete=models.PROTECT)
    # Relative to CL_HOME: the raw file (data/new, data/archive or data/quarantine) and,
    # for accepted files, the validated rows as Parquet.
    raw_path = models.CharField(max_length=500, blank=True)
    parquet_path = models.CharField(max_length=500, blank=True)
    report = models.JSONField(default=dict, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        verbose_name_plural = "data batches"
        permissions = [
            ("upload_data", "Can upload data"),
            ("manage_batches", "Can release or discard held and rejected data"),
        ]
        constraints = [
            # The same bytes twice is a duplicate, unless the first copy was discarded.
            models.UniqueConstraint(fields=["sha256"], condition=~Q(status="discarded") & ~Q(sha256=""), name="one_live_copy_per_file"),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.original_name})"

    @property
    def errors(self) -> list[dict]:
        return self.report.get("errors", [])

    @property
    def warnings(self) -> list[dict]:
        return self.report.get("warnings", [])


class MasterPartition(models.Model):
    """One Parquet file of the master dataset; the master is the union of these, oldest first."""

    batch = models.OneToOneField(DataBatch, on_delete=models.PROTECT, related_name="partition")
    path = models.CharField(max_length=500)
    rows = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.path


class MasterSummary(models.Model):
    """The master dataset as pages and `data_stats` show it: its rows once newer rows have
    replaced older ones with the same id, their class balance and column summaries.

    One row (pk=1), rewritten in the transaction of every merge, so pages read one row
    instead of combining every batch's statistics.
    """

    rows = models.BigIntegerField(default=0)
    replaced_rows = models.BigIntegerField(default=0, help_text="Rows of the partitions that newer rows with the same id replaced.")
    stats = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "master summary"

    def __str__(self) -> str:
        return f"master dataset: {self.rows:,} rows"
