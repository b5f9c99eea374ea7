#!/usr/bin/env bash
# The Debian packages sensorpipe's local runs and tests need, installed when missing.
# Used by `make run`, `make test` and .ci/run alike. As root it installs them; otherwise it
# prints the exact command to run and exits 1. Nothing is done when all are present.
#   Java 17 for Spark; PostgreSQL 15 (the warehouse, the hospital's database, the metastore)
#   and its JDBC driver; MIT Kerberos KDCs and clients for the Kerberos tests; sudo, which
#   EMR's bootstrap actions use as the hadoop user (tests/emr_node.py).
#   Chromium and its chromedriver: the operations page is tested in a real headless browser.
set -euo pipefail

PACKAGES=(openjdk-17-jre-headless postgresql-15 libpostgresql-jdbc-java krb5-kdc sudo chromium
  chromium-driver krb5-admin-server krb5-user)

log() { printf '[system-packages] %s\n' "$*" >&2; }

main() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    # "install ok installed" only: a removed package keeps a status ("deinstall ok
    # config-files") for which `dpkg -s` succeeds.
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] ||
      missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}; install them with:"
    printf 'sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y %s\n' \
      "${missing[*]}"
    return 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

main "$@"
