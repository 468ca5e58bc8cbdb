"""Receiving files: streamed to disk in chunks, hashed on the way, cut off past the size limit."""
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

from clsite import home

CHUNK = 1 << 20


class UploadTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the file is larger than the upload limit of {human_bytes(limit)}")
        self.size, self.limit = size, limit


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} GB"


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's temporary-file handler, stopping the upload once it passes CL_UPLOAD_MAX_BYTES."""

    def new_file(self, *args, **kwargs):
        home.path("tmp").mkdir(parents=True, exist_ok=True)
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.CL_UPLOAD_MAX_BYTES:
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)


def new_upload_path() -> Path:
    target = home.path("tmp", f"upload-{uuid.uuid4().hex}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def store_stream(source: BinaryIO, target: Path, *, observe: Callable[[bytes], None] | None = None) -> tuple[str, int]:
    """Copy `source` to `target` in chunks; returns the copy's sha256 and size.

    Each chunk is handed to `observe` once it is in the copy, so a reader of the copy sees
    every byte observed so far.
    """
    limit = settings.CL_UPLOAD_MAX_BYTES
    digest, size = hashlib.sha256(), 0
    try:
        # hashlib lets go of the GIL on large chunks, so each chunk is hashed on a second
        # thread while the next one is read, written and observed.
        with open(target, "wb") as out, ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
            hashing = None
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(size, limit)
                if hashing is not None:
                    hashing.result()
                hashing = hasher.submit(digest.update, chunk)
                out.write(chunk)
                if observe is not None:
                    out.flush()
                    observe(chunk)
            if hashing is not None:
                hashing.result()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size
