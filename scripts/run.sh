#!/usr/bin/env bash
# `make run`: set up on first start (migrate, demo data, admin login), then serve the site on
# 127.0.0.1:8000 (scripts/serve.sh: nginx in front of gunicorn) with a django-q2 worker beside it.
# Ctrl-C (or SIGTERM to this script) stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export CL_HOME="${CL_HOME:-$PWD/var}"
mkdir -p "$CL_HOME"
chmod 700 "$CL_HOME"
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
  if [ ! -s "$CL_HOME/secret_key" ]; then
    (umask 077; $PY -c 'import secrets; print(secrets.token_urlsafe(50))' > "$CL_HOME/secret_key")
  fi
  DJANGO_SECRET_KEY="$(cat "$CL_HOME/secret_key")"
  export DJANGO_SECRET_KEY
fi
export DJANGO_DEBUG="${DJANGO_DEBUG:-false}"

$PY manage.py migrate --noinput -v 0
if ! $PY manage.py shell --no-imports -c 'from ingestion.models import DatasetSchema; raise SystemExit(0 if DatasetSchema.objects.exists() else 1)' >/dev/null 2>&1; then
  echo "First start: learning the schema from demo/telco_initial.csv and training model v1.0 ..."
  $PY manage.py init_cl_system --data demo/telco_initial.csv --target churn --id-column customer_id
fi
$PY manage.py ensure_admin
# Put right what a crash may have left (runs of a killed worker, stale mirror files) and make
# the system schedules. (Its report would say the worker is not running: it starts below.)
$PY manage.py health --repair >/dev/null 2>&1 || true

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
echo
echo "  Continuous learning is running at http://$HOST:$PORT/"
echo "  Log in as: admin    password: $(cat "$CL_HOME/admin_password")   (kept in $CL_HOME/admin_password)"
echo "  Demo batches to upload: demo/batches/*.csv    Health: http://$HOST:$PORT/status/    Stop with Ctrl-C."
echo

$PY manage.py qcluster &
WORKER=$!
# The web server (scripts/serve.sh, as in production): nginx on HOST:PORT reads each request
# whole, then hands it to gunicorn's sync workers, so no slow client holds a worker.
HOST="$HOST" PORT="$PORT" bash scripts/serve.sh &
WEB=$!
stop() {
  trap - INT TERM EXIT
  # The web server stops nginx and gunicorn; qcluster is sent SIGTERM itself (README).
  kill -TERM "$WEB" "$WORKER" 2>/dev/null || true
  wait "$WEB" "$WORKER" 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
set +e
wait -n "$WEB" "$WORKER"  # one of them stopped by itself: stop the other
STATUS=$?
[ "$STATUS" = 0 ] || echo "make run: the web server or the worker stopped (exit $STATUS)" >&2
exit "$STATUS"
