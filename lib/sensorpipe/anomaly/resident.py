"""Detectors resident between micro-batches, one copy per executor, shared by its Python workers.

Spark hands a task to whichever Python worker of the executor is idle, so a key is scored by
one worker in one batch and by another in the next: a cache inside each worker would be stale
half the time (measured: about 50% misses with two workers) and would hold a copy per worker.
Instead each key's detector lives in one file in shared memory (tmpfs, `/dev/shm` by default),
mapped by the worker that scores it: the numba kernels update its arrays in place, nothing is
copied or decoded, and every worker of the executor sees the same, current state.

A file is a cache, never the truth. Its header holds the points and the digest of the history
it has seen; it is used only if both equal what the checkpoint's record of the key says, and
marked dirty while a batch updates it (a worker killed half way leaves a file that is not used
again). Otherwise the key is restored from the state store (anomaly/state.py) and its file is
written anew. The files of an executor live under a folder named after its user and its JVM
(uid, pid and start time); folders of executors that are gone are removed, and the total is
bounded (least recently used files out first).

A shared tmpfs is shared with every local user, so nothing there is trusted that this user did
not make (issue 30: a second user pre-created the predictable folder, read the keys, swapped a
detector in and planted a symlink):

- the executor's folder is created 0700 by this process, or accepted only if it is a real
  directory owned by this user that no one else may enter; otherwise the store is off and every
  key is restored from the checkpoint (correct, slower; logged once);
- a file is created under a random name with O_EXCL | O_NOFOLLOW, mode 0600, then renamed into
  place; a file is mapped only after fstat shows a regular file of this user, not opened
  through a symlink;
- file names are keyed digests of the key (a random key kept in the private folder), and the
  header records the detector's configuration and a keyed reference of its key, both checked;
- the sweep of dead executors' folders looks only at this user's folders and never raises, and
  a watcher removes an executor's folder once its JVM ends (anomaly/reaper.py);
- a failure to write (a full tmpfs: ENOSPC) leaves the key to the checkpoint, counted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import logging
import mmap
import os
import re
import resource
import secrets
import shutil
import stat
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from sensorpipe.anomaly.detectors import attach_detector, make_detector
from sensorpipe.anomaly.reaper import alive, private, start_reaper

LOG = logging.getLogger(__name__)

MAGIC = b"SPDET002"
HEADER = struct.Struct("<8sqB16s")  # magic, points, dirty, digest
HEADER_BYTES = 4096
ALIGN = 64
PREFIX = "sensorpipe-detectors-"
# Files a worker keeps mapped (address space only; the pages are the executor's, shared), at
# most. Before 3.13 (mmap's trackfd) a mapping holds the descriptor Python's mmap duplicates,
# so the process's descriptor limit, less FDS_KEPT_FREE, bounds it too (mapping_limit). Any
# worker serves any bucket, so it maps nearly every key: at 20,000 keys, with two descriptors
# a mapping, the scorer failed with EMFILE (limit 20,000 here; YARN's is often 32,768).
MAX_MAPPINGS = 65536
FDS_KEPT_FREE = 512
# Each mapping is also one of the process's memory map areas, which the kernel bounds by
# vm.max_map_count (65,530 by default, below MAX_MAPPINGS); the worker's own libraries and
# heap hold some already, and the process needs room for more.
MAP_AREAS_KEPT_FREE = 4096
# A partial write older than this was left by a worker that died while writing it.
STALE_TMP_SECONDS = 600
# Every this many evictions (one every 64 files written) a worker also sweeps the folders of
# this user's executors that are gone.
SWEEP_EVERY_EVICTIONS = 16


def _executor_jvm() -> str:
    """pid and start time of the JVM this Python worker belongs to (worker -> daemon -> JVM),
    as a folder name; the start time tells a reused pid apart."""
    pid = os.getppid()
    for _ in range(3):
        if pid <= 1:
            break
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            java = Path(f"/proc/{pid}/exe").resolve().name == "java"
        except OSError:  # an ancestor we may not inspect (init, another user's): not ours
            break
        fields = stat[stat.rindex(")") + 2 :].split()
        if java:
            return f"{pid}-{fields[19]}"
        pid = int(fields[1])
    return f"{os.getppid()}-0"  # not under a JVM (a test calling the scorer directly)


_FOLDER = re.compile(rf"^{PREFIX}(\d+)-(\d+)-(\d+)$")


def _make_private(path: Path) -> tuple[bool, bool]:
    """Create `path` 0700, or accept one that is already a private folder of this user:
    (private, made by this call)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return private(path), False
    except OSError:
        return False, False
    return private(path), True


def _layout_offsets(layout: dict[str, tuple[Any, tuple[int, ...]]]) -> tuple[dict, int]:
    offsets, at = {}, HEADER_BYTES
    for name, (dtype, shape) in layout.items():
        size = int(np.dtype(dtype).itemsize * int(np.prod(shape)))
        offsets[name] = (at, np.dtype(dtype), shape)
        at += -(-size // ALIGN) * ALIGN
    return offsets, at


_PARSED: dict[bytes, tuple[dict, tuple]] = {}


def _identity(meta: bytes) -> tuple[str | None, str | None]:
    """The detector spec and keyed key reference a file's header records."""
    data = json.loads(meta)
    return data.get("spec"), data.get("key")


def _parsed(meta: bytes) -> tuple[dict, tuple]:
    """A file's layout and detector config (the same few for every key: parsed once)."""
    if meta not in _PARSED:
        data = json.loads(meta)
        layout = {k: (np.dtype(d), tuple(shape)) for k, (d, shape) in data["layout"].items()}
        _PARSED[meta] = (_layout_offsets(layout)[0], tuple(data["config"]))
    return _PARSED[meta]


def _free_map_areas() -> int:
    """Memory map areas this process may still create: vm.max_map_count less those it holds."""
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        with open("/proc/self/maps", "rb") as maps:
            held = sum(1 for _ in maps)
    except (OSError, ValueError):
        return MAX_MAPPINGS
    return limit - held


def mapping_limit() -> int:
    """How many files this process may keep mapped: the soft descriptor limit raised to the
    hard one (as servers do), less FDS_KEPT_FREE; the kernel's free map areas less
    MAP_AREAS_KEPT_FREE; and at most MAX_MAPPINGS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    by_descriptors = MAX_MAPPINGS if soft == resource.RLIM_INFINITY else soft - FDS_KEPT_FREE
    by_map_areas = _free_map_areas() - MAP_AREAS_KEPT_FREE
    return max(16, min(MAX_MAPPINGS, by_descriptors, by_map_areas))


def _map(fd: int) -> mmap.mmap:
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    if sys.version_info >= (3, 13):  # no duplicate descriptor kept for the mapping's life
        return mmap.mmap(fd, 0, flags=flags, trackfd=False)
    return mmap.mmap(fd, 0, flags=flags)


def _ours(fd: int) -> bool:
    """The open file is a regular file of this user that no other user may write."""
    info = os.fstat(fd)
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o022 == 0


_CONFIGS: dict[tuple[str, int], tuple] = {}


def expected_config(spec: str, seed: int) -> tuple:
    """The configuration a detector of `spec` and `seed` has (made once per process)."""
    if (spec, seed) not in _CONFIGS:
        _CONFIGS[(spec, seed)] = tuple(make_detector(spec, seed=seed).config)
    return _CONFIGS[(spec, seed)]


class Resident:
    """A detector file mapped by this worker. The mapping is kept between micro-batches (a
    fresh mapping faults in every page the kernels touch again: measured 4x slower scoring);
    each use opens the file, takes its lock and checks its header first, and closes it after:
    no descriptor of ours is held between uses."""

    def __init__(self, path: Path, name: str, memory: mmap.mmap, inode: int) -> None:
        self.path, self.name, self._memory, self.inode = path, name, memory, inode
        self._fd: int | None = None
        meta_len = int.from_bytes(memory[HEADER.size : HEADER.size + 4], "little")
        meta = memory[HEADER.size + 4 : HEADER.size + 4 + meta_len]
        offsets, config = _parsed(meta)
        self.config = config
        self.spec, self.key_ref = _identity(meta)
        arrays = {
            k: np.ndarray(shape, dtype, buffer=memory, offset=at)
            for k, (at, dtype, shape) in offsets.items()
        }
        self.detector = attach_detector(name, config, arrays)

    def lock(self) -> bool:
        """Held while a task uses it (another attempt of the task may have it, or the file was
        replaced or removed since it was mapped: then False)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # gone, or a symlink put in its place
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if os.fstat(fd).st_ino != self.inode:  # another file at the path now
            os.close(fd)
            return False
        self._fd = fd
        return True

    def header(self) -> tuple[int, bool, bytes]:
        magic, points, dirty, digest = HEADER.unpack_from(self._memory, 0)
        return points, bool(dirty), digest

    def begin(self) -> None:
        """Marked dirty before its arrays change: a worker killed half way leaves it unused."""
        points, _, digest = self.header()
        HEADER.pack_into(self._memory, 0, MAGIC, points, 1, digest)

    def commit(self, points: int, digest: bytes) -> None:
        HEADER.pack_into(self._memory, 0, MAGIC, points, 0, digest.ljust(16, b"\0"))
        os.utime(self._fd)  # the least recently used go first

    def close(self) -> None:
        """Released for the next use (the mapping stays)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def unmap(self) -> None:
        self.detector = None
        try:
            self._memory.close()
        except BufferError:  # an array still referenced: unmapped when it is collected
            pass


class DetectorStore:
    """The executor's resident detectors: one file per (state, key) under `root`."""

    def __init__(self, root: str, budget_bytes: int) -> None:
        self.base = Path(root)
        jvm = _executor_jvm()
        self.root = self.base / f"{PREFIX}{os.getuid()}-{jvm}"
        self.budget = budget_bytes
        self.write_failures = 0  # puts that failed (a full tmpfs): those keys restore instead
        self.read_failures = 0  # files that could not be mapped or read: restored instead
        self._created = 0
        self._evictions = 0
        self._maps: OrderedDict[Path, Resident] = OrderedDict()
        self._max_maps = mapping_limit()
        self._key = b""
        self.refused: str | None = None
        self.watcher: subprocess.Popen | None = None  # started if this process made the folder
        if self.budget <= 0:
            return
        if not private(self.root):
            self._sweep_dead()
            try:
                self.base.mkdir(parents=True, exist_ok=True)  # /dev/shm, or a configured dir
            except OSError:
                pass
            made_private, made_here = _make_private(self.root)
            if not made_private:
                self._refuse(f"{self.root} is not a private folder of this user")
                return
            if made_here:  # one watcher per executor: whoever made its folder starts it
                jvm_pid, jvm_start = jvm.split("-")
                self.watcher = start_reaper(self.root, int(jvm_pid), jvm_start)
        try:
            self._key = self._folder_key()
        except OSError as exc:
            self._refuse(f"no key in {self.root}: {exc}")

    def _refuse(self, why: str) -> None:
        """The store off for this process: every key restored from the checkpoint."""
        self.refused, self.budget = why, 0
        LOG.warning("resident detectors off, keys restore from the checkpoint: %s", why)

    def _folder_key(self) -> bytes:
        """The random key of this folder's file names, made by the first worker (created
        under a random name and linked into place: a second worker reads the first's)."""
        path = self.root / "key"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            tmp = self.root / f".key-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if not _ours(fd):
                raise OSError(errno.EPERM, "the key file is not this user's own")
            key = os.read(fd, 64)
        finally:
            os.close(fd)
        if len(key) != 32:
            raise OSError(errno.EINVAL, "the key file is not 32 bytes")
        return key

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def key_ref(self, state: str, key: tuple[str, str]) -> str:
        """A keyed digest of (state, key): a file's name and its header's reference."""
        message = "\x00".join((state, *key)).encode()
        return hmac.new(self._key, message, hashlib.blake2b).hexdigest()[:32]

    def path(self, state: str, key: tuple[str, str]) -> Path:
        digest = self.key_ref(state, key)
        return self.root / digest[:2] / f"{digest}.det"

    def _mapped(self, path: Path, name: str) -> Resident | None:
        """This worker's mapping of the file now at `path` (mapped anew if the file was
        replaced or removed since), locked; None if there is none or it is in use."""
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            inode = None
        resident = self._maps.get(path)
        if resident is not None and resident.inode != inode:
            self._maps.pop(path).unmap()
            resident = None
        if inode is None:
            return None
        if resident is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:  # gone, or a symlink put in its place
                return None
            try:
                if not _ours(fd):
                    return None
                memory, mapped_inode = _map(fd), os.fstat(fd).st_ino
            except (ValueError, OSError):
                return None
            finally:
                os.close(fd)
            resident = Resident(path, name, memory, mapped_inode)
            self._maps[path] = resident
            while len(self._maps) > self._max_maps:
                self._maps.popitem(last=False)[1].unmap()
        self._maps.move_to_end(path)
        return resident if resident.lock() else None

    def get(self, state: str, key: tuple[str, str], name: str, points: int,
            digest: bytes) -> Resident | None:  # fmt: skip
        """The key's resident detector if it is exactly (points, digest) of this key, with the
        configuration `name` and the state's seed give, else None. The caller closes it."""
        if not self.enabled:
            return None
        try:
            resident = self._mapped(self.path(state, key), name)
        except (OSError, ValueError):  # a damaged file: the checkpoint has the truth
            self.read_failures += 1
            return None
        if resident is not None:
            have_points, dirty, have_digest = resident.header()
            seed = int(state.rsplit("/", 1)[-1]) if state.rsplit("/", 1)[-1].isdigit() else 42
            if (dirty or have_points != points or have_digest != digest.ljust(16, b"\0")
                    or resident.spec != name or resident.key_ref != self.key_ref(state, key)
                    or resident.config != expected_config(name, seed)):  # fmt: skip
                resident.close()
                return None
        return resident

    @property
    def errors(self) -> int:
        """Store operations that failed and left their key to the checkpoint, so far (the
        scorer reports each batch's as the ResidentStoreErrors metric)."""
        return self.write_failures + self.read_failures

    def put(self, state: str, key: tuple[str, str], detector: Any, points: int,
            digest: bytes, spec: str | None = None) -> None:  # fmt: skip
        """A resident copy of an in-memory detector, for the key's next batch. A failure to
        write (a full tmpfs) is counted and leaves the key to the checkpoint: the store is a
        cache, and the query goes on."""
        if not self.enabled:
            return
        path = self.path(state, key)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            # spec: the key's own detector (its state's record), which `get` is asked for.
            self._write(tmp, path, key_ref=self.key_ref(state, key),
                        spec=spec or state.rsplit("/", 1)[0], detector=detector, points=points,
                        digest=digest)  # fmt: skip
        except (OSError, ValueError) as exc:
            try:
                tmp.unlink(missing_ok=True)
                path.unlink(missing_ok=True)  # an older copy is not current any more
            except OSError:
                pass
            self.write_failures += 1
            if self.write_failures in (1, 10, 100) or self.write_failures % 1000 == 0:
                LOG.warning("resident detector not written (%d so far), restored from the "
                            "checkpoint next time: %s", self.write_failures, exc)  # fmt: skip
            return
        self._created += 1
        if self._created % 64 == 0:
            self.evict()

    def _write(self, tmp: Path, path: Path, *, key_ref: str, spec: str, detector: Any,
               points: int, digest: bytes) -> None:  # fmt: skip
        layout = detector.layout()
        offsets, size = _layout_offsets(layout)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        meta = json.dumps({
            "layout": {k: [np.dtype(d).str, list(shape)] for k, (d, shape) in layout.items()},
            "config": list(detector.config), "spec": spec, "key": key_ref,
        }).encode()  # fmt: skip
        arrays = detector.arrays()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.truncate(size)
            f.write(HEADER.pack(MAGIC, points, 0, digest.ljust(16, b"\0")))
            f.write(len(meta).to_bytes(4, "little") + meta)
            for k, (at, dtype, _) in offsets.items():
                f.seek(at)
                f.write(np.ascontiguousarray(arrays[k], dtype=dtype).tobytes())
            # tmpfs allocates pages as they are written: a full one fails here, not later.
            os.posix_fallocate(f.fileno(), 0, size)
        os.replace(tmp, path)

    def drop(self, state: str, key: tuple[str, str]) -> None:
        if not self.enabled:
            return
        path = self.path(state, key)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        if path in self._maps:
            self._maps.pop(path).unmap()

    def evict(self) -> None:
        """Least recently used files out until the store is within its budget. Every worker of
        the executor evicts: a file another one removed since the listing is skipped. Partial
        writes a killed worker left (`.tmp-*`, older than STALE_TMP_SECONDS) count against the
        budget and are removed; this worker's mappings of files removed or replaced since are
        dropped (a mapping keeps an unlinked file's memory taken)."""
        import time

        files, now = [], time.time()
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue  # the key
            for entry in os.scandir(folder):
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(".tmp-"):
                    if now - info.st_mtime > STALE_TMP_SECONDS:
                        Path(entry.path).unlink(missing_ok=True)
                        continue
                    files.append((float("inf"), info.st_size, None))  # counted, never evicted
                elif entry.name.endswith(".det"):
                    files.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.budget or path is None:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
        self.drop_stale_mappings()
        self._evictions += 1
        if self._evictions % SWEEP_EVERY_EVICTIONS == 0:
            # Executors that went (dynamic allocation gives them back) leave their folders;
            # the live ones on the host remove them now and then, not only at their start.
            self._sweep_dead()

    def drop_stale_mappings(self) -> None:
        """Unmap what this worker maps of files no longer at their path (evicted or replaced
        by another worker): until unmapped, their pages stay taken in the tmpfs."""
        for path, resident in list(self._maps.items()):
            try:
                current = os.stat(path).st_ino
            except OSError:
                current = None
            if current != resident.inode:
                self._maps.pop(path).unmap()

    def _sweep_dead(self) -> None:
        """This user's folders of executors that are gone (their memory would otherwise stay
        taken). Anything else under the base is not ours to judge, and nothing here raises:
        a folder another user named to look like ours must not stop the scorer."""
        try:
            entries = list(os.scandir(self.base))
        except OSError:
            return
        for entry in entries:
            match = _FOLDER.match(entry.name)
            if match is None or int(match[1]) != os.getuid():
                continue
            try:
                if not private(Path(entry.path)) or alive(int(match[2]), match[3]):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
            except (OSError, ValueError):
                continue


_STORES: dict[tuple[str, int], DetectorStore] = {}


def detector_store(root: str | None, budget_bytes: int) -> DetectorStore:
    """This process's view of the executor's store (one per root and budget)."""
    where = root or ("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp")
    store = _STORES.get((where, budget_bytes))
    if store is None:
        store = _STORES[(where, budget_bytes)] = DetectorStore(where, budget_bytes)
    return store
