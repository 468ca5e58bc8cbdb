"""The runtime tree under CL_HOME, and the one way we write files people read."""
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

# The folders the data and model files need. The mirror folders (models/active,
# models/metadata) are made by the code that writes them, which also copes with their being in
# the way, so that a broken mirror never stops an upload or a run.
LAYOUT = (
    "data/new",
    "data/training",
    "data/archive",
    "data/quarantine",
    "models/versions",
    "logs",
    "tmp",
)


def home() -> Path:
    return Path(settings.CL_HOME)


def path(*parts: str) -> Path:
    return home().joinpath(*parts)


def ensure_layout() -> None:
    for folder in LAYOUT:
        path(folder).mkdir(parents=True, exist_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and os.replace, so readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only (0600), as everything under CL_HOME: people and scripts read mirrors as its owner.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(target: Path, data: Any) -> None:
    atomic_write_bytes(target, json.dumps(data, indent=2, sort_keys=True, default=str).encode() + b"\n")
