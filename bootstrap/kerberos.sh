#!/usr/bin/env bash
# Kerberos client configuration (krb5.conf) for the cluster realm and the trusted corporate
# realm, for hosts the EMR security configuration does not manage: an edge node, a corporate
# client that submits to the cluster, this project's tests. On the cluster's own nodes the
# security configuration (ClusterDedicatedKdc with a CrossRealmTrustConfiguration) writes
# krb5.conf; this script is not a bootstrap action there (it would fight over the same file).
#
#   kerberos.sh --realm CLUSTER.REALM --trusted-realm CORP.REALM --trusted-domain corp.example.com
#               --trusted-kdc kdc.corp.example.com [--trusted-admin-server HOST]
#               [--kdc HOST[:PORT]] [--admin-server HOST[:PORT]] [--domain ec2.internal]
#               [--root DIR] [--dry-run]
#
# Writes <root>/etc/krb5.conf with [realms], [domain_realm] and [capaths] for both realms
# (only when its content changes); without --kdc, the primary node's name from EMR's
# job-flow.json. Idempotent: a second run changes nothing. --dry-run prints what it would
# change. A write that fails ends the script non-zero.
set -euo pipefail

ROOT=/
DRY_RUN=0
REALM="" KDC="" ADMIN_SERVER="" DOMAIN="ec2.internal"
TRUSTED_REALM="" TRUSTED_DOMAIN="" TRUSTED_KDC="" TRUSTED_ADMIN_SERVER=""

log() { printf '[sensorpipe-kerberos] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

path() { printf '%s%s' "${ROOT%/}" "$1"; }

# The primary node's private DNS name, from EMR's job-flow description (for the KDC's host).
primary_host() {
  local info
  info=$(path /mnt/var/lib/info/job-flow.json)
  [[ -f $info ]] || return 1
  sed -n 's/.*"masterPrivateDnsName"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$info" | head -n1
}

krb5_conf() {
  cat <<EOF
# Written by sensorpipe bootstrap/kerberos.sh: cluster realm $REALM trusts $TRUSTED_REALM.
[libdefaults]
  default_realm = $REALM
  dns_lookup_realm = false
  dns_lookup_kdc = false
  rdns = false
  ticket_lifetime = 24h
  renew_lifetime = 7d
  forwardable = true
  udp_preference_limit = 1

[realms]
  $REALM = {
    kdc = $KDC
    admin_server = $ADMIN_SERVER
  }
  $TRUSTED_REALM = {
    kdc = $TRUSTED_KDC
    admin_server = $TRUSTED_ADMIN_SERVER
  }

[domain_realm]
  .$DOMAIN = $REALM
  $DOMAIN = $REALM
  .$TRUSTED_DOMAIN = $TRUSTED_REALM
  $TRUSTED_DOMAIN = $TRUSTED_REALM

[capaths]
  $TRUSTED_REALM = {
    $REALM = .
  }
  $REALM = {
    $TRUSTED_REALM = .
  }
EOF
}

# Replace a file only if its content differs; returns 0 when it changed (or would change).
install_content() {
  local target=$1 mode=$2 content=$3
  if [[ -f $target ]] && [[ $(cat "$target") == "$content" ]]; then
    log "$target unchanged"
    return 0
  fi
  if ((DRY_RUN)); then
    log "dry-run: would write $target"
    return 0
  fi
  mkdir -p "$(dirname "$target")"
  local tmp
  tmp=$(mktemp "$target.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$target"
  log "wrote $target"
}

main() {
  while (($#)); do
    case $1 in
      --realm) REALM=$2; shift ;;
      --kdc) KDC=$2; shift ;;
      --admin-server) ADMIN_SERVER=$2; shift ;;
      --domain) DOMAIN=$2; shift ;;
      --trusted-realm) TRUSTED_REALM=$2; shift ;;
      --trusted-domain) TRUSTED_DOMAIN=$2; shift ;;
      --trusted-kdc) TRUSTED_KDC=$2; shift ;;
      --trusted-admin-server) TRUSTED_ADMIN_SERVER=$2; shift ;;
      --root) ROOT=$2; shift ;;
      --dry-run) DRY_RUN=1 ;;
      *) die "unknown argument $1" ;;
    esac
    shift
  done
  for name in REALM TRUSTED_REALM TRUSTED_DOMAIN TRUSTED_KDC; do
    [[ -n ${!name} ]] || die "--$(tr '[:upper:]_' '[:lower:]-' <<<"$name") is required"
  done
  if [[ -z $KDC ]]; then
    KDC=$(primary_host) || KDC=""
    [[ -n $KDC ]] || die "--kdc not given and no masterPrivateDnsName in job-flow.json"
  fi
  ADMIN_SERVER=${ADMIN_SERVER:-${KDC%%:*}}
  TRUSTED_ADMIN_SERVER=${TRUSTED_ADMIN_SERVER:-${TRUSTED_KDC%%:*}}
  install_content "$(path /etc/krb5.conf)" 644 "$(krb5_conf)"
}

main "$@"
