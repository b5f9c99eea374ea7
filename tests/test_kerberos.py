"""Kerberos against real MIT KDCs: a cluster realm and a corporate realm it trusts, on loopback.
kerberos.sh writes krb5.conf in a sandboxed root (what the security configuration writes on the
cluster's nodes); the keytab step of emr-streaming-steps.json, filled as `sensorpipe deploy`
fills it, runs as the step user with sudo and makes the jobs' keytab; kinit (as the step user),
kvno and a JVM login use exactly what was written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emr_node import NO_SUDO_USER, STEP_USER, Node, make_node
from tests.kdc import ENCTYPE, MitKdc
from tests.sandbox import file_tree

ROOT = Path(__file__).resolve().parent.parent
CLUSTER, CORP = "CLUSTER.TEST", "CORP.TEST"
SERVICE = f"sensorpipe@{CLUSTER}"  # the jobs' one principal, as conf/deploy.yaml names it
CLUSTER_SERVICE = f"spark/node1.cluster.test@{CLUSTER}"  # a service of the cluster realm
ALICE_PASSWORD = "alice-corp-password"


@pytest.fixture(scope="module")
def realms(tmp_path_factory):
    """Two KDCs; alice in the corporate realm; the cross-realm principal in both databases
    (same password, so the same key: the cluster realm trusts the corporate one)."""
    base = tmp_path_factory.mktemp("kdcs")
    cluster = MitKdc.start(CLUSTER, base / "cluster")
    corp = MitKdc.start(CORP, base / "corp")
    try:
        for kdc in (cluster, corp):
            kdc.kadmin(f"addprinc -pw cross-realm-trust-secret krbtgt/{CLUSTER}@{CORP}")
        corp.kadmin(f"addprinc -pw {ALICE_PASSWORD} alice@{CORP}")
        cluster.kadmin(f"addprinc -randkey {CLUSTER_SERVICE}")
        yield cluster, corp
    finally:
        cluster.stop()
        corp.stop()


def sandbox(tmp: Path) -> Path:
    root = tmp / "root"
    info = root / "mnt/var/lib/info"
    info.mkdir(parents=True)
    (info / "job-flow.json").write_text('{"jobFlowId": "j-TEST", "masterPrivateDnsName": "x"}')
    return root


def bootstrap(
    root: Path, cluster: MitKdc, corp: MitKdc, *extra: str
) -> subprocess.CompletedProcess:
    args = [
        "bash", str(ROOT / "bootstrap/kerberos.sh"),
        "--realm", CLUSTER, "--kdc", cluster.address, "--domain", "cluster.test",
        "--trusted-realm", CORP, "--trusted-domain", "corp.test", "--trusted-kdc", corp.address,
        "--root", str(root), *extra,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def configured(realms, tmp_path_factory):
    cluster, corp = realms
    root = sandbox(tmp_path_factory.mktemp("node"))
    first = bootstrap(root, cluster, corp)
    return root, first


def streaming_steps() -> list[dict]:
    """emr-streaming-steps.json as `sensorpipe deploy` fills it for this realm and step user."""
    from datetime import date

    from sensorpipe.config import DeploySettings, load_settings
    from sensorpipe_tools.deploy import placeholder_values, plan_steps

    from tests.test_emr_deploy import DEPLOY_ENV

    env = {**DEPLOY_ENV, "SENSORPIPE_KERBEROS_REALM": CLUSTER, "SENSORPIPE_STEP_USER": STEP_USER}
    settings = load_settings(ROOT / "conf/deploy.yaml", environ=env, kind=DeploySettings)
    values = placeholder_values(settings, "v1", date(2026, 11, 1))
    return plan_steps(settings, ROOT, values, "stream")


def run_keytab_step(node: Node, cluster: MitKdc, user: str = STEP_USER, *extra: str):
    """The keytab step as EMR's script-runner runs it: the script with the step's other args."""
    (keytab_step,) = [s for s in streaming_steps() if s["Name"] == "sensorpipe jobs keytab"]
    assert keytab_step["Args"][0].endswith("/bootstrap/sensorpipe_node.sh")
    env = {
        "KRB5_KDC_PROFILE": str(cluster.kdc_conf),
        "KRB5_CONFIG": str(cluster.folder / "krb5.conf"),
    }
    return node.run(user, *keytab_step["Args"][1:], *extra, env=env)


@pytest.fixture(scope="module")
def keytab_node(realms, emr_users):
    cluster, _ = realms
    node = make_node(primary=True)
    done = run_keytab_step(node, cluster)
    assert done.returncode == 0, done.stderr
    stream = next(s for s in streaming_steps() if "stream_sensor_anomalies" in s["Name"])
    args = stream["Args"]
    keytab = node.root / args[args.index("--keytab") + 1].lstrip("/")
    return node, keytab, args[args.index("--principal") + 1]


def krb5_env(root: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KRB5_CONFIG": str(root / "etc/krb5.conf"),
        "KRB5CCNAME": f"FILE:{tmp / 'ccache'}",
    }


def test_krb5_conf_names_both_realms_domains_and_the_trust_path(configured, realms):
    root, first = configured
    text = (root / "etc/krb5.conf").read_text()
    cluster, corp = realms
    for needed in (
        f"default_realm = {CLUSTER}", f"kdc = {cluster.address}", f"kdc = {corp.address}",
        f".cluster.test = {CLUSTER}", f".corp.test = {CORP}", "[capaths]",
    ):  # fmt: skip
        assert needed in text


def test_corporate_user_gets_a_cluster_service_ticket_through_the_trust(configured, tmp_path):
    root, _ = configured
    env = krb5_env(root, tmp_path)
    subprocess.run(["kinit", f"alice@{CORP}"], input=ALICE_PASSWORD + "\n", env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    subprocess.run(["kvno", CLUSTER_SERVICE], env=env, capture_output=True, text=True, check=True)
    tickets = subprocess.run(["klist"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"krbtgt/{CLUSTER}@{CORP}" in tickets  # the cross-realm ticket
    assert CLUSTER_SERVICE in tickets  # the service ticket from the cluster realm's KDC


def test_corporate_user_without_the_trust_principal_gets_no_ticket(configured, realms, tmp_path):
    """The control: the same request fails once the cluster realm no longer trusts CORP."""
    root, _ = configured
    cluster, _ = realms
    env = krb5_env(root, tmp_path)
    subprocess.run(["kinit", f"alice@{CORP}"], input=ALICE_PASSWORD + "\n", env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    cluster.kadmin(f"delprinc -force krbtgt/{CLUSTER}@{CORP}")
    try:
        denied = subprocess.run(["kvno", CLUSTER_SERVICE], env=env, capture_output=True, text=True)
        assert denied.returncode != 0
    finally:
        cluster.kadmin(f"addprinc -pw cross-realm-trust-secret krbtgt/{CLUSTER}@{CORP}")


def test_the_step_principal_is_the_keytabs_and_logs_in_as_the_step_user(keytab_node, configured):
    node, keytab, step_principal = keytab_node
    assert step_principal == SERVICE
    listed = subprocess.run(["klist", "-k", str(keytab)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert {line.split()[1] for line in listed.splitlines()[3:] if line.strip()} == {SERVICE}
    assert subprocess.run(["stat", "-c", "%U %a", str(keytab)], capture_output=True, text=True,
                          check=True).stdout.split() == [STEP_USER, "400"]  # fmt: skip
    # kinit as the step user, with the krb5.conf of the cluster realm (readable by all).
    root, _ = configured
    krb5 = node.root.parent / "krb5.conf"
    krb5.write_text((root / "etc/krb5.conf").read_text())
    krb5.chmod(0o644)
    script = f"kinit -kt {keytab} {step_principal} && klist"
    done = subprocess.run(
        ["sudo", "-n", "-u", STEP_USER, "env", f"KRB5_CONFIG={krb5}",
         f"KRB5CCNAME=FILE:/tmp/krb5cc_sensorpipe_test_{os.getpid()}", "bash", "-c", script],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Default principal: {SERVICE}" in done.stdout
    # Another user cannot read it.
    denied = subprocess.run(["sudo", "-n", "-u", NO_SUDO_USER, "cat", str(keytab)],
                            capture_output=True, text=True)  # fmt: skip
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def wrong_keytab(path: Path) -> Path:
    """A keytab for the service principal holding a key derived from the wrong password."""
    script = (
        f"addent -password -p {SERVICE} -k 2 -e {ENCTYPE}\nnot-the-password\nwkt {path}\nquit\n"
    )
    subprocess.run(["ktutil"], input=script, capture_output=True, text=True, check=True)
    return path


def test_a_wrong_keytab_fails_to_log_in(configured, tmp_path):
    root, _ = configured
    env = krb5_env(root, tmp_path)
    denied = subprocess.run(["kinit", "-kt", str(wrong_keytab(tmp_path / "wrong.keytab")), SERVICE],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert denied.returncode != 0
    assert "Preauthentication failed" in denied.stderr or "Password incorrect" in denied.stderr


def jvm_login(root: Path, keytab: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests/jvm_kerberos_login.py"), str(root / "etc/krb5.conf"),
         SERVICE, str(keytab)],
        capture_output=True, text=True, timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("KRB5")},
    )  # fmt: skip


@pytest.mark.slow
def test_jvm_logs_in_from_the_keytab_with_the_written_krb5_conf(configured, keytab_node, tmp_path):
    root, _ = configured
    ok = jvm_login(root, keytab_node[1])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"krb5.conf: {root / 'etc/krb5.conf'}" in ok.stdout
    assert f"logged in as {SERVICE} kerberos: True" in ok.stdout
    denied = jvm_login(root, wrong_keytab(tmp_path / "wrong.keytab"))
    assert denied.returncode == 1 and "login failed" in denied.stdout


def test_krb5_conf_twice_and_the_second_run_changes_nothing(realms, tmp_path):
    cluster, corp = realms
    root = sandbox(tmp_path)
    before = file_tree(root)
    dry = bootstrap(root, cluster, corp, "--dry-run")
    assert file_tree(root) == before and "dry-run: would write" in dry.stderr
    bootstrap(root, cluster, corp)
    after_first = file_tree(root)
    assert "etc/krb5.conf" in after_first
    second = bootstrap(root, cluster, corp)
    assert file_tree(root) == after_first and "unchanged" in second.stderr


def test_keytab_step_twice_keeps_the_key_and_changes_nothing(realms, keytab_node):
    cluster, _ = realms
    node, keytab, _ = keytab_node
    kvno = cluster.kadmin(f"getprinc {SERVICE}")
    before = file_tree(node.root)
    dry = run_keytab_step(node, cluster, STEP_USER, "--dry-run")
    again = run_keytab_step(node, cluster)
    assert dry.returncode == 0 and again.returncode == 0, again.stderr
    assert file_tree(node.root) == before
    assert cluster.kadmin(f"getprinc {SERVICE}") == kvno  # key not rotated
    assert "holds the current key" in again.stderr and "would" not in dry.stderr


def test_keytab_step_refuses_a_core_node_and_a_user_without_sudo(realms, emr_users):
    cluster, _ = realms
    core = run_keytab_step(make_node(primary=False), cluster)
    assert core.returncode != 0 and "run this step there" in core.stderr
    denied = run_keytab_step(make_node(primary=True), cluster, NO_SUDO_USER)
    assert denied.returncode != 0 and "error: step 'principal" in denied.stderr


FAKE_HDFS = """#!/usr/bin/env bash
# A stand-in for EMR's hdfs client (a mock: no HDFS runs here). The namespace is a folder;
# every call is logged; it refuses a caller without a ticket of the HDFS superuser.
set -euo pipefail
ns={ns}; log={log}
klist -s || {{ echo "hdfs: no Kerberos ticket" >&2; exit 1; }}
case $(klist | sed -n 's/^Default principal: //p') in
  hdfs/*) ;;
  *) echo "hdfs: not the HDFS superuser" >&2; exit 1 ;;
esac
echo "$*" >>"$log"
[[ $1 == dfs ]] || exit 2
case $2 in
  -test) [[ -d $ns$4 ]] ;;
  -mkdir) mkdir -p "$ns$4" ;;
  -chown) echo "$3" >"$ns$4/.owner" ;;
  -chmod) echo "$3" >"$ns$4/.mode" ;;
  -stat) printf '%s %s\\n' "$(cut -d: -f1 "$ns$4/.owner" 2>/dev/null || echo hdfs)" \\
           "$(cat "$ns$4/.mode" 2>/dev/null || echo 755)" ;;
  *) exit 2 ;;
esac
"""


def test_hdfs_home_step_makes_the_jobs_home_once_as_the_hdfs_superuser_mock_hdfs(
    realms, emr_users, tmp_path
):
    """The HDFS home step of emr-streaming-steps.json, as the step user with sudo: a ticket
    of hdfs/<this host> from the real cluster KDC with /etc/hdfs.keytab, then /user/sensorpipe
    owned by sensorpipe, mode 700, where spark-submit stages in cluster mode. HDFS cannot run
    here: `hdfs` is a stand-in that keeps the namespace in a folder and refuses any caller not
    holding the superuser's ticket. A second run changes nothing; a dry run nothing at all."""
    cluster, _ = realms
    node = make_node(primary=True)
    host = subprocess.run(["hostname", "-f"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    superuser = f"hdfs/{host}@{CLUSTER}"
    cluster.kadmin(f"addprinc -randkey {superuser}")
    (node.root / "etc").mkdir(mode=0o755)
    cluster.kadmin(f"ktadd -k {node.root / 'etc/hdfs.keytab'} {superuser}")
    ns, log, fake = tmp_path / "hdfs-namespace", tmp_path / "hdfs.log", tmp_path / "hdfs"
    ns.mkdir()
    fake.write_text(FAKE_HDFS.format(ns=ns, log=log))
    fake.chmod(0o755)
    (step,) = [s for s in streaming_steps() if s["Name"] == "sensorpipe jobs HDFS home"]
    env = {"KRB5_CONFIG": str(cluster.folder / "krb5.conf"), "SENSORPIPE_HDFS": str(fake)}

    dry = node.run(STEP_USER, *step["Args"][1:], "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry-run: would run: hdfs_dfs -mkdir -p /user/sensorpipe" in dry.stderr
    assert not (ns / "user").exists()
    first = node.run(STEP_USER, *step["Args"][1:], env=env)
    assert first.returncode == 0, first.stderr
    home = ns / "user/sensorpipe"
    assert (home / ".owner").read_text().strip() == "sensorpipe:sensorpipe"
    assert (home / ".mode").read_text().strip() == "700"
    calls = log.read_text().splitlines()
    second = node.run(STEP_USER, *step["Args"][1:], env=env)
    assert second.returncode == 0, second.stderr
    again = log.read_text().splitlines()[len(calls):]
    assert again and not [c for c in again if c.split()[1] in ("-mkdir", "-chown", "-chmod")]
    assert "unchanged" in second.stderr
    # Without the superuser's keytab the step fails, naming what it was doing.
    (node.root / "etc/hdfs.keytab").unlink()
    failed = node.run(STEP_USER, *step["Args"][1:], env=env)
    assert failed.returncode != 0
    assert "step 'HDFS superuser ticket" in failed.stderr
