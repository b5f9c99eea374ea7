"""An EMR node as the bootstrap actions and steps meet it, with real users and real `sudo`:
`hadoop` (here `sphadoop`) runs them and reaches root through a passwordless sudoers entry, as
EMR grants it; `spnosudo` has no such entry (a forced failure). Creating users needs root:
without it (a developer's machine) the tests that need these users skip, saying so; CI runs
as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEP_USER = "sphadoop"
NO_SUDO_USER = "spnosudo"
SUDOERS = Path("/etc/sudoers.d/sensorpipe-tests")


@dataclass
class Node:
    """A sandboxed root (root-owned, 0755: only sudo writes below it) with EMR's instance.json
    and a copy of the node script the step user can read."""

    root: Path
    script: Path

    def run(
        self, user: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        assignments = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(
            ["sudo", "-n", "-u", user, "env", *assignments, "bash", str(self.script), *args,
             "--root", str(self.root)],
            capture_output=True, text=True, cwd="/",
        )  # fmt: skip


def make_node(primary: bool) -> Node:
    base = Path(tempfile.mkdtemp(prefix="sensorpipe-node-"))
    base.chmod(0o755)
    root = base / "root"
    info = root / "mnt/var/lib/info"
    info.mkdir(parents=True)
    (info / "instance.json").write_text(f'{{"isMaster": {"true" if primary else "false"}}}')
    for p in (root, root / "mnt", root / "mnt/var", root / "mnt/var/lib", info):
        p.chmod(0o755)
    script = base / "sensorpipe_node.sh"
    shutil.copy(ROOT / "bootstrap/sensorpipe_node.sh", script)
    script.chmod(0o755)
    return Node(root, script)


def user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True).returncode == 0


def delete_user(name: str) -> None:
    if user_exists(name):
        subprocess.run(["userdel", name], capture_output=True, check=True)


def create_emr_users() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating the hadoop-like users and their sudoers entry needs root (CI)")
    if shutil.which("sudo") is None:
        pytest.fail("sudo is not installed: `make system-packages` installs it")
    for user in (STEP_USER, NO_SUDO_USER):
        if not user_exists(user):
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
    SUDOERS.write_text(f"{STEP_USER} ALL=(ALL) NOPASSWD: ALL\n")
    SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, check=True)


def remove_emr_users() -> None:
    SUDOERS.unlink(missing_ok=True)
    for user in (STEP_USER, NO_SUDO_USER):
        subprocess.run(["userdel", "--remove", user], capture_output=True)
