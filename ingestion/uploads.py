"""Receiving files: streamed to disk in chunks, hashed on the way, cut off past the size limit."""
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.urls import Resolver404, resolve

from clsite import home, space
# Imported from here by the pages and reports that show sizes.
from clsite.space import NoSpace, human_bytes  # noqa: F401

CHUNK = 1 << 20


class UploadTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the file is larger than the upload limit of {human_bytes(limit)}")
        self.size, self.limit = size, limit


def accepts_upload(permission: str):
    """A page view that takes an uploaded file from users holding `permission`, and refuses
    anyone else (403). The one place a page door's permission is written: the view checks it,
    and the upload handler and the web server's front read it (may_upload) before the body."""
    def decorate(view):
        return mark_upload(permission_required(permission, raise_exception=True)(view), permission)
    return decorate


def mark_upload(view, permission: str):
    """Record that `view` takes a file from holders of `permission`, where may_upload and
    upload_paths look. accepts_upload does it for pages; api.urls for the API operations that
    take a file, with the permission their token check holds."""
    view.upload_permission = permission
    return view


class GuardedUploadHandler(TemporaryFileUploadHandler):
    """Django's temporary-file handler, guarded so that nothing is written for a request that
    will be refused anyway.

    Decided before the body is read, from the user and the page: a file sent to a page that
    takes none, or by someone anonymous or without that page's upload permission, is never
    written, and the connection is dropped at its first byte (the form fields before it are read
    as usual, so the CSRF and login checks refuse the request as they would any other). While an
    allowed upload is read: one file per request, and a file (or a whole request) past
    CL_UPLOAD_MAX_BYTES stops being written and the rest of the body is dropped; the view says
    why (request.upload_refused). Django deletes a temporary file when the request ends.
    """

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.files = 0
        self.request_length = content_length  # (content_length is the base class's, per file)
        self.allowed = self._allowed()
        if not self.allowed:
            self.request.upload_refused = "This page takes no file from you."
        elif content_length > settings.CL_UPLOAD_MAX_BYTES + settings.CL_REQUEST_OVERHEAD_BYTES:
            self.request.upload_refused = too_large_message()

    def new_file(self, *args, **kwargs):
        self.files += 1
        if self.files > 1:
            self.request.upload_refused = "Send one file per upload."
        if getattr(self.request, "upload_refused", None):
            # Allowed users get the page that says why; anyone else gets nothing more read.
            raise StopUpload(connection_reset=not self.allowed)
        home.path("tmp").mkdir(parents=True, exist_ok=True)
        self.received = 0
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.CL_UPLOAD_MAX_BYTES:
            self.request.upload_refused = too_large_message()
            raise StopUpload(connection_reset=False)
        try:
            return super().receive_data_chunk(raw_data, start)
        except OSError as exc:
            self._out_of_space(exc)

    def file_complete(self, file_size):
        try:
            return super().file_complete(file_size)  # flushes the last chunks
        except OSError as exc:
            self._out_of_space(exc)

    def _out_of_space(self, exc: OSError):
        """The temporary folder is full: drop the partial file and refuse the upload with the sizes
        (request.upload_no_space, for doors that answer it apart from other refusals)."""
        if not space.is_full(exc):
            raise exc
        try:
            self.file.close()  # a temporary file: closing removes it
        except OSError:
            pass
        refused = space.refused(settings.FILE_UPLOAD_TEMP_DIR, max(self.request_length or 0, self.received))
        self.request.upload_no_space = refused
        self.request.upload_refused = f"{str(refused)[:1].upper()}{str(refused)[1:]}."
        raise StopUpload(connection_reset=False)

    def _allowed(self) -> bool:
        return may_upload(self.request.path_info, getattr(self.request, "user", None))


def may_upload(path: str, user) -> bool:
    """Whether `user` may send a file to `path`: the page or API call takes one (mark_upload)
    and the user holds its permission. The upload handler and the web server's front (clsite.gate,
    before it reads a body) both ask this."""
    try:
        view = resolve(path).func
    except Resolver404:
        return False
    permission = getattr(view, "upload_permission", None)
    return bool(permission and user is not None and user.is_authenticated and user.has_perm(permission))


def upload_paths() -> list[str]:
    """Every address that takes a file (mark_upload): the web server's front gives these alone
    its large body limit, and asks clsite.gate before it reads their bodies."""
    from django.urls import URLPattern, get_resolver

    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLPattern):
                if getattr(pattern.callback, "upload_permission", None):
                    found.append("/" + route.lstrip("^").rstrip("$"))
            else:
                walk(pattern.url_patterns, route)

    walk(get_resolver().url_patterns, "")
    return sorted(found)


def too_large_message() -> str:
    return f"The file is over the upload limit of {human_bytes(settings.CL_UPLOAD_MAX_BYTES)}; split it into smaller files."


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
    known = space.size_of(source)
    try:
        if known is not None:
            space.require(target.parent, known)
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
    except BaseException as exc:
        target.unlink(missing_ok=True)
        if space.is_full(exc):
            raise space.refused(target.parent, known or size) from exc
        raise
    return digest.hexdigest(), size
