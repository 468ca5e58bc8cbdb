"""API calls pass a short middleware stack: they carry a token, not a session.

The site's stack (sessions, CSRF, authentication by session, the login page, messages) cost a
third of an API prediction and does nothing for a call its token authenticates (api.auth). So
calls under the API's prefix go through settings.TOKEN_CALL_MIDDLEWARE alone: the HTTPS and
header rules, Content-Length and django-axes' lock-out answer. The interactive docs and the
schema, which a logged-in person may open with the session, take the site's stack.

A call's failure always answers in the API's error shape: the operations' own through the API's
exception handlers (api.endpoints), and any other (an unknown address, a method not allowed, an
error in the middleware, already logged by Django with its traceback) here, in as_json_error.
"""
import orjson
from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse
from django.urls import reverse
from django.utils.module_loading import import_string

_HOOKS = ("process_view", "process_template_response", "process_exception")


class ShortStack(BaseHandler):
    """A handler whose chain is `paths` (request-and-response middleware only) around Django's
    URL resolution and view call, wrapped as BaseHandler.load_middleware wraps each."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(paths):
            middleware = import_string(path)(handler)
            if any(hasattr(middleware, hook) for hook in _HOOKS):
                raise ValueError(f"{path} has view, template or exception hooks: the short stack runs none")
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler


class TokenCallsMiddleware:
    """First in settings.MIDDLEWARE: hands a call to the API to the short stack."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.short = ShortStack(settings.TOKEN_CALL_MIDDLEWARE)
        schema, docs = reverse("api:openapi-json"), reverse("api:openapi-view")
        self.prefix = schema[:schema.rindex("/") + 1]
        self.with_session = {schema, docs}

    def __call__(self, request):
        path = request.path_info
        if path.startswith(self.prefix) and path not in self.with_session:
            return as_json_error(request, self.short._middleware_chain(request))
        return self.get_response(request)


def as_json_error(request, response):
    """A failure answered as a page (Django's 404, 405, 500) in the API's error shape, with its
    status and headers; anything else as it is."""
    if response.status_code < 400 or response.streaming or response.get("Content-Type", "").startswith("application/json"):
        return response
    if response.status_code == 404:
        detail = f"the API has no {request.path} (its operations: /api/v1/openapi.json)"
    elif response.status_code == 405:
        detail = f"{request.method} is not allowed here (allowed: {response.get('Allow', '')})"
    elif response.status_code >= 500:
        detail = "the server failed to answer this request (a fault of ours); the error is in its log"
    else:
        detail = response.reason_phrase.lower()
    answer = HttpResponse(orjson.dumps({"detail": detail, "errors": []}), status=response.status_code,
                          content_type="application/json")
    for header, value in response.items():
        if header.lower() not in ("content-type", "content-length"):
            answer[header] = value
    answer["Content-Length"] = str(len(answer.content))
    answer._has_been_logged = getattr(response, "_has_been_logged", False)  # Django logs a failure once
    return answer
