"""The API's URLs: ninja's, told how the site's middleware and upload handler should treat them."""
from ninja.errors import AuthenticationError, HttpError

from .auth import TokenAuth
from .endpoints import api

UPLOADS = {"upload": "ingestion.upload_data", "submit_scoring": "modelhub.batch_predict"}


def urls():
    """api.urls, with: every operation exempt from the site's login page (the token decides; the
    interactive docs stay for people logged in), the OpenAPI schema for a token or a login, and
    the upload operations named to the upload handler."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name == "openapi-view":
            continue
        if pattern.name == "openapi-json":
            pattern.callback = _token_or_login(pattern.callback)
        pattern.callback.login_required = False
        if pattern.name in UPLOADS:
            pattern.callback.upload_permission = UPLOADS[pattern.name]
    return patterns, app_name, namespace


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
