"""Who is asking, as far as the network lets us know, what a locked-out client is told, whose
failed logins a success forgets, and the content security policy of each response."""
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit
from axes.models import AccessAttempt
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or behind CL_PROXY_COUNT trusted proxies the address
    the outermost of them put in X-Forwarded-For (the ones before it can be forged by the client)."""
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if settings.CL_PROXY_COUNT and len(hops) >= settings.CL_PROXY_COUNT:
        return hops[-settings.CL_PROXY_COUNT]
    return request.META.get("REMOTE_ADDR", "")


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out login: the lock-out page, or JSON for a program."""
    wait = settings.AXES_COOLOFF_TIME
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": f"too many failed attempts from this address or for this user; "
                                           f"try again in {round(wait.total_seconds() / 60)} minutes"}, status=429)
        response["Retry-After"] = str(int(wait.total_seconds()))
        return response
    context = {"failure_limit": get_failure_limit(request, credentials), "cooloff_timedelta": wait,
               "username": get_client_username(request, credentials) or ""}
    return render(request, "registration/lockout.html", context, status=429)


class LockoutHandler(AxesDatabaseHandler):
    """django-axes' database handler, except that a successful login forgets only the failures
    for that username. axes' own reset also deletes every failure from the address, whoever it
    was for, so anyone with one account could keep guessing another's password forever."""

    def reset_user_attempts(self, request, credentials=None) -> int:
        count, _ = AccessAttempt.objects.filter(username=get_client_username(request, credentials)).delete()
        return count


# What a browser may do with a response that is not a page (JSON, CSV, files): nothing.
NOT_A_PAGE_POLICY = "default-src 'none'; frame-ancestors 'none'"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's policy on HTML pages; a fixed, stricter one on everything else.

    Building the page policy costs about a sixth of an API prediction, and a JSON answer needs
    none of what it allows.
    """

    def process_response(self, request, response):
        if response.get("Content-Type", "").startswith("text/html"):
            return super().process_response(request, response)
        response.headers.setdefault("Content-Security-Policy", NOT_A_PAGE_POLICY)
        return response
