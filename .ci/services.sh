#!/usr/bin/env bash
# Services the integration tests need, made ready on this machine: PostgreSQL on 127.0.0.1:5432
# (trust auth for local TCP, database "test"), OpenLDAP's slapd + ldap-utils and HAProxy (the
# tests start their own slapd and haproxy). Idempotent: does nothing where all is in place already.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
updated=""
apt_install() {
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  apt-get install -y -qq "$@" >/dev/null
}

command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || apt_install slapd ldap-utils
# HAProxy in front of a proxy farm (test/ha/haproxyFarm.test.ts, config/haproxy.cfg).
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
command -v ldapsearch >/dev/null 2>&1 || apt_install ldap-utils
# Headless Chromium drives the admin dashboard test (test/integration/dashboardBrowser.test.ts).
command -v chromium >/dev/null 2>&1 || apt_install chromium

pg_ok() { psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
  [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ] || apt_install postgresql
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! grep -q "gatehouse-ci" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # gatehouse-ci\nhost all all ::1/128 trust # gatehouse-ci' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload || true
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -q && break; sleep 1; done
  psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null
fi
pg_ok && echo "PostgreSQL ready on 127.0.0.1:5432"
echo "slapd: $(command -v slapd || echo /usr/sbin/slapd)"
echo "haproxy: $(haproxy -v | head -n 1)"
