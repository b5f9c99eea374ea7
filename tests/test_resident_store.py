"""The executor's resident detectors (anomaly/resident.py): a cache in shared memory that is
used only when exactly the checkpoint's state, and bounded."""

from __future__ import annotations

import os

import numpy as np
from sensorpipe.anomaly.detectors import make_detector
from sensorpipe.anomaly.resident import DetectorStore
from sensorpipe.anomaly.state import chain_digest

STATE = "likelihood/42"


def trained(values: np.ndarray):  # noqa: ANN201
    detector = make_detector("likelihood")
    detector.update(values)
    return detector, chain_digest(b"", values)


def test_a_resident_detector_scores_as_the_one_it_copies_and_only_when_current(tmp_path):
    values = np.sin(np.arange(600) / 20) + 40
    store = DetectorStore(str(tmp_path), 1 << 30)
    detector, digest = trained(values[:500])
    store.put(STATE, ("train-01", "s"), detector, 500, digest)
    resident = store.get(STATE, ("train-01", "s"), "likelihood", 500, digest)
    assert resident is not None
    try:
        resident.begin()
        _, got = resident.detector.update(values[500:])
    finally:
        resident.close()
    _, want = make_detector("likelihood").update(values)
    np.testing.assert_array_equal(got, want[500:])
    # Another history (points or digest) or a dirty file is not used.
    assert store.get(STATE, ("train-01", "s"), "likelihood", 499, digest) is None
    assert store.get(STATE, ("train-01", "s"), "likelihood", 500, b"x" * 16) is None
    assert store.get(STATE, ("train-01", "s"), "likelihood", 500, digest) is None  # dirty now


def test_eviction_keeps_the_store_within_budget_and_survives_files_removed_meanwhile(
    tmp_path, monkeypatch
):
    """Every Python worker of an executor evicts: a file another worker removed between the
    listing and its stat must be skipped (it failed the task, and the query, at 20,000 keys)."""
    detector, digest = trained(np.arange(50, dtype=float))
    probe = DetectorStore(str(tmp_path / "probe"), 1 << 30)
    probe.put(STATE, ("k", "s"), detector, 50, digest)
    size = os.path.getsize(probe.path(STATE, ("k", "s")))
    store = DetectorStore(str(tmp_path / "store"), 3 * size)
    for k in range(5):
        store.put(STATE, (f"train-{k}", "s"), detector, 50, digest)
    real_scandir = os.scandir
    removed = []

    def scandir_then_another_worker_evicts(path):  # noqa: ANN001, ANN202
        entries = list(real_scandir(path))
        if entries and not removed:
            os.unlink(entries[0].path)
            removed.append(entries[0].path)
        return iter(entries)

    monkeypatch.setattr(os, "scandir", scandir_then_another_worker_evicts)
    store.evict()
    monkeypatch.undo()
    left = list(store.root.rglob("*.det"))
    assert removed and len(left) == 3  # 4 after the other worker's removal, 3 within budget


def test_more_detectors_than_the_descriptor_limit_stay_usable(tmp_path):
    """A worker that scores more keys than its process may open files (20,000 keys against a
    limit of 20,000 failed with EMFILE: each mapping held two descriptors) keeps at most what
    the limit allows mapped and maps the others again when they come back."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))
        import numpy as np
        from sensorpipe.anomaly.detectors import make_detector
        from sensorpipe.anomaly.resident import DetectorStore
        from sensorpipe.anomaly.state import chain_digest
        store = DetectorStore({str(tmp_path)!r}, 1 << 30)
        values = np.arange(20.0)
        digest = chain_digest(b"", values)
        keys = [(f"train-{{i:04d}}", "s") for i in range(400)]
        for key in keys:
            detector = make_detector("likelihood;trees=1")
            detector.update(values)
            store.put("likelihood;trees=1/42", key, detector, 20, digest)
        for _ in range(2):
            for key in keys:
                resident = store.get("likelihood;trees=1/42", key, "likelihood;trees=1", 20, digest)
                assert resident is not None, key
                resident.close()
        print(len(store._maps))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) < 300


def test_the_mapping_bound_stays_under_the_kernels_map_area_limit(monkeypatch):
    """MAX_MAPPINGS (65,536) exceeded vm.max_map_count (65,530 by default): with descriptors
    unbounded, the worker would have mapped until mmap failed with ENOMEM. The bound leaves
    the process's own map areas, and room, under the kernel's limit (issue 30, item 5)."""
    import resource as resource_module
    from pathlib import Path

    from sensorpipe.anomaly import resident as resident_module

    infinite = resource_module.RLIM_INFINITY
    monkeypatch.setattr(resident_module.resource, "getrlimit", lambda _: (infinite, infinite))
    monkeypatch.setattr(resident_module.resource, "setrlimit", lambda *_: None)
    kernel = int(Path("/proc/sys/vm/max_map_count").read_text())
    held = len(Path("/proc/self/maps").read_text().splitlines())
    assert resident_module.mapping_limit() <= kernel - held


def test_eviction_counts_partial_writes_and_unmaps_what_another_worker_removed(tmp_path):
    """Evicted and replaced files stayed in memory while a worker still mapped them (two
    workers, a 7.5 MiB budget held 15 MiB of tmpfs), and a killed worker's partial `.tmp`
    files were neither counted nor removed (issue 30, item 5)."""
    detector, digest = trained(np.arange(50, dtype=float))
    one = DetectorStore(str(tmp_path), 1 << 30)  # two workers of one executor
    two = DetectorStore(str(tmp_path), 1 << 30)
    for k in range(3):
        one.put(STATE, (f"train-{k}", "s"), detector, 50, digest)
    for k in range(3):
        got = one.get(STATE, (f"train-{k}", "s"), "likelihood", 50, digest)
        got.close()
    assert len(one._maps) == 3
    size = os.path.getsize(one.path(STATE, ("train-0", "s")))
    two.budget = size  # the other worker evicts down to one file
    two.evict()
    assert len(list(two.root.rglob("*.det"))) == 1
    one.evict()  # within budget for it, but it drops its mappings of the removed files
    assert len(one._maps) == 1
    # A partial write: counted while recent, removed once stale.
    partial = one.root / "aa" / ".tmp-deadbeef"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"\0" * size)
    two.evict()  # one file + the partial > budget: the file goes, the partial stays
    assert list(two.root.rglob("*.det")) == [] and partial.exists()
    old = partial.stat().st_mtime - 3600
    os.utime(partial, (old, old))
    two.evict()
    assert not partial.exists()


def test_a_live_executor_sweeps_the_folder_of_one_that_went(tmp_path, monkeypatch):
    """Nothing cleaned up when an executor went (dynamic allocation) until another started on
    the host (issue 30, item 5): live executors now sweep gone ones' folders now and then."""
    from sensorpipe.anomaly import resident as resident_module
    from sensorpipe.anomaly.resident import PREFIX

    store = DetectorStore(str(tmp_path), 1 << 30)
    gone = tmp_path / f"{PREFIX}{os.getuid()}-999999-12345"  # no such process
    gone.mkdir(mode=0o700)
    (gone / "x.det").write_bytes(b"\0" * 64)
    monkeypatch.setattr(resident_module, "SWEEP_EVERY_EVICTIONS", 2)
    store.evict()
    assert gone.exists()
    store.evict()
    assert not gone.exists() and store.root.exists()


def test_an_executors_folder_goes_when_its_jvm_ends(tmp_path, monkeypatch):
    """Issue 30, item 5: clean-up when an executor ends. The last executor of a node had no
    one after it to sweep its folder (gigabytes of /dev/shm until the node stopped); the
    worker that makes the folder now starts a watcher that removes it once the JVM is gone.
    A stand-in process plays the JVM (pid and start time, as the folder's name records)."""
    import subprocess
    import sys
    from pathlib import Path

    from sensorpipe.anomaly import reaper
    from sensorpipe.anomaly import resident as resident_module

    jvm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        stat = Path(f"/proc/{jvm.pid}/stat").read_text()
        start = stat[stat.rindex(")") + 2 :].split()[19]
        monkeypatch.setattr(resident_module, "_executor_jvm", lambda: f"{jvm.pid}-{start}")
        monkeypatch.setattr(reaper, "REAP_SECONDS", 0.2)
        store = DetectorStore(str(tmp_path), 1 << 30)
        detector, digest = trained(np.arange(50, dtype=float))
        store.put(STATE, ("train-01", "s"), detector, 50, digest)
        # The watcher is up, for this folder and this JVM; the JVM runs, so it keeps it.
        watcher = store.watcher
        assert watcher is not None and watcher.poll() is None
        assert str(store.root) in watcher.args and str(jvm.pid) in watcher.args
        assert reaper.alive(jvm.pid, start)
        assert store.path(STATE, ("train-01", "s")).exists()
    finally:
        jvm.kill()
        jvm.wait()
    # The watcher ends once the folder is gone: waiting for it is waiting for the removal.
    assert watcher.wait(timeout=15) == 0
    assert not store.root.exists()
    assert tmp_path.exists()  # only the executor's own folder went
