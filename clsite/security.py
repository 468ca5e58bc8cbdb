"""Who is asking, as far as the network lets us know."""
from django.conf import settings


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or behind CL_PROXY_COUNT trusted proxies the address
    the outermost of them put in X-Forwarded-For (the ones before it can be forged by the client)."""
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if settings.CL_PROXY_COUNT and len(hops) >= settings.CL_PROXY_COUNT:
        return hops[-settings.CL_PROXY_COUNT]
    return request.META.get("REMOTE_ADDR", "")
