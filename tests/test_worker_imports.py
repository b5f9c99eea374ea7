"""The workers' per-task import-cache reset (sensorpipe/worker_imports.py)."""

import importlib
import sys
import zipfile
import zipimport

from sensorpipe import worker_imports


def _write_zip(path, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in modules.items():
            archive.writestr(f"{name}.py", source)


def test_an_unchanged_zip_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    archive = tmp_path / "deps.zip"
    _write_zip(archive, {"sp_zip_first": "VALUE = 1\n"})
    monkeypatch.syspath_prepend(str(archive))
    importlib.import_module("sp_zip_first")
    reads = []
    real = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(
        zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches
    )  # fmt: skip  (restored after)
    worker_imports.install()
    importlib.invalidate_caches()  # the first reset after install reads it (not seen yet)
    importlib.invalidate_caches()
    importlib.invalidate_caches()
    # (3.12+ invalidates lazily itself and install() does nothing: it is read on next use.)
    assert reads.count(str(archive)) <= 1, "an unchanged zip is read once, not per reset"

    _write_zip(archive, {"sp_zip_first": "VALUE = 1\n", "sp_zip_second": "VALUE = 2\n"})
    importlib.invalidate_caches()
    assert importlib.import_module("sp_zip_second").VALUE == 2, "a changed zip is read again"
    for name in ("sp_zip_first", "sp_zip_second"):
        sys.modules.pop(name, None)
