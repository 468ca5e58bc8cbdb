import gc
import os

# One OpenMP/BLAS thread per web worker: the worker's requests are its parallelism, and native
# threads spinning for each other on a busy machine made predictions 10-100x slower. Set before
# numpy or scikit-learn are imported, and enforced again below for libraries loaded later.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from django.core.wsgi import get_wsgi_application  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clsite.settings")
application = get_wsgi_application()

# Importing this module writes nothing: repairs (runs of a killed worker, stale mirror files,
# missing system schedules, CL_HOME's folders) are ops.repairs.repair(), run by `make run` before
# it serves (`manage.py health --repair`), by the worker at its start and by the watchdog.

# Load the URLconf now (the views, the model code and its native libraries with it), then cap
# every native thread pool loaded, for good.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns
threadpool_limits(limits=1)

# Everything loaded so far lives as long as the process: keep it out of the garbage collector's
# full passes, which otherwise walk it all (about 200 ms with a model and the site loaded) and
# stall every request of this process meanwhile.
gc.freeze()
