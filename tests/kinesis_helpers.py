"""Helpers for the Kinesis integration tests: streams, synthetic records, a fault proxy, the
lake's exactness check."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sensorpipe.sources.kpl import UserRecord
from sensorpipe_tools.producer import produce

from tests.local_settings import local_settings

_names = itertools.count()


def new_stream(client, shards: int) -> str:
    name = f"test-{int(time.time() * 1000)}-{next(_names)}"
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_active(client, name)
    return name


def wait_active(client, stream: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = client.describe_stream_summary(StreamName=stream)
        if status["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise TimeoutError(f"stream {stream} not ACTIVE")


def events(first: int, count: int) -> list[UserRecord]:
    """Valid events, each with a unique (device_id, event_time)."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    out = []
    for i in range(first, first + count):
        device = f"train-{i % 4:02d}"
        moment = (base + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        body = {
            "device_id": device,
            "sensor": "wheel_speed",
            "event_time": moment,
            "value": float(i % 300),
            "unit": "km/h",
        }
        out.append(UserRecord(device, json.dumps(body).encode()))
    return out


def put(client, stream: str, records: list[UserRecord], aggregate: int = 0) -> None:
    produce(client, stream, records, aggregate_records=aggregate)


def settings_for(tmp: Path, endpoint: str, stream: str, **extra: str):
    return local_settings(
        tmp,
        **{
            "SENSORPIPE__SOURCE__KIND": "kinesis",
            "SENSORPIPE__SOURCE__ENDPOINT_URL": endpoint,
            "SENSORPIPE__SOURCE__STREAM_NAME": stream,
            "SENSORPIPE__SOURCE__STARTING_POSITION": "TRIM_HORIZON",
            **extra,
        },
    )


def assert_lake_exact(spark, settings, produced: list[UserRecord]) -> None:
    """The lake holds exactly the produced records: same count, no duplicate
    (stream, sequence number, sub-sequence), none missing."""
    events_df = spark.read.parquet(settings.lake.events_path)
    rows = events_df.select(
        "stream_name", "sequence_number", "sub_sequence_number", "device_id", "event_time"
    ).collect()
    keys = [(r.stream_name, r.sequence_number, r.sub_sequence_number) for r in rows]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} duplicate records"
    expected = set()
    for rec in produced:
        body = json.loads(rec.data)
        expected.add((body["device_id"], body["event_time"]))
    got = {(r.device_id, r.event_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z") for r in rows}
    assert len(got) == len(rows), "two lake rows for one produced record"
    assert got == expected, f"missing {len(expected - got)}, unexpected {len(got - expected)}"
