"""The resident detector store on a tmpfs shared with other local users (issue 30, items 1, 2,
6, 7). Two real Linux users: each side runs in a child process of this (root) test that has
switched to that user's uid and gids, so every permission check is the kernel's."""

from __future__ import annotations

import os
import pickle
import pwd
import subprocess
import traceback
from pathlib import Path

import numpy as np
import pytest
from sensorpipe.anomaly.detectors import make_detector
from sensorpipe.anomaly.resident import PREFIX, DetectorStore
from sensorpipe.anomaly.state import chain_digest

VICTIM, ATTACKER = "spvictim", "spattacker"
STATE = "likelihood;trees=4/42"
SPEC = "likelihood;trees=4"
KEY = ("monitor-SN0042", "heart_rate")


@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        pytest.skip("creating two users needs root (CI runs as root)")
    for user in (VICTIM, ATTACKER):
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                       capture_output=True)  # fmt: skip
    # Warm up what the children use (numba's compiled kernels, lazy imports): a child
    # running as another user cannot read /root, where this interpreter's files are.
    detector, digest = _trained()
    warm = Path(os.environ.get("TMPDIR", "/tmp")) / "sensorpipe-warm-store"
    store = DetectorStore(str(warm), 1 << 30)
    store.put(STATE, KEY, detector, 50, digest, SPEC)
    store.get(STATE, KEY, SPEC, 50, digest).close()
    subprocess.run(["rm", "-rf", str(warm)])
    yield {u: pwd.getpwnam(u) for u in (VICTIM, ATTACKER)}
    for user in (VICTIM, ATTACKER):
        subprocess.run(["userdel", user], capture_output=True)


def _trained():  # noqa: ANN202
    values = np.sin(np.arange(50) / 5) + 40
    detector = make_detector(SPEC)
    detector.update(values)
    return detector, chain_digest(b"", values)


def as_user(user: pwd.struct_passwd, fn, *args):  # noqa: ANN001, ANN201
    """fn(*args) in a child process running as `user`; its result, or its exception re-raised
    here as a RuntimeError with the child's traceback."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            result = ("ok", fn(*args))
        except BaseException:  # noqa: BLE001 - reported to the parent
            result = ("error", traceback.format_exc())
        with os.fdopen(write, "wb") as out:
            pickle.dump(result, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == "error":
        raise RuntimeError(value)
    return value


@pytest.fixture
def shm():
    """A shared tmpfs-like folder: world-writable and sticky, as /dev/shm is (under /tmp:
    pytest's own temporary folders are root's alone)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sensorpipe-shared-"))
    base.chmod(0o1777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _victim_folder(base: Path, victim: pwd.struct_passwd) -> Path:
    """The folder the victim's store will use, predicted as an attacker can from /proc: its
    uid and its JVM's pid and start time (here the victim runs under this test process, no
    JVM: the pid of its parent, start time 0)."""
    return base / f"{PREFIX}{victim.pw_uid}-{os.getpid()}-0"


def _victim_puts(base: str) -> dict:
    detector, digest = _trained()
    store = DetectorStore(base, 1 << 30)
    store.put(STATE, KEY, detector, 50, digest, SPEC)
    got = store.get(STATE, KEY, SPEC, 50, digest)
    if got is not None:
        got.close()
    files = sorted(str(p) for p in store.root.rglob("*") if p.is_file()) if store.enabled else []
    return {"enabled": store.enabled, "refused": store.refused, "hit": got is not None,
            "root": str(store.root), "files": files}  # fmt: skip


def test_a_folder_another_user_made_first_is_refused_and_gets_nothing(users, shm):
    victim, attacker = users[VICTIM], users[ATTACKER]
    planted = _victim_folder(shm, victim)

    def attacker_prepares() -> None:
        planted.mkdir()
        planted.chmod(0o777)

    as_user(attacker, attacker_prepares)
    seen = as_user(victim, _victim_puts, str(shm))
    assert seen["root"] == str(planted)  # the name the attacker predicted
    assert not seen["enabled"] and "not a private folder" in seen["refused"]
    assert list(planted.rglob("*")) == []  # nothing of the victim's went into it


def test_another_user_can_neither_list_nor_read_the_store_and_names_hide_the_keys(users, shm):
    victim, attacker = users[VICTIM], users[ATTACKER]
    seen = as_user(victim, _victim_puts, str(shm))
    assert seen["enabled"] and seen["hit"]
    root = Path(seen["root"])
    assert root.stat().st_mode & 0o777 == 0o700
    detector_files = [f for f in seen["files"] if f.endswith(".det")]
    assert len(detector_files) == 1
    assert all(Path(f).stat().st_mode & 0o777 == 0o600 for f in seen["files"])
    # The file's name is not the unkeyed digest an attacker could compute from a guessed serial.
    import hashlib

    guess = hashlib.blake2b("\x00".join((STATE, *KEY)).encode(), digest_size=16).hexdigest()
    assert guess not in detector_files[0] and "SN0042" not in detector_files[0]

    def attacker_looks() -> list[str]:
        outcomes = []
        for action in (lambda: os.listdir(root), lambda: open(detector_files[0], "rb").read(1),
                       lambda: (root / "planted").write_bytes(b"x")):  # fmt: skip
            try:
                action()
                outcomes.append("allowed")
            except PermissionError:
                outcomes.append("denied")
        return outcomes

    assert as_user(attacker, attacker_looks) == ["denied", "denied", "denied"]


def test_a_file_not_the_users_own_or_a_symlink_is_never_mapped(users, shm):
    """Root (standing in for whatever put it there) swaps in another user's copy of the key's
    file, then a symlink to a file of the victim's: the victim uses neither, and writing the
    key anew replaces the symlink without touching its target."""
    victim, attacker = users[VICTIM], users[ATTACKER]
    seen = as_user(victim, _victim_puts, str(shm))
    path = Path([f for f in seen["files"] if f.endswith(".det")][0])
    detector, digest = _trained()

    def victim_gets() -> bool:
        store = DetectorStore(str(shm), 1 << 30)
        got = store.get(STATE, KEY, SPEC, 50, digest)
        if got is not None:
            got.close()
        return got is not None

    assert as_user(victim, victim_gets)
    os.chown(path, attacker.pw_uid, attacker.pw_gid)  # same bytes, another owner
    assert not as_user(victim, victim_gets)
    precious = shm / "victims-own-file"
    precious.write_bytes(b"keep me")
    os.chown(precious, victim.pw_uid, victim.pw_gid)
    precious.chmod(0o600)
    path.unlink()
    path.symlink_to(precious)
    os.lchown(path, victim.pw_uid, victim.pw_gid)
    assert not as_user(victim, victim_gets)

    def victim_puts_again() -> bool:
        DetectorStore(str(shm), 1 << 30).put(STATE, KEY, detector, 50, digest, SPEC)
        return victim_gets()

    assert as_user(victim, victim_puts_again)
    assert precious.read_bytes() == b"keep me" and not path.is_symlink()


def test_folders_another_user_planted_in_the_base_do_not_stop_the_store(users, shm):
    """`sensorpipe-detectors-net-0` made the dead-store sweep read /proc/net/stat (a
    directory): IsADirectoryError failed every new executor's scorer (issue 30, item 2)."""
    victim, attacker = users[VICTIM], users[ATTACKER]

    def attacker_plants() -> None:
        for name in ("net-0", "self-0", "1-1", f"{victim.pw_uid}-1-1", "x"):
            (shm / f"{PREFIX}{name}").mkdir()
        (shm / f"{PREFIX}{victim.pw_uid}-999999-5").mkdir()  # looks like a dead one of his

    as_user(attacker, attacker_plants)
    seen = as_user(victim, _victim_puts, str(shm))
    assert seen["enabled"] and seen["hit"]
    # The victim removed none of the attacker's folders (not its own to judge).
    assert (shm / f"{PREFIX}{victim.pw_uid}-999999-5").is_dir()
    assert (shm / f"{PREFIX}net-0").is_dir()


def test_a_full_tmpfs_leaves_the_key_to_the_checkpoint_and_is_counted(users, shm):
    """put() raised ENOSPC, failing the task and every retry (issue 30, item 6); a container's
    default 64 MB /dev/shm hits it at once. Now the write is counted and the key restores."""
    victim = users[VICTIM]
    small = shm / "small-shm"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=1777", "tmpfs", str(small)],
                   check=True)  # fmt: skip
    try:
        def victim_fills() -> tuple:
            detector, digest = _trained()  # about 0.3 MB: more than the tmpfs holds
            store = DetectorStore(str(small), 1 << 30)
            store.put(STATE, KEY, detector, 50, digest, SPEC)
            leftovers = [p.name for p in store.root.rglob("*") if p.is_file() and p.name != "key"]
            return store.write_failures, store.get(STATE, KEY, SPEC, 50, digest), leftovers

        failures, got, leftovers = as_user(victim, victim_fills)
        assert (failures, got, leftovers) == (1, None, [])
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_resident_file_of_another_configuration_is_not_used(tmp_path):
    """An 8-tree detector was accepted for a 40-tree key with the same history (scores
    differed by up to 0.041; issue 30, item 7): the header's configuration is checked."""
    values = np.sin(np.arange(80) / 5) + 40
    digest = chain_digest(b"", values)
    store = DetectorStore(str(tmp_path), 1 << 30)
    small = make_detector("likelihood;trees=8")
    small.update(values)
    # Written as if for the key's 40-tree detector (the header's spec says so), as a stale
    # file of a reused name or another configuration would be.
    store.put("likelihood;trees=40/42", KEY, small, len(values), digest, "likelihood;trees=40")
    assert store.get("likelihood;trees=40/42", KEY, "likelihood;trees=40", len(values),
                     digest) is None  # fmt: skip
    right = make_detector("likelihood;trees=40")
    right.update(values)
    store.put("likelihood;trees=40/42", KEY, right, len(values), digest, "likelihood;trees=40")
    got = store.get("likelihood;trees=40/42", KEY, "likelihood;trees=40", len(values), digest)
    assert got is not None
    got.close()
