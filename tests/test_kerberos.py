"""Kerberos against real MIT KDCs: a cluster realm and a corporate realm it trusts, on loopback.
The bootstrap action writes krb5.conf and the jobs' keytab in a sandboxed root; everything
else (kinit, kvno, a JVM login) uses exactly what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kdc import ENCTYPE, MitKdc
from tests.sandbox import file_tree

ROOT = Path(__file__).resolve().parent.parent
CLUSTER, CORP = "CLUSTER.TEST", "CORP.TEST"
HOST = "node1.cluster.test"
SERVICE = f"sensorpipe/{HOST}@{CLUSTER}"
KEYTAB = "/etc/security/keytabs/sensorpipe.keytab"
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
        yield cluster, corp
    finally:
        cluster.stop()
        corp.stop()


def sandbox(tmp: Path, master: bool = True) -> Path:
    root = tmp / "root"
    info = root / "mnt/var/lib/info"
    info.mkdir(parents=True)
    (info / "instance.json").write_text(f'{{"isMaster": {"true" if master else "false"}}}')
    (info / "job-flow.json").write_text('{"jobFlowId": "j-TEST", "masterPrivateDnsName": "x"}')
    return root


def bootstrap(
    root: Path, cluster: MitKdc, corp: MitKdc, *extra: str
) -> subprocess.CompletedProcess:
    args = [
        "bash", str(ROOT / "bootstrap/kerberos.sh"),
        "--realm", CLUSTER, "--kdc", cluster.address, "--domain", "cluster.test",
        "--trusted-realm", CORP, "--trusted-domain", "corp.test", "--trusted-kdc", corp.address,
        "--principal", "sensorpipe", "--host", HOST, "--keytab", KEYTAB,
        "--root", str(root), *extra,
    ]  # fmt: skip
    # KRB5_KDC_PROFILE: where kadmin.local finds the cluster KDC's database (on EMR, the default).
    return subprocess.run(
        args, env={**os.environ, "KRB5_KDC_PROFILE": str(cluster.kdc_conf)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def configured(realms, tmp_path_factory):
    cluster, corp = realms
    root = sandbox(tmp_path_factory.mktemp("node"))
    first = bootstrap(root, cluster, corp)
    return root, first


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
    assert f"created principal {SERVICE}" in first.stderr
    assert (root / KEYTAB.lstrip("/")).stat().st_mode & 0o777 == 0o600


def test_corporate_user_gets_a_cluster_service_ticket_through_the_trust(configured, tmp_path):
    root, _ = configured
    env = krb5_env(root, tmp_path)
    subprocess.run(["kinit", f"alice@{CORP}"], input=ALICE_PASSWORD + "\n", env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    subprocess.run(["kvno", SERVICE], env=env, capture_output=True, text=True, check=True)
    tickets = subprocess.run(["klist"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"krbtgt/{CLUSTER}@{CORP}" in tickets  # the cross-realm ticket
    assert SERVICE in tickets  # the service ticket from the cluster realm's KDC


def test_corporate_user_without_the_trust_principal_gets_no_ticket(configured, realms, tmp_path):
    """The control: the same request fails once the cluster realm no longer trusts CORP."""
    root, _ = configured
    cluster, _ = realms
    env = krb5_env(root, tmp_path)
    subprocess.run(["kinit", f"alice@{CORP}"], input=ALICE_PASSWORD + "\n", env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    cluster.kadmin(f"delprinc -force krbtgt/{CLUSTER}@{CORP}")
    try:
        denied = subprocess.run(["kvno", SERVICE], env=env, capture_output=True, text=True)
        assert denied.returncode != 0
    finally:
        cluster.kadmin(f"addprinc -pw cross-realm-trust-secret krbtgt/{CLUSTER}@{CORP}")


def test_jobs_keytab_logs_in_with_kinit(configured, tmp_path):
    root, _ = configured
    env = krb5_env(root, tmp_path)
    subprocess.run(["kinit", "-kt", str(root / KEYTAB.lstrip("/")), SERVICE], env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    tickets = subprocess.run(["klist"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"Default principal: {SERVICE}" in tickets


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
def test_jvm_logs_in_from_the_keytab_with_the_written_krb5_conf(configured, tmp_path):
    root, _ = configured
    ok = jvm_login(root, root / KEYTAB.lstrip("/"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"krb5.conf: {root / 'etc/krb5.conf'}" in ok.stdout
    assert f"logged in as {SERVICE} kerberos: True" in ok.stdout
    denied = jvm_login(root, wrong_keytab(tmp_path / "wrong.keytab"))
    assert denied.returncode == 1 and "login failed" in denied.stdout


def test_bootstrap_runs_twice_and_the_second_run_changes_nothing(realms, tmp_path):
    cluster, corp = realms
    root = sandbox(tmp_path)
    before = file_tree(root)
    dry = bootstrap(root, cluster, corp, "--dry-run")
    assert file_tree(root) == before  # a dry run writes nothing
    assert "dry-run: would write" in dry.stderr and "dry-run: would export" in dry.stderr
    bootstrap(root, cluster, corp)
    after_first = file_tree(root)
    kvno = cluster.kadmin(f"getprinc sensorpipe/{HOST}@{CLUSTER}")
    assert "etc/krb5.conf" in after_first and KEYTAB.lstrip("/") in after_first
    second = bootstrap(root, cluster, corp)
    assert file_tree(root) == after_first
    assert cluster.kadmin(f"getprinc sensorpipe/{HOST}@{CLUSTER}") == kvno  # key not rotated
    assert "unchanged" in second.stderr and "holds the current key" in second.stderr
    dry_again = bootstrap(root, cluster, corp, "--dry-run")
    assert file_tree(root) == after_first and "would" not in dry_again.stderr


def test_a_core_node_gets_krb5_conf_but_no_principal_or_keytab(realms, tmp_path):
    cluster, corp = realms
    root = sandbox(tmp_path, master=False)
    done = bootstrap(root, cluster, corp)
    assert (root / "etc/krb5.conf").exists()
    assert not (root / KEYTAB.lstrip("/")).exists()
    assert "not the primary node" in done.stderr
