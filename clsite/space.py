"""Out of disk space is a message, not a traceback: the one rule for every door that writes.

A write that does not fit raises NoSpace, which names the folder, what was needed and what is
free. `require` refuses before writing when the size is known; `guard` turns the system's
"no space left" (ENOSPC, or EDQUOT for a quota), met halfway through a write, into the same
answer after removing the partial files, so nothing is left half-written. Each door catches
NoSpace and says it its own way (a form error, a 507, one line on stderr, a failed job or run).

Every refusal made outside a transaction is kept as an audit row (REFUSED); the disk health
check reads the latest one, so the watchdog's alerts tell the ML engineers (ops.alerts). A
refusal inside a transaction is rolled back with the act, and the door's own answer tells it.
"""
import errno
import io
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("clsite.ops")

FULL = (errno.ENOSPC, errno.EDQUOT)
REFUSED = "disk.refused"  # the audit action of a refused write


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} GB"


class NoSpace(OSError):
    """A write refused for lack of disk space; nothing of it was kept. An OSError (a storage
    failure to whoever handles those) without an errno, so that no guard takes it for the raw one."""

    def __init__(self, folder: Path | str, needed: int, free: int):
        self.folder, self.needed, self.free = str(folder), int(needed), int(free)
        super().__init__(f"not enough free space under {self.folder}: {human_bytes(self.needed)} needed, "
                         f"{human_bytes(self.free)} free")


def free_under(folder: Path | str) -> int:
    """Free bytes on the filesystem that holds `folder` (or its nearest existing parent)."""
    place = Path(folder)
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL


def require(folder: Path | str, needed: int) -> None:
    """NoSpace now, before anything is written, when `needed` bytes do not fit under `folder`."""
    free = free_under(folder)
    if needed > free:
        raise _kept(NoSpace(folder, needed, free))


@contextmanager
def guard(folder: Path | str, *, needed: int, partial: Iterable[Path] = ()) -> Iterator[None]:
    """Run a write under `folder`; if the disk fills meanwhile, remove the `partial` files and raise NoSpace."""
    try:
        yield
    except OSError as exc:
        if not is_full(exc):
            raise
        for path in partial:
            Path(path).unlink(missing_ok=True)
        raise refused(folder, needed) from exc


def refused(folder: Path | str, needed: int) -> NoSpace:
    """The NoSpace for a write under `folder` that met a full disk (the caller removed its partial file)."""
    return _kept(NoSpace(folder, needed, free_under(folder)))


def size_of(source) -> int | None:
    """The size of an open file (or of what is left to read of it), when it can be known without reading it."""
    try:
        return max(os.fstat(source.fileno()).st_size - source.tell(), 0)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _kept(exc: NoSpace) -> NoSpace:
    """Keep the refusal where the disk health check finds it, when the database can take it now."""
    from django.db import DatabaseError, transaction

    from audit.services import record

    log.info("refused a write: %s", exc)  # the door says it (and the web log has the 507)
    if transaction.get_connection().in_atomic_block:
        return exc  # would be rolled back with the act
    try:
        record(actor=None, action=REFUSED, target=exc.folder[:200], details={"needed": exc.needed, "free": exc.free})
    except DatabaseError:
        log.warning("could not record the refused write", exc_info=True)
    return exc
