"""Settings for tests: conf/local.yaml with every output under a temporary folder."""

from __future__ import annotations

from pathlib import Path

from sensorpipe.config import HealthSettings, Settings, load_settings
from sensorpipe_tools.local_settings import lake_environ

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["ROOT", "health_settings", "job_module", "lake_environ", "local_settings", "run_job"]


def local_settings(tmp: Path, **overrides: str) -> Settings:
    return load_settings(ROOT / "conf/local.yaml", environ={**lake_environ(tmp), **overrides})


def health_environ(tmp: Path, pg_port: int, database: str) -> dict[str, str]:
    """Overrides for conf/health-local.yaml: a test database, both zones and lineage in `tmp`."""
    return {
        "SENSORPIPE__SOURCE__URL": f"jdbc:postgresql://127.0.0.1:{pg_port}/{database}",
        "SENSORPIPE__PROTECTED__ROOT": str(tmp / "protected"),
        "SENSORPIPE__GENERAL__ROOT": str(tmp / "general"),
        "SENSORPIPE__LINEAGE__PATH": str(tmp / "lineage"),
        # No clinical alerts table unless a test runs the device stream job (test_hospital_devices).
        "SENSORPIPE__DEVICE_ANOMALIES_PATH": "",
    }


def health_settings(tmp: Path, pg_port: int, database: str) -> HealthSettings:
    return load_settings(
        ROOT / "conf/health-local.yaml",
        environ=health_environ(tmp, pg_port, database),
        kind=HealthSettings,
    )


def job_module(name: str):  # noqa: ANN201
    """A job script (jobs/<name>.py) as a module, to call its main() in the test process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / f"jobs/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_job(name: str, argv: list[str], environ: dict[str, str]) -> int:
    """Run a job's main() with these environment variables set for its duration."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        for key, value in environ.items():
            patch.setenv(key, value)
        return job_module(name).main(argv)
