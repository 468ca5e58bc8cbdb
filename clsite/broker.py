"""The task broker django-q2 hands work to the worker through: Redis (REDIS_URL), else the database.

Named here for the messages of work that waits for it, and asked here whether it answers (the
health check): a PING with a short timeout and no retry, so that a health read stays fast and
writes nothing.
"""
from urllib.parse import urlsplit

from django.conf import settings

PING_TIMEOUT = 1.0  # seconds to connect, and to answer


def describe() -> str:
    """The broker in words, without any password: "Redis at 127.0.0.1:6379"."""
    if not settings.REDIS_URL:
        return "the database (django-q2's ORM broker)"
    url = urlsplit(settings.REDIS_URL)
    if url.scheme == "unix":
        return f"Redis at {url.path}"
    return f"Redis at {url.hostname or 'localhost'}:{url.port or 6379}"


def errors() -> tuple[type[Exception], ...]:
    """What handing a task to the broker raises when the broker cannot take it."""
    from django.db import DatabaseError

    if not settings.REDIS_URL:
        return (DatabaseError,)
    import redis

    return (redis.RedisError, DatabaseError)


def problem(timeout: float = PING_TIMEOUT) -> str:
    """Why the broker cannot take a task now, or "" when it answers."""
    if not settings.REDIS_URL:
        return ""  # the ORM broker is the database: when that fails, every check says so
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout,
                            retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{describe()} does not answer: {exc}"
    finally:
        client.close()
    return ""
