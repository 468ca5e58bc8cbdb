"""Upload files that no batch names: what a crash leaves in the instant between an upload's files
being renamed into place and its row being committed (ingestion.services._record_batch), or in
the middle of an upload (its temporary files).

The repair (ops.repairs, at start-up and every minute) moves them to data/quarantine/orphans,
where nothing reads them as data; `cleanup` lists them there and removes them after
CL_KEEP_QUARANTINE_DAYS (ops.retention). Files younger than AFTER are never touched: they may
belong to an upload in progress.
"""
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

from clsite import home

from .models import DataBatch

log = logging.getLogger("clsite.ops")

FOLDER = "data/quarantine/orphans"
WATCHED = ("data/new", "data/quarantine")  # their top level: only batches' files live there
UPLOAD_TEMPORARY = "upload-*"  # in tmp: ingestion.uploads.new_upload_path and its .parquet/.report.json
# A renamed upload file is touched as it gets its row, and an upload writes its temporary files
# as it goes (ingesting 1 GB takes well under a minute), so ten quiet minutes mean a crash.
AFTER = timedelta(minutes=10)


def found(*, now: float | None = None) -> list[Path]:
    """The orphan files, oldest first: upload files under WATCHED and tmp older than AFTER that no batch names."""
    cutoff = (time.time() if now is None else now) - AFTER.total_seconds()
    old = [path for path, mtime in _candidates() if mtime < cutoff]
    if not old:
        return []
    # Read after the listing: a batch committed meanwhile names its files here.
    named = _named()
    return [path for path in old if path.name not in named]


def quarantine(*, now: float | None = None) -> list[str]:
    """Move the orphan files to FOLDER; returns their old paths (relative to CL_HOME)."""
    moved = []
    target_folder = home.path(FOLDER)
    for path in found(now=now):
        target_folder.mkdir(parents=True, exist_ok=True)
        target = target_folder / path.name
        if target.exists():
            target = target_folder / f"{path.name}.{int(time.time())}"
        try:
            os.utime(path)  # its time in quarantine counts from now (retention)
            path.replace(target)
        except FileNotFoundError:
            continue  # removed meanwhile (an upload's own clean-up)
        moved.append(str(path.relative_to(home.home())))
    if moved:
        log.warning("quarantined %d upload file(s) no batch names (left by a crash) in %s: %s", len(moved), FOLDER, ", ".join(moved))
    return moved


def quarantined() -> list[tuple[str, int, float]]:
    """The files in FOLDER: (path relative to CL_HOME, size, mtime), oldest first."""
    folder = home.path(FOLDER)
    kept = []
    for path in folder.iterdir() if folder.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            kept.append((str(path.relative_to(home.home())), stat.st_size, stat.st_mtime))
    return sorted(kept, key=lambda item: item[2])


def _candidates() -> list[tuple[Path, float]]:
    files = [path for folder in WATCHED if home.path(folder).is_dir() for path in home.path(folder).iterdir()]
    tmp = home.path("tmp")
    uploads = list(tmp.glob(UPLOAD_TEMPORARY)) if tmp.is_dir() else []
    mtimes = {path: _mtime(path) for path in files + uploads}
    # An upload's temporary files are one upload (its raw copy is only read while its Parquet is
    # written): each counts as old as the newest of them.
    newest: dict[str, float] = {}
    for path in uploads:
        if mtimes[path] is not None:
            upload = path.name.split(".")[0]
            newest[upload] = max(newest.get(upload, 0.0), mtimes[path])
    for path in uploads:
        if mtimes[path] is not None:
            mtimes[path] = newest[path.name.split(".")[0]]
    return sorted(((path, mtime) for path, mtime in mtimes.items() if mtime is not None and path.is_file()), key=lambda item: item[1])


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _named() -> set[str]:
    """The file names any batch names. Names, not paths: a batch's raw file keeps its name when it
    moves between data/new, data/quarantine and data/archive, and names carry the file's sha256."""
    names = set()
    for raw, parquet in DataBatch.objects.values_list("raw_path", "parquet_path").iterator():
        if raw:
            names.update((Path(raw).name, Path(raw).name + ".report.json"))
        if parquet:
            names.add(Path(parquet).name)
    return names
