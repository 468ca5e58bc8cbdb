#!/usr/bin/env bash
# Installs Debian's nginx, the buffering front of scripts/serve.sh, when it is missing (`make run`
# and .ci/run call this). The package's own service is never left running: scripts/serve.sh starts
# an nginx of its own, as the invoking user, with a configuration of its own; a system nginx on
# port 80 would only be one more listening server. The package's start is refused while it
# installs (policy-rc.d, unless the machine has one already) and its service is disabled.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "nginx is needed (the web server's buffering front): sudo apt-get install nginx, then run this again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
MADE=
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# scripts/install-nginx.sh: no service starts while nginx installs\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"
  MADE=1
fi
trap '[ -z "$MADE" ] || rm -f "$POLICY"' EXIT
apt-get update -qq
apt-get install -y -qq nginx >/dev/null
# Keep the system service off, now and at boot (whichever init the machine has).
if [ -d /run/systemd/system ]; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
else
  update-rc.d nginx disable >/dev/null 2>&1 || true
  if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    /usr/sbin/nginx -s quit || true
  fi
fi
echo "Installed Debian's nginx ($(/usr/sbin/nginx -v 2>&1)); its system service is disabled."
