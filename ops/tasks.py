"""django-q2 entry points of the system's periodic tasks: one line of glue each."""
from . import retention, watch


def watchdog() -> dict:
    return watch.tick()


def cleanup() -> dict:
    return retention.apply().as_dict()
