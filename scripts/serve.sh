#!/usr/bin/env bash
# The web server, as `make run` (scripts/run.sh) and production start it: Debian's nginx on
# HOST:PORT in front of gunicorn's sync workers, which listen on a unix socket in CL_HOME that only
# this user can reach. nginx reads each request whole (headers and body, a few seconds allowed
# between two reads, the body spooled under CL_HOME) before a worker sees it, and takes each answer
# whole before sending it on, so a slow or silent client never holds a worker (gunicorn's docs
# advise such a buffering front for sync workers). Runs in the foreground as the invoking user
# (no root); SIGTERM or SIGINT stops nginx and gunicorn, and if either stops the other is stopped.
#
# Environment: CL_HOME, HOST (127.0.0.1), PORT (8000), WEB_WORKERS (2 gunicorn sync workers),
# NGINX_WORKERS (1), CL_CLIENT_TIMEOUT (5: seconds for a client's headers, and between two reads
# of its body), CL_TRUSTED_PROXY (addresses or CIDRs of a TLS proxy in front of this nginx, space
# separated: the client's address and scheme are then taken from its X-Forwarded-For and
# X-Forwarded-Proto), CL_ACCESS_LOG (a file, or off; by default this script's output when that
# is a terminal or a pipe, else CL_HOME/logs/access.log; SIGUSR1 to nginx reopens it), WSGI_APP
# (clsite.wsgi:application). The largest body nginx accepts is the app's: CL_UPLOAD_MAX_BYTES +
# CL_REQUEST_OVERHEAD_BYTES, read from the settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
GUNICORN="$(dirname "$PY")/gunicorn"
export CL_HOME="${CL_HOME:-$PWD/var}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
TIMEOUT=600  # gunicorn's --timeout, and nginx's wait for gunicorn's answer

NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if [ ! -x "$NGINX" ]; then
  echo "serve.sh: nginx is missing: it is the web server's buffering front. Install Debian's nginx" \
       "(scripts/install-nginx.sh as root, or apt-get install nginx; \`make run\` does it)." >&2
  exit 1
fi

# nginx's prefix: its configuration, pid file and temporary files, owner-only.
RUN="$CL_HOME/run/web"
mkdir -p -m 700 "$CL_HOME" "$CL_HOME/run" "$RUN"
SOCKET="$RUN/gunicorn.sock"
SOCKDIR=
if [ "${#SOCKET}" -gt 100 ]; then  # a unix socket's path is at most 107 bytes
  SOCKDIR="$(mktemp -d "${TMPDIR:-/tmp}/cl-web.XXXXXX")"  # mode 700
  SOCKET="$SOCKDIR/gunicorn.sock"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The app trusts exactly one proxy hop, this nginx, which sets X-Forwarded-For to the address it
# took the request from (or, behind CL_TRUSTED_PROXY, the one that proxy saw).
export CL_PROXY_COUNT=1

if [ -z "${CL_ACCESS_LOG:-}" ]; then
  if [ -t 1 ] || [ -p /dev/stdout ]; then
    CL_ACCESS_LOG=/dev/stdout
  else  # a socket (systemd's journal) cannot be opened by path, and a file would be overwritten by the rest
    mkdir -p "$CL_HOME/logs"
    CL_ACCESS_LOG="$CL_HOME/logs/access.log"
  fi
fi
export RUN SOCKET HOST PORT TIMEOUT CL_ACCESS_LOG
RUN_AS="$(id -un) $(id -gn)"
[ "$(id -u)" = 0 ] || RUN_AS=  # nginx changes user only when started by root: keep it root's own
export RUN_AS
"$PY" - scripts/nginx.conf.in "$RUN/nginx.conf" <<'RENDER'
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clsite.settings")
import django  # noqa: E402

django.setup()
from django.conf import settings  # noqa: E402

from ingestion.uploads import too_large_message, upload_paths  # noqa: E402

env = os.environ
host = env["HOST"]
if ":" in host and not host.startswith("["):
    host = f"[{host}]"
proxies = env.get("CL_TRUSTED_PROXY", "").replace(",", " ").split()
if proxies:
    trusted = "".join(f"    set_real_ip_from {p};\n" for p in proxies) + "    real_ip_header X-Forwarded-For;\n"
    trusted += "    geo $realip_remote_addr $from_trusted_proxy {\n        default 0;\n"
    trusted += "".join(f"        {p} 1;\n" for p in proxies) + "    }\n"
    trusted += ('    map "$from_trusted_proxy:$http_x_forwarded_proto" $forwarded_proto {\n'
                '        default $scheme;\n        "~^1:(?<proto>https?)$" $proto;\n    }\n')
else:
    trusted = "    map $scheme $forwarded_proto {\n        default $scheme;\n    }\n"
log = env["CL_ACCESS_LOG"]
fields = {
    "USER": f"user {env['RUN_AS']};" if env["RUN_AS"] else "",
    "WORKERS": env.get("NGINX_WORKERS", "1"),
    "ACCESS_LOG": "off" if log == "off" else f"{log} combined buffer=32k flush=1s",
    "RUN": env["RUN"],
    "SOCKET": env["SOCKET"],
    "LISTEN": f"{host}:{env['PORT']}",
    "CLIENT_TIMEOUT": str(int(env.get("CL_CLIENT_TIMEOUT", "5"))),
    "BODY_MAX": str(settings.CL_UPLOAD_MAX_BYTES + settings.CL_REQUEST_OVERHEAD_BYTES),
    "APP_TIMEOUT": env["TIMEOUT"],
    "TOO_LARGE": "".join(c for c in too_large_message() if c not in '"\\$'),
    "TRUSTED_PROXY": trusted,
    "FORM_MAX": str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + settings.CL_REQUEST_OVERHEAD_BYTES),
    "PREDICT_MAX": str(settings.CL_PREDICT_MAX_BYTES),
    "UPLOAD_PATHS": "|".join(path.replace(".", "\\.") for path in upload_paths()),
}
# What every location hands to gunicorn, and how (nginx-proxy.conf.in beside the template).
fields["PROXY"] = open(os.path.join(os.path.dirname(sys.argv[1]), "nginx-proxy.conf.in")).read().rstrip("\n")
for name in ("BODY_MAX", "APP_TIMEOUT"):
    fields["PROXY"] = fields["PROXY"].replace(f"@{name}@", fields[name])
text = open(sys.argv[1]).read()
for name, value in fields.items():
    text = text.replace(f"@{name}@", value)
with open(sys.argv[2], "w") as out:
    out.write(text)
RENDER

rm -f "$SOCKET"  # a crashed run's
GUNICORN_PID=
NGINX_PID=
stop() {
  trap - TERM INT HUP EXIT
  for pid in $NGINX_PID $GUNICORN_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $NGINX_PID $GUNICORN_PID; do wait "$pid" 2>/dev/null || true; done
  [ -z "$SOCKDIR" ] || rm -rf "$SOCKDIR"
}
trap 'stop; exit 0' TERM INT HUP
trap stop EXIT

# Request limits: nginx bounds the time a client may take and the body's size (above); gunicorn
# bounds the request line and headers, and the app a file's size and who may upload at all.
# Sync workers (two: one per core of a small machine): each answers one request at a time, taken
# from the kernel's queue that all of them share, so no request waits behind one worker's backlog
# while another is free (bench/web.py: an API p99 of 55-75 ms at 64 connections, against 150-300
# ms with gthread's threads, which keep each connection on one worker). They are safe only behind
# a buffering front: this nginx. Raise WEB_WORKERS if long requests are common.
"$GUNICORN" "${WSGI_APP:-clsite.wsgi:application}" --bind "unix:$SOCKET" --workers "${WEB_WORKERS:-2}" --timeout "$TIMEOUT" \
  --limit-request-line 4094 --limit-request-fields 100 --limit-request-field_size 8190 \
  --error-logfile - --log-level warning &
GUNICORN_PID=$!
# nginx once gunicorn listens (its workers may still be starting: the kernel queues connections).
for _ in $(seq 300); do
  if [ -S "$SOCKET" ] || ! kill -0 "$GUNICORN_PID" 2>/dev/null; then break; fi
  sleep 0.1
done
"$NGINX" -p "$RUN/" -c "$RUN/nginx.conf" -e stderr -g "daemon off; master_process on; pid $RUN/nginx.pid; error_log stderr warn;" &
NGINX_PID=$!

set +e
wait -n "$GUNICORN_PID" "$NGINX_PID"
STATUS=$?
[ "$STATUS" = 0 ] || echo "serve.sh: nginx or gunicorn stopped (exit $STATUS); stopping the other" >&2
exit "$STATUS"
