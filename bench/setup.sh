#!/bin/sh
# npm run bench:setup: install the benchmark baselines that are missing (Debian/Ubuntu, as root or
# with sudo): nginx (the TLS reverse-proxy baseline) and wrk. Installs nothing that is present.
set -eu
missing=""
command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v taskset >/dev/null 2>&1 || missing="$missing util-linux"
if [ -z "$missing" ]; then
  echo "bench:setup: nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), wrk and taskset present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "bench:setup: installing$missing"
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
# The Debian package may start the system nginx (port 80); the suite runs its own.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
echo "bench:setup: done"
