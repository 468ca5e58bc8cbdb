"""Put right what needs no person: the one repair action.

Fails runs whose worker died and hands a lost queued run over once more (modelhub.runs.sweep),
does the same for scoring jobs (modelhub.scoring.sweep), rewrites stale mirror files from the database (modelhub.mirrors.repair), restores missing system
schedules (clsite.schedules.ensure), quarantines upload files no batch names (left by a crash,
ingestion.orphans) and makes the runtime folders under CL_HOME. Every piece is
re-runnable, so callers need no lock.

Called deliberately, from three places only:
- `manage.py health --repair`, which `make run` (scripts/run.sh) runs before it starts the site;
- the worker's start (ops.startup.on_worker_spawn): a worker that replaces a killed one fails
  the runs and scoring jobs it left running at once, rather than a minute later;
- the watchdog task every minute (ops.watch.tick).
Never on import, never from a page or a health check: those only read (ops.health).
"""
import logging

from clsite import home, schedules
from ingestion import orphans
from modelhub import mirrors, runs, scoring


log = logging.getLogger("clsite.ops")

# The folders no code makes on first use: whitenoise looks for STATIC_ROOT (warning if it is
# missing) when the web process starts. The data folders are home.LAYOUT.
STATIC_FOLDER = "staticfiles"


def repair() -> dict:
    """Put everything right that needs no person; returns what was done, for the report."""
    home.ensure_layout()
    home.path(STATIC_FOLDER).mkdir(parents=True, exist_ok=True)
    return {"runs": runs.sweep(), "scoring": scoring.sweep(), "mirrors": mirrors.repair(), "schedules": schedules.ensure(),
            "orphans": orphans.quarantine()}


def anything_done(done: dict) -> dict:
    """The parts of repair()'s answer that did something (for a line of output or the log)."""
    return {name: value for name, value in done.items() if value and (not isinstance(value, dict) or any(value.values()))}
