"""Bootstrap actions as EMR runs them: as the `hadoop` user (here `sphadoop`) with real `sudo`,
on a primary and a core node (their instance.json), in a root-owned sandbox only sudo can write
to. The jobs' keytab step is exercised against a real KDC in test_kerberos.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.emr_node import NO_SUDO_USER, STEP_USER, delete_user, make_node, user_exists
from tests.sandbox import file_tree

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "bootstrap").glob("*.sh"))
KEYTAB = "/etc/security/keytabs/sensorpipe.keytab"
JOBS_USER = "spjobs"


def test_scripts_are_shellcheck_clean_strict_and_have_a_dry_run():
    assert {s.name for s in SCRIPTS} == {"kerberos.sh", "sensorpipe_node.sh"}
    shellcheck = Path(sys.executable).parent / "shellcheck"
    done = subprocess.run([str(shellcheck), *map(str, SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    for script in SCRIPTS:
        text = script.read_text()
        assert "euo pipefail" in text and "--dry-run" in text, script.name
        assert ">&2" in text, f"{script.name} logs to stderr"
        assert "|| true" not in text, f"{script.name}: a failure must not be hidden"


def test_a_missing_required_argument_is_named():
    done = subprocess.run(["bash", str(ROOT / "bootstrap/kerberos.sh"), "--realm", "R"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "--trusted-realm is required" in done.stderr
    done = subprocess.run(["bash", str(ROOT / "bootstrap/sensorpipe_node.sh"), "user"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "--user is required" in done.stderr


@pytest.fixture
def jobs_user():
    delete_user(JOBS_USER)
    yield JOBS_USER
    delete_user(JOBS_USER)


def user_action(user: str) -> list[str]:
    return ["user", "--user", user, "--keytab", KEYTAB, "--step-user", STEP_USER]


def test_jobs_user_on_primary_and_core_as_hadoop_with_sudo(emr_users, jobs_user):
    primary, core = make_node(primary=True), make_node(primary=False)
    # The dry run changes nothing: the node's tree as it was before it (the tree was compared
    # with itself, which could not fail: issue 30's test audit).
    before = file_tree(primary.root)
    dry = primary.run(STEP_USER, *user_action(jobs_user), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not user_exists(jobs_user) and file_tree(primary.root) == before
    assert not (primary.root / "etc").exists() and "dry-run: would run" in dry.stderr

    first = primary.run(STEP_USER, *user_action(jobs_user))
    assert first.returncode == 0, first.stderr
    assert user_exists(jobs_user)
    keytab_dir = primary.root / "etc/security/keytabs"
    owner = subprocess.run(["stat", "-c", "%U:%G %a", str(keytab_dir)], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    assert owner == [f"root:{STEP_USER}", "750"]  # the step user's group reads the keytab
    after = file_tree(primary.root)
    second = primary.run(STEP_USER, *user_action(jobs_user))
    assert second.returncode == 0 and file_tree(primary.root) == after
    assert f"user {jobs_user} exists" in second.stderr and "unchanged" in second.stderr

    on_core = core.run(STEP_USER, *user_action(jobs_user))
    assert on_core.returncode == 0, on_core.stderr
    assert "not the primary node" in on_core.stderr
    assert not (core.root / "etc").exists()


def test_a_forced_failure_exits_non_zero_naming_the_step(emr_users, jobs_user):
    """Without a sudoers entry `sudo -n` refuses: the node must fail, saying where."""
    node = make_node(primary=True)
    done = node.run(NO_SUDO_USER, *user_action(jobs_user))
    assert done.returncode != 0
    assert f"error: step 'jobs user {jobs_user}' failed" in done.stderr
    assert not user_exists(jobs_user)
    # The keytab directory step on the primary fails the same way when only it lacks root.
    subprocess.run(["useradd", "--system", jobs_user], check=True)
    done = node.run(NO_SUDO_USER, *user_action(jobs_user))
    assert done.returncode != 0
    assert f"error: step 'keytab directory for {STEP_USER}' failed" in done.stderr


@pytest.mark.slow
def test_wheel_into_a_root_owned_python_as_hadoop_twice(emr_users, tmp_path):
    node = make_node(primary=False)
    wheels = node.root.parent / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(wheels), str(ROOT)], check=True)  # fmt: skip
    wheels.chmod(0o755)
    (wheel,) = wheels.glob("sensorpipe-*.whl")
    wheel.chmod(0o644)
    venv = node.root / "usr/local/cluster-python"
    # The system's interpreter: this venv's lives where the step user cannot reach (pyenv).
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin/python")
    # The image is assumed to have the dependencies; only the package itself is installed.
    env = {"SENSORPIPE_PIP_ARGS": "--no-deps --no-index"}
    before = file_tree(venv)
    dry = node.run(STEP_USER, "wheel", "--python", python, "--dry-run", str(wheel), env=env)
    assert dry.returncode == 0 and file_tree(venv) == before, dry.stderr
    first = node.run(STEP_USER, "wheel", "--python", python, str(wheel), env=env)
    assert first.returncode == 0, first.stderr
    assert "install sensorpipe" in first.stderr and first.stdout == ""
    after = file_tree(venv)
    assert after != before
    second = node.run(STEP_USER, "wheel", "--python", python, str(wheel), env=env)
    assert second.returncode == 0 and "already installed" in second.stderr
    assert file_tree(venv) == after
    # As the user without sudo, the install into a root-owned Python fails, naming the step.
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "sensorpipe"],
                   check=True)  # fmt: skip
    denied = node.run(NO_SUDO_USER, "wheel", "--python", python, str(wheel), env=env)
    assert denied.returncode != 0 and "step 'install sensorpipe" in denied.stderr
