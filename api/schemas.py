"""What the API takes and gives, as plain pydantic models (cheaper per call than ninja.Schema)."""
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from modelhub.inputs import MAX_ROWS

MAX_LIMIT = 1000  # versions per page of GET /models
MAX_OFFSET = 1_000_000_000
MAX_ID = 2**63 - 1  # the largest id the database stores

Value = str | float | int | bool | None


class PredictIn(BaseModel):
    rows: list[dict[str, Value]] = Field(
        min_length=1, max_length=MAX_ROWS,
        description=f"1 to {MAX_ROWS:,} rows, each {{feature: value}}: numbers as JSON numbers or text, categories as "
                    "text; null, \"\" or a missing-value marker (NA, N/A, NaN, null, None) is a missing value. A feature "
                    "left out is missing, which is refused (400) for a feature the model never saw missing in training.",
    )


# The body is read by api.rows (bounded, orjson), so ninja is told its schema here.
PREDICT_BODY = {"required": True, "content": {"application/json": {"schema": PredictIn.model_json_schema()}}}


class RowWarning(BaseModel):
    field: str
    message: str


class Prediction(BaseModel):
    probability: float = Field(description="Probability of the positive label (calibrated when the version is).")
    label: str = Field(description="The positive label when the probability is at least the version's decision threshold "
                                   "(GET /models/{version}: threshold), else the negative one.")
    warnings: list[RowWarning] = Field(description="What to read the answer with: a category the model has not seen, "
                                                "a number outside the range of its training data.")


class PredictOut(BaseModel):
    version: str
    predictions: list[Prediction]


class Problem(BaseModel):
    row: int | None = None
    field: str | None = None
    message: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[Problem] = []


class Gate(BaseModel):
    name: str
    label: str
    value: float | None
    threshold: float | None
    comparison: str
    passed: bool
    note: str = ""


class VersionSummary(BaseModel):
    version: str
    status: str
    estimator: str
    trained_at: datetime
    deployed_at: datetime | None
    accuracy: float | None
    auc: float | None


class VersionDetail(VersionSummary):
    imported: bool
    training_rows: int
    holdout_rows: int
    metrics: dict[str, Any]
    gates: list[Gate]
    validation_passed: bool | None
    drifted_features: list[str]
    run: int | None
    threshold: float = Field(description="The probability from which this version predicts the positive label")
    primary_metric: str = Field(description="The metric its gates judged first (auc, pr_auc, accuracy, balanced_accuracy, f1)")
    drift_decision: dict[str, Any] | None = Field(None, description="When the new data drifted past the policy's maximum: "
                                                  "case adapted (deployed) or unexplained (held), with the evidence")


class BatchOut(BaseModel):
    id: int
    status: str
    rows: int
    summary: str
    errors: list[dict[str, Any]]
    error_count: int
    warnings: list[dict[str, Any]]


class RunOut(BaseModel):
    id: int
    status: str
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    candidate: str | None
    live_version: str | None
    stages: list[dict[str, Any]]
    reasons: list[str]
    error: str


class ActivateIn(BaseModel):
    reason: str = Field("", max_length=500, description="Why; required to deploy a version the gates rejected")


class Activated(BaseModel):
    version: str
    kind: str = Field(description="rollback, or forced for a rejected version")
    replaced: str | None
    reason: str


class RunRequested(BaseModel):
    run: RunOut
    created: bool = Field(description="False: a run was already queued or running, and this request joined it.")
    waiting_for_broker: bool = Field(description="True: the run is queued but the task broker (Redis) does not answer; "
                                                 "it is handed to the worker as soon as the broker answers again.")
    message: str


class ScoringOut(BaseModel):
    id: int
    status: str
    rows_done: int
    rows_estimate: int
    progress: float
    version: str | None
    error: str
    result: str | None = Field(description="Where to download the scored CSV, once done.")
    expires_at: datetime | None
