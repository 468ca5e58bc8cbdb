#!/usr/bin/env bash
# `make run`: set up on first start (migrate, demo data, admin login), then serve the site on
# 127.0.0.1:8000 with a django-q2 worker beside it. Ctrl-C stops both.
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
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null; exit 0' INT TERM EXIT
# Request limits: the request line and headers are gunicorn's to bound; the body (one file up to
# CL_UPLOAD_MAX_BYTES) is the app's, which refuses it before storing a byte when it must.
# Sync workers (two: one per core of a small machine): each answers one request at a time,
# taken from the kernel's queue that all of them share, so no request waits behind one worker's
# backlog while another is free (bench/web.py: an API p99 of 55-75 ms at 64 connections, against
# 150-300 ms with gthread's threads, which keep each connection on one worker). In production a
# proxy in front buffers slow clients' uploads and downloads (SECURITY.md); raise WEB_WORKERS if
# long uploads are common.
.venv/bin/gunicorn clsite.wsgi:application --bind "$HOST:$PORT" --workers "${WEB_WORKERS:-2}" --timeout 600 \
  --limit-request-line 4094 --limit-request-fields 100 --limit-request-field_size 8190 \
  --access-logfile - --error-logfile - --log-level warning
