#!/usr/bin/env bash
# EMR bootstrap action: the Hive metastore Spark (and Hive) use, on every node.
#
#   metastore.sh --glue [--root DIR] [--dry-run] [--background]
#   metastore.sh --jdbc-url jdbc:postgresql://host:5432/metastore --user hive
#                (--password-secret-id ID [--region R] | --password-env NAME)
#                [--driver org.postgresql.Driver] [--driver-jar /usr/share/java/postgresql.jar]
#                [--warehouse-dir s3://bucket/warehouse/] [--conf-dir DIR ...]
#                [--root DIR] [--dry-run] [--background] [--wait-seconds N]
#
# Sets the metastore properties in hive-site.xml of each conf dir (default /etc/spark/conf and
# /etc/hive/conf), merging into what EMR's configuration classifications wrote. A JDBC
# metastore's password comes from Secrets Manager (or, for local runs, an environment
# variable); it is handed to the XML writer through the environment, never on a command line
# or in a log, and the file is readable by its owner and group only. EMR installs the
# applications after the bootstrap actions, so --background leaves the merge to a child that
# waits for each conf dir to appear. Idempotent: a second run changes nothing.
set -euo pipefail

ROOT=/
DRY_RUN=0
BACKGROUND=0
WAIT_SECONDS=1800
GLUE=0
JDBC_URL="" USER_NAME="" SECRET_ID="" PASSWORD_ENV="" REGION=""
DRIVER=org.postgresql.Driver
DRIVER_JAR=""
WAREHOUSE_DIR=""
CONF_DIRS=()
PYTHON_BIN=${SENSORPIPE_BOOTSTRAP_PYTHON:-python3}
GLUE_FACTORY=com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory

log() { printf '[sensorpipe-metastore] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

path() { printf '%s%s' "${ROOT%/}" "$1"; }

fetch_password() {
  if [[ -n $PASSWORD_ENV ]]; then
    [[ -n ${!PASSWORD_ENV:-} ]] || die "--password-env names $PASSWORD_ENV, which is not set"
    printf '%s' "${!PASSWORD_ENV}"
  elif command -v aws >/dev/null 2>&1; then
    aws secretsmanager get-secret-value ${REGION:+--region "$REGION"} \
      --secret-id "$SECRET_ID" --query SecretString --output text
  else
    SECRET_ID=$SECRET_ID REGION=$REGION "$PYTHON_BIN" -c '
import os, boto3
client = boto3.client("secretsmanager", region_name=os.environ["REGION"] or None)
print(client.get_secret_value(SecretId=os.environ["SECRET_ID"])["SecretString"], end="")'
  fi
}

# Properties as NAME=VALUE lines (the password is added by the writer from the environment).
properties() {
  if ((GLUE)); then
    printf '%s\n' "hive.metastore.client.factory.class=$GLUE_FACTORY"
    return
  fi
  printf '%s\n' \
    "javax.jdo.option.ConnectionURL=$JDBC_URL" \
    "javax.jdo.option.ConnectionDriverName=$DRIVER" \
    "javax.jdo.option.ConnectionUserName=$USER_NAME" \
    "datanucleus.schema.autoCreateAll=false" \
    "datanucleus.schema.autoCreateTables=true" \
    "datanucleus.schema.autoCreateColumns=true" \
    "datanucleus.schema.autoCreateConstraints=false" \
    "hive.metastore.schema.verification=false"
  if [[ -n $WAREHOUSE_DIR ]]; then
    printf '%s\n' "hive.metastore.warehouse.dir=$WAREHOUSE_DIR"
  fi
}

# Merge the properties into <dir>/hive-site.xml; prints "changed" or "unchanged".
merge_site() {
  local site=$1
  SITE=$site PROPS=$(properties) DRY_RUN=$DRY_RUN "$PYTHON_BIN" -c '
import os, sys
import xml.etree.ElementTree as ET
site, dry_run = os.environ["SITE"], os.environ["DRY_RUN"] == "1"
wanted = dict(line.split("=", 1) for line in os.environ["PROPS"].splitlines() if line)
if os.environ.get("METASTORE_PASSWORD") is not None:
    wanted["javax.jdo.option.ConnectionPassword"] = os.environ["METASTORE_PASSWORD"]
root = ET.parse(site).getroot() if os.path.exists(site) else ET.Element("configuration")
current = {p.findtext("name"): p for p in root.findall("property")}
changed = False
for name, value in wanted.items():
    prop = current.get(name)
    if prop is None:
        prop = ET.SubElement(root, "property")
        ET.SubElement(prop, "name").text = name
        ET.SubElement(prop, "value").text = value
        changed = True
    elif prop.findtext("value") != value:
        prop.find("value").text = value
        changed = True
if changed and not dry_run:
    ET.indent(root)
    tmp = site + ".sensorpipe-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(b"<?xml version=\"1.0\"?>\n")
        ET.ElementTree(root).write(f, encoding="utf-8")
        f.write(b"\n")
    os.chmod(tmp, 0o640)
    os.replace(tmp, site)
print("changed" if changed else "unchanged")
'
}

configure() {
  local password_set=0
  if ((!GLUE)); then
    # Exported for the writer only; never echoed.
    METASTORE_PASSWORD=$(fetch_password) || die "cannot read the metastore password"
    export METASTORE_PASSWORD
    password_set=1
  fi
  local dir target outcome
  for dir in "${CONF_DIRS[@]}"; do
    target=$(path "$dir")
    if [[ ! -d $target ]]; then
      if ((DRY_RUN)); then
        log "dry-run: would create $target"
      else
        mkdir -p "$target"
      fi
    fi
    outcome=$(merge_site "$target/hive-site.xml")
    if [[ $outcome == changed ]]; then
      if ((DRY_RUN)); then
        log "dry-run: would update $target/hive-site.xml"
      else
        getent group hadoop >/dev/null 2>&1 && chgrp hadoop "$target/hive-site.xml"
        log "updated $target/hive-site.xml"
      fi
    else
      log "$target/hive-site.xml unchanged"
    fi
  done
  if [[ -n $DRIVER_JAR ]] && ((!GLUE)); then
    [[ -f $(path "$DRIVER_JAR") ]] || log "warning: JDBC driver $DRIVER_JAR is not on this node"
  fi
  ((password_set)) && unset METASTORE_PASSWORD
  return 0
}

wait_then_configure() {
  local waited=0 dir
  for dir in "${CONF_DIRS[@]}"; do
    until [[ -d $(path "$dir") ]]; do
      if ((waited >= WAIT_SECONDS)); then
        log "error: $dir did not appear within ${WAIT_SECONDS}s"
        return 1
      fi
      sleep 10
      waited=$((waited + 10))
    done
  done
  configure
}

main() {
  while (($#)); do
    case $1 in
      --glue) GLUE=1 ;;
      --jdbc-url) JDBC_URL=$2; shift ;;
      --user) USER_NAME=$2; shift ;;
      --password-secret-id) SECRET_ID=$2; shift ;;
      --password-env) PASSWORD_ENV=$2; shift ;;
      --region) REGION=$2; shift ;;
      --driver) DRIVER=$2; shift ;;
      --driver-jar) DRIVER_JAR=$2; shift ;;
      --warehouse-dir) WAREHOUSE_DIR=$2; shift ;;
      --conf-dir) CONF_DIRS+=("$2"); shift ;;
      --root) ROOT=$2; shift ;;
      --wait-seconds) WAIT_SECONDS=$2; shift ;;
      --dry-run) DRY_RUN=1 ;;
      --background) BACKGROUND=1 ;;
      *) die "unknown argument $1" ;;
    esac
    shift
  done
  if ((${#CONF_DIRS[@]} == 0)); then
    CONF_DIRS=(/etc/spark/conf /etc/hive/conf)
  fi
  if ((!GLUE)); then
    [[ -n $JDBC_URL && -n $USER_NAME ]] || die "--jdbc-url and --user are required (or --glue)"
    [[ -n $SECRET_ID || -n $PASSWORD_ENV ]] || die "--password-secret-id or --password-env is required"
  fi
  if ((BACKGROUND && !DRY_RUN)); then
    log "configuring the metastore in the background once the applications are installed"
    (wait_then_configure >>"$(path /tmp)/sensorpipe-metastore.log" 2>&1 &)
    return 0
  fi
  configure
}

main "$@"
