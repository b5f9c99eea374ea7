"""Settings for tests: conf/local.yaml with every output under a temporary folder."""

from __future__ import annotations

from pathlib import Path

from sensorpipe.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def lake_environ(tmp: Path) -> dict[str, str]:
    """Overrides putting the lake and checkpoints under `tmp`, warehouse and alerts off."""
    return {
        "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(tmp / "lake/quarantine"),
        "SENSORPIPE__LAKE__ANOMALIES_PATH": str(tmp / "lake/anomalies"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(tmp / "checkpoints"),
        "SENSORPIPE__WAREHOUSE__KIND": "none",
        "SENSORPIPE__ALERTS__KIND": "none",
    }


def local_settings(tmp: Path, **overrides: str) -> Settings:
    return load_settings(ROOT / "conf/local.yaml", environ={**lake_environ(tmp), **overrides})
