#!/usr/bin/env bash
# EMR bootstrap action: Kerberos client configuration for the cluster realm and the trusted
# corporate realm, and (primary node only) the jobs' service principal and keytab.
#
#   kerberos.sh --realm CLUSTER.REALM --trusted-realm CORP.REALM --trusted-domain corp.example.com
#               --trusted-kdc kdc.corp.example.com [--trusted-admin-server HOST]
#               [--kdc HOST[:PORT]] [--admin-server HOST[:PORT]] [--domain ec2.internal]
#               --principal sensorpipe --keytab /etc/security/keytabs/sensorpipe.keytab
#               [--host FQDN] [--service-user NAME] [--root DIR] [--dry-run]
#               [--background] [--kdc-wait SECONDS]
#
# Writes <root>/etc/krb5.conf with [realms], [domain_realm] and [capaths] for both realms
# (only when its content changes). On the primary node (isMaster in
# /mnt/var/lib/info/instance.json) it creates <principal>/<host>@<realm> in the cluster's KDC
# if missing and exports its current key to the keytab if the keytab lacks it (kadmin.local
# ktadd -norandkey: the key is not changed). EMR starts the cluster-dedicated KDC after the
# bootstrap actions, so --background leaves that part to a child that waits for the KDC.
# Idempotent: a second run changes nothing. --dry-run prints what it would change.
set -euo pipefail

ROOT=/
DRY_RUN=0
BACKGROUND=0
KDC_WAIT=1800
REALM="" KDC="" ADMIN_SERVER="" DOMAIN="ec2.internal"
TRUSTED_REALM="" TRUSTED_DOMAIN="" TRUSTED_KDC="" TRUSTED_ADMIN_SERVER=""
PRINCIPAL="" KEYTAB="" HOST_FQDN="" SERVICE_USER=""

log() { printf '[sensorpipe-kerberos] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

path() { printf '%s%s' "${ROOT%/}" "$1"; }

is_master() {
  local info
  info=$(path /mnt/var/lib/info/instance.json)
  [[ -f $info ]] && grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*true' "$info"
}

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
    return 1
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

kadmin() { kadmin.local -r "$REALM" -q "$1"; }

kdc_ready() { kadmin "listprincs" >/dev/null 2>&1; }

keytab_has_current_key() {
  local keytab=$1 principal=$2 kvno
  [[ -f $keytab ]] || return 1
  kvno=$(kadmin "getprinc $principal" 2>/dev/null | sed -n 's/.*Key: vno \([0-9]*\).*/\1/p' | head -n1)
  [[ -n $kvno ]] || return 1
  klist -k "$keytab" 2>/dev/null | awk -v p="$principal" -v k="$kvno" '$1 == k && $2 == p { found = 1 } END { exit !found }'
}

service_principal() {
  local principal=$PRINCIPAL/$HOST_FQDN@$REALM
  local keytab
  keytab=$(path "$KEYTAB")
  if kadmin "getprinc $principal" 2>/dev/null | grep -q '^Principal:'; then
    log "principal $principal exists"
  elif ((DRY_RUN)); then
    log "dry-run: would create principal $principal"
  else
    kadmin "addprinc -randkey $principal" >/dev/null
    log "created principal $principal"
  fi
  if keytab_has_current_key "$keytab" "$principal"; then
    log "keytab $keytab holds the current key of $principal"
    return 0
  fi
  if ((DRY_RUN)); then
    log "dry-run: would export $principal to $keytab"
    return 0
  fi
  mkdir -p "$(dirname "$keytab")"
  kadmin "ktadd -norandkey -k $keytab $principal" >/dev/null
  chmod 600 "$keytab"
  if [[ -n $SERVICE_USER ]] && id "$SERVICE_USER" >/dev/null 2>&1; then
    chown "$SERVICE_USER" "$keytab"
  fi
  log "exported $principal to $keytab"
}

wait_then_service_principal() {
  local waited=0
  until kdc_ready; do
    if ((waited >= KDC_WAIT)); then
      log "error: the KDC did not answer within ${KDC_WAIT}s; principal not created"
      return 1
    fi
    sleep 10
    waited=$((waited + 10))
  done
  service_principal
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
      --principal) PRINCIPAL=$2; shift ;;
      --keytab) KEYTAB=$2; shift ;;
      --host) HOST_FQDN=$2; shift ;;
      --service-user) SERVICE_USER=$2; shift ;;
      --root) ROOT=$2; shift ;;
      --kdc-wait) KDC_WAIT=$2; shift ;;
      --dry-run) DRY_RUN=1 ;;
      --background) BACKGROUND=1 ;;
      *) die "unknown argument $1" ;;
    esac
    shift
  done
  for name in REALM TRUSTED_REALM TRUSTED_DOMAIN TRUSTED_KDC PRINCIPAL KEYTAB; do
    [[ -n ${!name} ]] || die "--$(tr '[:upper:]_' '[:lower:]-' <<<"$name") is required"
  done
  if [[ -z $KDC ]]; then
    KDC=$(primary_host) || true
    [[ -n $KDC ]] || die "--kdc not given and no masterPrivateDnsName in job-flow.json"
  fi
  ADMIN_SERVER=${ADMIN_SERVER:-${KDC%%:*}}
  TRUSTED_ADMIN_SERVER=${TRUSTED_ADMIN_SERVER:-${TRUSTED_KDC%%:*}}
  HOST_FQDN=${HOST_FQDN:-$(hostname -f)}
  # Every tool below reads the configuration this script writes.
  export KRB5_CONFIG
  KRB5_CONFIG=$(path /etc/krb5.conf)

  install_content "$KRB5_CONFIG" 644 "$(krb5_conf)" || true
  if ! is_master; then
    log "not the primary node: no principal or keytab here"
    return 0
  fi
  if ((BACKGROUND)) && ! kdc_ready; then
    log "the KDC is not up yet: creating the principal in the background once it is"
    (wait_then_service_principal >>"$(path /tmp)/sensorpipe-kerberos.log" 2>&1 &)
    return 0
  fi
  service_principal
}

main "$@"
