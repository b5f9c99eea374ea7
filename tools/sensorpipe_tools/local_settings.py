"""Overrides for conf/local.yaml that put every output under one folder: the tests' and the
benchmarks' settings start here."""

from __future__ import annotations

from pathlib import Path


def lake_environ(tmp: Path) -> dict[str, str]:
    """Overrides putting the lake, checkpoints and lineage under `tmp`; warehouse and alerts
    off (a caller turns on what it needs)."""
    return {
        "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(tmp / "lake/quarantine"),
        "SENSORPIPE__LAKE__ANOMALIES_PATH": str(tmp / "lake/anomalies"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(tmp / "checkpoints"),
        "SENSORPIPE__WAREHOUSE__KIND": "none",
        "SENSORPIPE__ALERTS__KIND": "none",
        "SENSORPIPE__LINEAGE__PATH": str(tmp / "lineage"),
    }
