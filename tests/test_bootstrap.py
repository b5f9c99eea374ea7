"""Bootstrap actions: conventions, and idempotence in a sandbox (the Kerberos and metastore
scripts are also exercised against real KDCs and PostgreSQL in their own test files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox import file_tree

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "bootstrap").glob("*.sh"))


def test_scripts_are_shellcheck_clean_strict_and_have_a_dry_run():
    assert {s.name for s in SCRIPTS} >= {"install_dependencies.sh", "kerberos.sh", "metastore.sh"}
    shellcheck = Path(sys.executable).parent / "shellcheck"
    done = subprocess.run([str(shellcheck), *map(str, SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    for script in SCRIPTS:
        text = script.read_text()
        assert "set -euo pipefail" in text and "--dry-run" in text, script.name
        assert ">&2" in text, f"{script.name} logs to stderr"


def test_kerberos_parts_for_the_primary_node_are_guarded_by_is_master():
    text = (ROOT / "bootstrap/kerberos.sh").read_text()
    assert "isMaster" in text and "if ! is_master" in text


def test_a_missing_required_argument_is_named():
    done = subprocess.run(["bash", str(ROOT / "bootstrap/kerberos.sh"), "--realm", "R"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "--trusted-realm is required" in done.stderr


@pytest.mark.slow
def test_install_dependencies_twice_into_a_sandboxed_python(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(wheels), str(ROOT)], check=True)  # fmt: skip
    (wheel,) = wheels.glob("sensorpipe-*.whl")
    venv = tmp_path / "cluster-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "ensurepip", "--default-pip"],
                   check=True, capture_output=True)  # fmt: skip
    # The image is assumed to have the dependencies; here only the package itself is installed.
    env = {**os.environ, "SENSORPIPE_PIP_ARGS": "--no-deps"}
    script = ["bash", str(ROOT / "bootstrap/install_dependencies.sh"),
              "--python", str(venv / "bin/python")]  # fmt: skip
    before = file_tree(venv)
    dry = subprocess.run([*script, "--dry-run", str(wheel)], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert file_tree(venv) == before and "dry-run: would install" in dry.stderr
    first = subprocess.run([*script, str(wheel)], env=env, capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert "installed sensorpipe" in first.stderr and first.stdout == ""
    after_first = file_tree(venv)
    assert after_first != before
    second = subprocess.run([*script, str(wheel)], env=env, capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert "already installed" in second.stderr
    assert file_tree(venv) == after_first


def test_metastore_glue_twice_in_a_sandbox(tmp_path):
    script = ["bash", str(ROOT / "bootstrap/metastore.sh"), "--glue", "--root", str(tmp_path),
              "--conf-dir", "/etc/spark/conf", "--conf-dir", "/etc/hive/conf"]  # fmt: skip
    env = {**os.environ, "SENSORPIPE_BOOTSTRAP_PYTHON": sys.executable}
    subprocess.run([*script, "--dry-run"], env=env, capture_output=True, check=True)
    assert file_tree(tmp_path) == {}
    subprocess.run(script, env=env, capture_output=True, check=True)
    first = file_tree(tmp_path)
    assert set(first) == {"etc/spark/conf/hive-site.xml", "etc/hive/conf/hive-site.xml"}
    site = (tmp_path / "etc/spark/conf/hive-site.xml").read_text()
    assert "AWSGlueDataCatalogHiveClientFactory" in site
    second = subprocess.run(script, env=env, capture_output=True, text=True, check=True)
    assert file_tree(tmp_path) == first
    assert second.stderr.count("unchanged") == 2
