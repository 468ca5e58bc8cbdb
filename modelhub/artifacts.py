"""Model files: written through the "models" storage with their sha256, verified before loading.

joblib files can run code when loaded, so the app loads only files it wrote itself and whose
bytes still match the sha256 the database holds.
"""
import hashlib
import io

import joblib
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from clsite import space


class ArtifactError(Exception):
    """The model file is missing, altered or unreadable; the message says which."""


def storage():
    return storages["models"]


def dump(model) -> bytes:
    """The fitted model as the bytes of a joblib file."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    return buffer.getvalue()


def require_room(data: bytes) -> None:
    """NoSpace before anything is written, when the models folder cannot hold `data` (a filesystem storage)."""
    location = getattr(storage(), "location", None)
    if location:
        space.require(location, len(data))


def write(data: bytes, name: str) -> str:
    """Write joblib bytes as `name` (replacing any file of that name); returns their sha256.
    NoSpace, and no partial file, when the disk fills meanwhile."""
    store = storage()
    if store.exists(name):
        store.delete(name)
    try:
        saved = store.save(name, ContentFile(data))
    except OSError as exc:
        if not space.is_full(exc):
            raise
        store.delete(name)
        raise space.refused(getattr(store, "location", "the models storage"), len(data)) from exc
    if saved != name:
        raise ArtifactError(f"the models storage saved {name!r} as {saved!r}")
    return hashlib.sha256(data).hexdigest()


def read_verified(name: str, sha256: str) -> bytes:
    store = storage()
    if not store.exists(name):
        raise ArtifactError(f"the model file {name} is missing from the models storage")
    with store.open(name, "rb") as fh:
        data = fh.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactError(f"the model file {name} has been altered (sha256 {actual[:12]}…, expected {sha256[:12]}…); refusing to load it")
    return data


def load(name: str, sha256: str):
    data = read_verified(name, sha256)
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # a verified file that does not unpickle: wrong library versions
        raise ArtifactError(f"the model file {name} could not be loaded: {exc}") from exc
