"""The API's URLs: ninja's, told how the site's middleware and upload handler should treat them."""
from ninja.errors import AuthenticationError, HttpError
from ninja.params.models import FileModel

from ingestion.uploads import mark_upload

from .auth import TokenAuth
from .endpoints import api


def urls():
    """api.urls, with: every operation exempt from the site's login page (the token decides; the
    interactive docs stay for people logged in), the OpenAPI schema for a token or a login, and
    the operations that take a file named to the upload handler."""
    uploads = _upload_permissions()
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name == "openapi-view":
            continue
        if pattern.name == "openapi-json":
            pattern.callback = _token_or_login(pattern.callback)
        pattern.callback.login_required = False
        if pattern.name in uploads:
            mark_upload(pattern.callback, uploads[pattern.name])
    return patterns, app_name, namespace


def _upload_permissions() -> dict[str, str]:
    """{url name: permission} of each operation with a file parameter: the permission is the one
    its TokenAuth checks, written once, at the operation."""
    found = {}
    for path_view in api.default_router.path_operations.values():
        for operation in path_view.operations:
            if any(issubclass(model, FileModel) for model in operation.signature.models):
                permissions = {auth.permission for auth in operation.auth_callbacks if getattr(auth, "permission", None)}
                if len(permissions) != 1:
                    raise ValueError(f"{operation.view_func.__name__} takes a file: it needs one TokenAuth(permission)")
                found[getattr(operation, "url_name", None) or operation.view_func.__name__] = permissions.pop()
    return found


def _token_or_login(view):
    auth = TokenAuth()

    def schema(request, *args, **kwargs):
        try:
            if not request.user.is_authenticated and not auth(request):
                return api.on_exception(request, AuthenticationError())
        except HttpError as exc:  # 429 when the address is locked out: answered as every other call's
            return api.on_exception(request, exc)
        return view(request, *args, **kwargs)

    return schema
