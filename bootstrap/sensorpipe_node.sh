#!/usr/bin/env bash
# sensorpipe's node scripts for EMR, one file so that each use downloads one script.
#
# EMR runs bootstrap actions as the `hadoop` user, before the applications are installed, and
# steps as `hadoop` on the primary node; root is reached with `sudo` (passwordless there). A
# failure of any step ends the script with a non-zero exit and a message naming the step: EMR
# then fails the node (bootstrap) or the step, instead of starting jobs on a half-made node.
#
#   sensorpipe_node.sh user --user sensorpipe --keytab /etc/security/keytabs/sensorpipe.keytab
#                           [--step-user hadoop]                       (bootstrap, every node)
#       The jobs' Linux user: YARN runs a Kerberos user's containers as the Linux user of that
#       name, on every node. On the primary node, also the keytab's directory, readable by the
#       step user's group only.
#   sensorpipe_node.sh keytab --principal sensorpipe@REALM --keytab PATH [--owner hadoop]
#                                                                      (a step, primary node)
#       The jobs' principal in the cluster-dedicated KDC (created if missing) and a keytab with
#       its current key (kadmin.local ktadd -norandkey: the key is not changed), owned by the
#       step user, mode 0400: spark-submit --principal/--keytab reads it. EMR starts the KDC
#       after the bootstrap actions, so this is the first step, as AWS's tutorial on the
#       cluster-dedicated KDC adds principals (EMR Management Guide, "Tutorial: Configure a
#       cluster-dedicated KDC").
#   sensorpipe_node.sh hdfs-home --principal sensorpipe@REALM [--hdfs-keytab /etc/hdfs.keytab]
#                                                                      (a step, primary node)
#       /user/<name> in HDFS, owned by the principal's short name, mode 0700: spark-submit in
#       cluster mode stages the application in the submitting user's home (spark.yarn.stagingDir
#       defaults to it), and a Kerberos user added to the cluster has none ("Configuring an
#       Amazon EMR cluster for Kerberos-authenticated HDFS users and SSH connections": "You must
#       create an HDFS user directory on the primary node for each user"). As the HDFS
#       superuser: a ticket from hdfs/<this host>'s keytab in a private credentials cache.
#   sensorpipe_node.sh wheel [--python /usr/bin/python3] s3://.../sensorpipe-X.whl
#                                                   (bootstrap, only if configured)
#       The wheel into the node's Python. pip needs an index for the dependencies: none is
#       reachable from a private subnet unless SENSORPIPE_PIP_ARGS names a mirror.
#
# Common options: --root DIR (a sandbox for tests; default /), --dry-run (print, change
# nothing). Every command is idempotent: a second run changes nothing.
# -E: the ERR trap also fires inside functions.
set -Eeuo pipefail

ROOT=/
DRY_RUN=0
CURRENT_STEP="parsing the arguments"

log() { printf '[sensorpipe-node] %s\n' "$*" >&2; }
die() { log "error: step '$CURRENT_STEP' failed: $*"; exit 1; }
on_error() {
  local code=$?
  log "error: step '$CURRENT_STEP' failed (exit $code)"
  exit "$code"
}
trap on_error ERR

step() { CURRENT_STEP=$1; log "$1"; }
path() { printf '%s%s' "${ROOT%/}" "$1"; }

# Root, as EMR grants it to hadoop: sudo, never prompting (a missing grant is an error).
as_root() {
  if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi
}

change() {
  if ((DRY_RUN)); then
    log "dry-run: would run: $*"
  else
    "$@"
  fi
}

is_primary() {
  local info
  info=$(path /mnt/var/lib/info/instance.json)
  [[ -f $info ]] || die "no $info: not an EMR node (or --root is wrong)"
  grep -Eq '"isMaster"[[:space:]]*:[[:space:]]*true' "$info"
}

# --- user -------------------------------------------------------------------------------------

cmd_user() {
  local user="" keytab="" step_user=hadoop
  while (($#)); do
    case $1 in
      --user) user=$2; shift ;;
      --keytab) keytab=$2; shift ;;
      --step-user) step_user=$2; shift ;;
      *) common_option "$@" || die "user: unknown argument $1"; shift "$SHIFT" ; continue ;;
    esac
    shift
  done
  [[ -n $user ]] || die "user: --user is required"
  [[ -n $keytab ]] || die "user: --keytab is required"

  step "jobs user $user"
  if id "$user" >/dev/null 2>&1; then
    log "user $user exists"
  else
    change as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi

  if ! is_primary; then
    log "not the primary node: no keytab directory here"
    return 0
  fi
  step "keytab directory for $step_user"
  local dir group
  dir=$(dirname "$(path "$keytab")")
  group=$(id -gn "$step_user")
  if [[ -d $dir ]] && [[ $(stat -c '%U:%G %a' "$dir") == "root:$group 750" ]]; then
    log "$dir unchanged"
  else
    change as_root install -d -o root -g "$group" -m 0750 "$dir"
  fi
}

# --- keytab -----------------------------------------------------------------------------------

kadmin() {
  local realm=$1 query=$2
  # sudo resets the environment: pass on where the KDC's configuration is, if set.
  as_root env ${KRB5_CONFIG:+KRB5_CONFIG="$KRB5_CONFIG"} \
    ${KRB5_KDC_PROFILE:+KRB5_KDC_PROFILE="$KRB5_KDC_PROFILE"} \
    kadmin.local -r "$realm" -q "$query"
}

keytab_kvno() {
  local keytab=$1 principal=$2
  as_root test -f "$keytab" || return 0
  as_root klist -k "$keytab" 2>/dev/null |
    awk -v p="$principal" '$2 == p { k = $1 } END { if (k) print k }'
}

cmd_keytab() {
  local principal="" keytab="" owner=hadoop
  while (($#)); do
    case $1 in
      --principal) principal=$2; shift ;;
      --keytab) keytab=$2; shift ;;
      --owner) owner=$2; shift ;;
      *) common_option "$@" || die "keytab: unknown argument $1"; shift "$SHIFT"; continue ;;
    esac
    shift
  done
  [[ $principal == *@* ]] || die "keytab: --principal NAME@REALM is required"
  [[ -n $keytab ]] || die "keytab: --keytab is required"
  is_primary || die "keytab: the KDC is on the primary node; run this step there"
  local realm=${principal##*@} target
  target=$(path "$keytab")

  step "principal $principal"
  local info kvno status=0
  # getprinc fails for a missing principal: its answer, not its status, tells the cases apart.
  info=$(kadmin "$realm" "getprinc $principal" 2>&1) || status=$?
  if grep -q '^Principal:' <<<"$info"; then
    log "principal $principal exists"
  elif grep -q 'Principal does not exist' <<<"$info"; then
    change kadmin "$realm" "addprinc -randkey $principal" >/dev/null
    if ((!DRY_RUN)); then
      info=$(kadmin "$realm" "getprinc $principal" 2>&1)
    fi
  else
    die "cannot read $principal from the KDC (exit $status): $info"
  fi
  kvno=$(sed -n 's/.*Key: vno \([0-9]*\).*/\1/p' <<<"$info" | head -n1)

  step "keytab $target"
  if [[ -n $kvno ]] && [[ $(keytab_kvno "$target" "$principal") == "$kvno" ]]; then
    log "keytab $target holds the current key of $principal"
  else
    # The directory as the `user` bootstrap action makes it: the owner's group may enter.
    as_root test -d "$(dirname "$target")" ||
      change as_root install -d -o root -g "$(id -gn "$owner")" -m 0750 "$(dirname "$target")"
    change kadmin "$realm" "ktadd -norandkey -k $target $principal" >/dev/null
  fi
  step "keytab $target readable by $owner only"
  if as_root test -f "$target" &&
    [[ $(as_root stat -c '%U %a' "$target") == "$owner 400" ]]; then
    log "$target unchanged"
  else
    change as_root chown "$owner:" "$target"
    change as_root chmod 0400 "$target"
  fi
}

# --- hdfs-home ----------------------------------------------------------------------------------

cmd_hdfs_home() {
  local principal="" hdfs_keytab=/etc/hdfs.keytab
  while (($#)); do
    case $1 in
      --principal) principal=$2; shift ;;
      --hdfs-keytab) hdfs_keytab=$2; shift ;;
      *) common_option "$@" || die "hdfs-home: unknown argument $1"; shift "$SHIFT"; continue ;;
    esac
    shift
  done
  [[ $principal == *@* ]] || die "hdfs-home: --principal NAME@REALM is required"
  is_primary || die "hdfs-home: run this step on the primary node"
  local user=${principal%%@*} realm=${principal##*@} home cache superuser
  home=/user/${user%%/*}
  superuser="hdfs/$(hostname -f)@$realm"
  # The hdfs client EMR installs (SENSORPIPE_HDFS: another path, e.g. in tests).
  local hdfs=${SENSORPIPE_HDFS:-hdfs}
  cache=$(as_root mktemp /tmp/krb5cc_sensorpipe_hdfs.XXXXXX)
  # shellcheck disable=SC2064  # the cache's name is fixed now
  trap "as_root rm -f '$cache'" EXIT
  hdfs_dfs() {
    as_root env KRB5CCNAME="FILE:$cache" ${KRB5_CONFIG:+KRB5_CONFIG="$KRB5_CONFIG"} \
      "$hdfs" dfs "$@"
  }

  step "HDFS superuser ticket ($superuser)"
  as_root env KRB5CCNAME="FILE:$cache" ${KRB5_CONFIG:+KRB5_CONFIG="$KRB5_CONFIG"} \
    kinit -kt "$(path "$hdfs_keytab")" "$superuser" || die "no ticket for $superuser"

  step "HDFS home $home of ${user%%/*}"
  if hdfs_dfs -test -d "$home"; then
    log "$home exists"
  else
    change hdfs_dfs -mkdir -p "$home"
  fi
  local stat=""
  hdfs_dfs -test -d "$home" && stat=$(hdfs_dfs -stat '%u %a' "$home")
  if [[ $stat == "${user%%/*} 700" ]]; then
    log "$home owned by ${user%%/*}, mode 700: unchanged"
  else
    change hdfs_dfs -chown "${user%%/*}:${user%%/*}" "$home"
    change hdfs_dfs -chmod 700 "$home"
  fi
}

# --- wheel ------------------------------------------------------------------------------------

cmd_wheel() {
  local python_bin=${SENSORPIPE_PYTHON:-/usr/bin/python3} wheel_uri=""
  while (($#)); do
    case $1 in
      --python) python_bin=$2; shift ;;
      -*) common_option "$@" || die "wheel: unknown option $1"; shift "$SHIFT"; continue ;;
      *) wheel_uri=$1 ;;
    esac
    shift
  done
  [[ -n $wheel_uri ]] || die "wheel: a wheel path or s3:// URI is required"
  local name version installed
  name=$(basename "$wheel_uri")
  version=$(cut -d- -f2 <<<"$name")
  installed=$("$python_bin" -c 'import importlib.metadata as m; print(m.version("sensorpipe"))' \
    2>/dev/null) || installed=""
  if [[ $installed == "$version" ]]; then
    log "sensorpipe $version already installed for $python_bin; nothing to do"
    return 0
  fi
  step "fetch $name"
  local workdir
  workdir=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the trap runs after workdir is out of scope
  trap "rm -rf '$workdir'" EXIT
  if [[ $wheel_uri == s3://* ]]; then
    aws s3 cp --only-show-errors "$wheel_uri" "$workdir/$name"
  else
    cp "$wheel_uri" "$workdir/$name"
  fi
  step "install sensorpipe $version for $python_bin"
  local pip_args=()
  read -r -a pip_args <<<"${SENSORPIPE_PIP_ARGS:-}"
  change as_root "$python_bin" -m pip install --quiet "${pip_args[@]}" "$workdir/$name"
}

# --- main -------------------------------------------------------------------------------------

SHIFT=1
common_option() {
  case $1 in
    --root) ROOT=$2; SHIFT=2 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    *) return 1 ;;
  esac
}

main() {
  local command=${1:-}
  (($#)) && shift
  case $command in
    user) cmd_user "$@" ;;
    keytab) cmd_keytab "$@" ;;
    hdfs-home) cmd_hdfs_home "$@" ;;
    wheel) cmd_wheel "$@" ;;
    *) die "usage: $0 user|keytab|hdfs-home|wheel [options] (see the header of this script)" ;;
  esac
  CURRENT_STEP="done"
  log "$command: done"
}

main "$@"
