"""What a process keeps in memory between requests, in one place.

A few answers are too costly to fetch on every request and cheap to keep for a moment: the
served model (modelhub.serving), a token's user (api.auth), the health report (ops.health).
Each is a ProcessCache registered here, so what each keeps and for how long reads alike, and
forget_all() empties every one at once (tests; a change that must act in this process now).
Other processes see a change when their own entry is older than its owner's limit: the owner
says how long that is (and the messages people read say it too).
"""
import threading

_ALL: list["ProcessCache"] = []


class ProcessCache(dict):
    """A dict with a lock, registered for forget_all(); its owner decides what goes in and for how long."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.lock = threading.Lock()
        _ALL.append(self)

    def forget(self) -> None:
        with self.lock:
            self.clear()


def forget_all() -> None:
    for cache in _ALL:
        cache.forget()
