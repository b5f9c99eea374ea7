"""Removes an executor's resident-detector folder once its JVM is gone (issue 30, item 5).

Live executors sweep the folders of gone ones (anomaly/resident.py), but the last executor of
a node, or of a user, has no one after it: its detectors, gigabytes of `/dev/shm`, would stay
until the node stops. So the worker that creates an executor's folder starts this watcher, in
a session of its own, and it polls the JVM by pid and start time every few seconds. YARN ends
a container by signalling its process group, which the watcher has left; where YARN's cgroups
kill every process of a container, the watcher goes too and the next executor's sweep is what
remains (not verified on EMR: tested here with a stand-in JVM and a local Spark). Standard
library only: it idles for the executor's whole life, and must not hold numpy's memory.

    python -m sensorpipe.anomaly.reaper FOLDER PID START [INTERVAL_SECONDS]
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

REAP_SECONDS = 5.0  # how often the watcher looks for its JVM


def alive(pid: int, start: str) -> bool:
    """Whether the JVM `pid` started at `start` still runs ("0": any process of that pid);
    True when that cannot be told (a /proc mounted with hidepid): a folder is removed only
    when its JVM is known gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        return start == "0" or text[text.rindex(")") + 2 :].split()[19] == start
    except (ValueError, IndexError):
        return True


def private(path: Path) -> bool:
    """`path` is a real directory of this user that no other user may enter or change."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and info.st_mode & 0o077 == 0)  # fmt: skip


def reap_when_gone(folder: Path, pid: int, start: str, interval: float) -> None:
    while alive(pid, start):
        time.sleep(interval)
    if private(folder):  # still ours, as made: nothing else is removed
        shutil.rmtree(folder, ignore_errors=True)


def start_reaper(folder: Path, pid: int, start: str) -> subprocess.Popen | None:
    """Start the watcher of `folder`'s JVM, detached (it ends once it has removed the
    folder); a failure to start it only leaves the folder to the next executor's sweep."""
    interval = REAP_SECONDS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sensorpipe.anomaly.reaper", str(folder), str(pid), start,
             str(interval)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, env=env,
        )  # fmt: skip
    except OSError:
        return None


if __name__ == "__main__":
    reap_when_gone(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                   float(sys.argv[4]) if len(sys.argv) > 4 else REAP_SECONDS)  # fmt: skip
