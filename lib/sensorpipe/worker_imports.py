"""A Python worker's per-task import-cache reset, made cheap on Python 3.11.

PySpark's worker calls `importlib.invalidate_caches()` at the start of every task
(pyspark/worker.py, after adding the task's Python includes to the path). On Python 3.10 and
3.11 that re-reads the whole directory of every zip on the path: pyspark.zip (3 MB, about
a thousand entries) and py4j's, in pure Python. Profiled with py-spy in the streaming scorer's
workers on local[2]: about a fifth of each worker's time went to `zipimport._read_directory`.
CPython fixed it in 3.12 ("zipimport.invalidate_caches() implementation causes performance
regression for importlib.invalidate_caches()", python/cpython#103200, found through Spark;
the fix, #103208, makes invalidation lazy).

On older interpreters `install()` makes a zip's invalidation re-read it only when the file
changed (size, mtime or inode), which is when its directory can have changed. emr-spark-8.0.0
offers Python 3.11 to 3.13; on 3.12 and later this does nothing.
"""

from __future__ import annotations

import os
import sys
import zipimport

_SEEN: dict[str, tuple[int, int, int]] = {}


def _signature(archive: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(archive)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def install() -> None:
    """Patch zipimporter.invalidate_caches in this process (idempotent; 3.12+: no-op)."""
    if sys.version_info >= (3, 12):
        return
    current = zipimport.zipimporter.invalidate_caches
    if getattr(current, "_sensorpipe", False):
        return

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        signature = _signature(self.archive)
        if signature is not None and _SEEN.get(self.archive) == signature:
            return  # the same file: the same directory
        current(self)
        if signature is not None:
            _SEEN[self.archive] = signature

    invalidate_caches._sensorpipe = True  # type: ignore[attr-defined]
    zipimport.zipimporter.invalidate_caches = invalidate_caches  # type: ignore[method-assign]
