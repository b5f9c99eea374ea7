#!/usr/bin/env bash
# EMR bootstrap action: install the sensorpipe wheel and its runtime dependencies into the
# cluster's Python, on every node. Idempotent: a node that already has this version changes
# nothing. Usage:
#   install_dependencies.sh [--dry-run] [--python /usr/bin/python3] s3://bucket/prefix/sensorpipe-X.whl
# SENSORPIPE_PIP_ARGS adds pip arguments (e.g. --index-url for a mirror, or --no-deps where
# the image already has the dependencies).
set -euo pipefail

DRY_RUN=0
WORKDIR=""
PYTHON_BIN=${SENSORPIPE_PYTHON:-/usr/bin/python3}

log() { printf '[sensorpipe-bootstrap] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

retry() {
  local attempts=$1 delay=2 n=1
  shift
  until "$@"; do
    ((n >= attempts)) && return 1
    log "retry $n/$attempts after ${delay}s: $*"
    sleep "$delay"
    delay=$((delay * 2))
    n=$((n + 1))
  done
}

run() {
  if ((DRY_RUN)); then
    log "dry-run: $*"
  else
    "$@"
  fi
}

installed_version() {
  "$PYTHON_BIN" -c 'import importlib.metadata as m; print(m.version("sensorpipe"))' 2>/dev/null || true
}

main() {
  local wheel_uri=""
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --python) PYTHON_BIN=$2; shift ;;
      -*) die "unknown option $1" ;;
      *) wheel_uri=$1 ;;
    esac
    shift
  done
  [[ -n $wheel_uri ]] || die "usage: $0 [--dry-run] s3://.../sensorpipe-VERSION-py3-none-any.whl"
  local wheel_name version
  wheel_name=$(basename "$wheel_uri")
  version=$(cut -d- -f2 <<<"$wheel_name")
  if [[ $(installed_version) == "$version" ]]; then
    log "sensorpipe $version already installed for $PYTHON_BIN; nothing to do"
    return 0
  fi
  WORKDIR=$(mktemp -d)
  trap 'rm -rf "$WORKDIR"' EXIT
  local workdir=$WORKDIR
  if [[ $wheel_uri == s3://* ]]; then
    run retry 3 aws s3 cp --only-show-errors "$wheel_uri" "$workdir/$wheel_name"
  else
    run cp "$wheel_uri" "$workdir/$wheel_name"
  fi
  local as_root=()
  ((EUID == 0)) || as_root=(sudo)
  local pip_args=()
  read -r -a pip_args <<<"${SENSORPIPE_PIP_ARGS:-}"
  run retry 3 "${as_root[@]}" "$PYTHON_BIN" -m pip install --quiet "${pip_args[@]}" \
    "$workdir/$wheel_name"
  if ((DRY_RUN)); then
    log "dry-run: would install sensorpipe $version for $PYTHON_BIN"
  else
    log "installed sensorpipe $version for $PYTHON_BIN"
  fi
}

main "$@"
