"""The warehouse's incidents table: every alert transition of a run, once, whatever replays."""

from __future__ import annotations

import json
import math
from pathlib import Path

import psycopg
from sensorpipe.streaming import run_lake_job
from sensorpipe_tools.samples import SampleSpec, generate

from tests.local_settings import local_settings

KEY = ["alert_id", "action", "event_time"]


def _settings(tmp: Path, samples: Path, postgres, database: str):
    return local_settings(
        tmp,
        SENSORPIPE__SOURCE__KIND="replay",
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__WAREHOUSE__KIND="postgres",
        SENSORPIPE__WAREHOUSE__PORT=str(postgres.port),
        SENSORPIPE__WAREHOUSE__DATABASE=database,
        SENSORPIPE__ALERTS__KIND="outbox",
        SENSORPIPE__ALERTS__OUTBOX_PATH=str(tmp / "outbox"),
        SENSORPIPE__STREAM__QUERY_PREFIX="incidents",
    )


def _incidents(postgres, database: str) -> list[dict]:
    with psycopg.connect(f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={database}") as conn:
        cursor = conn.execute("SELECT * FROM incidents")
        names = [d.name for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_incidents_table_equals_the_runs_alert_transitions_after_a_replayed_batch(
    spark, tmp_path, postgres, warehouse_db
):
    samples = tmp_path / "samples"
    generate(SampleSpec(trains=2, hours=20, anomalies_per_train=2, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = _settings(tmp_path, samples, postgres, warehouse_db)
    run_lake_job(spark, settings)
    # Replay the alerts query's last batch: without its commit, the next run executes it again
    # (same batch id, same input), delivering and loading its transitions a second time.
    commits = Path(settings.lake.checkpoint_root) / "alerts" / "commits"
    last = max(commits.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    last.unlink()
    replayed = run_lake_job(spark, settings)
    assert replayed.alert_transitions > 0  # the batch really ran again

    lake = spark.read.parquet(settings.lake.events_path).where("alert_action IS NOT NULL")
    transitions = lake.toPandas()
    rows = _incidents(postgres, warehouse_db)
    assert len(transitions) >= 4 and len(rows) == len(transitions)
    by_key = {(r["alert_id"], r["action"], r["event_time"]): r for r in rows}
    assert len(by_key) == len(rows)
    for t in transitions.itertuples(index=False):
        row = by_key[(t.alert_id, t.alert_action, t.event_time.to_pydatetime())]
        assert (row["device_id"], row["sensor"], row["severity"]) == (
            t.device_id, t.sensor, t.alert_severity)  # fmt: skip
        assert row["value"] == t.value and row["score"] == t.anomaly_score
        for name, lake_name in (("expected_low", "expected_low"),
                                ("expected_high", "expected_high"),
                                ("strength", "anomaly_strength")):  # fmt: skip
            lake_value = getattr(t, lake_name)
            assert (row[name] is None and math.isnan(lake_value)) or row[name] == lake_value
        assert row["direction"] == (t.anomaly_direction if t.alert_action != "close" else None)
        assert row["opened_at"] <= row["event_time"]
    # Transitions come hours into each series: each carries the range its key had learned, and
    # each opening or escalation says which way and how far (issue 32, item 3).
    assert all(r["expected_low"] < r["expected_high"] for r in rows)
    assert all(r["direction"] in ("above", "below") and r["strength"] > 0
               for r in rows if r["action"] != "close")  # fmt: skip
    # The shadows say the same: each open alert's entry, as its latest transition had it.
    latest = (transitions[transitions["alert_action"] != "close"]
              .sort_values("event_time").groupby("alert_id").last())  # fmt: skip
    told = 0
    for shadow in (tmp_path / "outbox").glob("*.json"):
        alerts = json.loads(shadow.read_text())["state"]["desired"]["sensorpipe_alerts"]
        for entry in alerts.values():
            if "alert_id" not in entry:
                continue
            t = latest.loc[entry["alert_id"]]
            assert (entry["direction"], entry["expected_low"], entry["expected_high"],
                    entry["strength"]) == (t.anomaly_direction, round(t.expected_low, 4),
                                           round(t.expected_high, 4),
                                           round(t.anomaly_strength, 2))  # fmt: skip
            told += 1
    assert told == len(latest)
    # And the anomalies table: every flagged reading with a range is explained.
    anomalies = spark.read.parquet(settings.lake.anomalies_path).where("is_anomaly")
    assert anomalies.count() > 0
    assert anomalies.where("expected_low IS NOT NULL AND (anomaly_direction IS NULL "
                           "OR anomaly_strength IS NULL)").count() == 0  # fmt: skip
