"""The web server's question before it reads an upload's body (scripts/nginx.conf.in asks it with
auth_request): may this caller send a file to this address?

Answered from the headers alone, by the rule the upload handler applies once the body arrives
(ingestion.uploads.may_upload): a caller who would be refused gets 401 or 403 from the front at
once, and not a byte of the body is read or spooled to disk. Requests other than POST pass (the
pages themselves decide).
"""
from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse

from api.auth import bearer_user
from ingestion.uploads import may_upload


@login_not_required
def upload_gate(request):
    if request.META.get("HTTP_X_ORIGINAL_METHOD", "POST") != "POST":
        return HttpResponse(status=204)
    path = urlsplit(request.META.get("HTTP_X_ORIGINAL_URI", "")).path
    # An API call carries a token; a page, the session (the site's middleware has read it).
    user = bearer_user(request) if path.startswith("/api/") else request.user
    if user is None or not user.is_authenticated:
        return HttpResponse(status=401)
    return HttpResponse(status=204 if may_upload(path, user) else 403)
