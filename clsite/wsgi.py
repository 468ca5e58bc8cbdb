import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clsite.settings")
application = get_wsgi_application()

# Put right what a crash or a hand left wrong (stale mirror files, runs of a killed worker,
# missing system schedules) before serving; never stops the site from starting.
from ops.startup import repair  # noqa: E402

repair()
