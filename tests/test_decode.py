import json
from datetime import datetime

import pytest
from chispa import assert_df_equality
from sensorpipe import decode
from sensorpipe.decode import decode_records, quarantined_records, valid_events
from sensorpipe.schemas import EVENT_SCHEMA, KINESIS_RECORD_SCHEMA

ARRIVAL = datetime(2026, 11, 1, 8, 0, 1)
LIMITS = {"max_record_bytes": 512, "max_event_lag_hours": 168, "max_event_lead_minutes": 5}


def event(**overrides):
    base = {
        "device_id": "train-01",
        "sensor": "axle_bearing_temp",
        "event_time": "2026-11-01T08:00:00.000Z",
        "value": 41.25,
        "unit": "degC",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def sender(payload) -> str:  # noqa: ANN001
    """The partition key a well-behaved train sends a payload under: its own device id."""
    device = payload.get("device_id") if isinstance(payload, dict) else None
    return device if isinstance(device, str) and device else "train-01"


def records(spark, payloads, partition_keys=None):
    rows = [
        (
            p if isinstance(p, bytes) else json.dumps(p).encode(),
            "train-telemetry",
            partition_keys[i] if partition_keys else sender(p),
            str(1000 + i),
            ARRIVAL,
        )
        for i, p in enumerate(payloads)
    ]
    return spark.createDataFrame(rows, KINESIS_RECORD_SCHEMA)


def decoded(spark, payloads, partition_keys=None):
    return records(spark, payloads, partition_keys).transform(decode_records, **LIMITS)


class Sent:
    """A payload sent under a given partition key (its sender), not its own device id."""

    def __init__(self, payload, by: str) -> None:  # noqa: ANN001
        self.payload, self.by = payload, by


def test_valid_records_decode_to_typed_rows(spark):
    payloads = [
        event(),
        event(
            sensor="brake_pipe_pressure",
            unit="bar",
            value=5,
            event_time="2026-11-01T08:59:00+01:00",
        ),
        event(sensor="wheel_speed", unit="km/h", value=0, extra_field="ignored"),
    ]
    actual = decoded(spark, payloads).transform(valid_events)
    expected = spark.createDataFrame(
        [
            (
                "train-01",
                "axle_bearing_temp",
                datetime(2026, 11, 1, 8, 0),
                41.25,
                "degC",
                "train-telemetry",
                "train-01",
                "1000",
                None,
                ARRIVAL,
                datetime(2026, 11, 1).date(),
                8,
            ),
            (
                "train-01",
                "brake_pipe_pressure",
                datetime(2026, 11, 1, 7, 59),
                5.0,
                "bar",
                "train-telemetry",
                "train-01",
                "1001",
                None,
                ARRIVAL,
                datetime(2026, 11, 1).date(),
                7,
            ),
            (
                "train-01",
                "wheel_speed",
                datetime(2026, 11, 1, 8, 0),
                0.0,
                "km/h",
                "train-telemetry",
                "train-01",
                "1002",
                None,
                ARRIVAL,
                datetime(2026, 11, 1).date(),
                8,
            ),
        ],
        EVENT_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


MALFORMED = [
    (b"{" + b" " * 600 + b"}", decode.OVERSIZE),
    (b'{"device_id": "train-0\xe9"}', decode.NOT_UTF8),
    (b'{"device_id": "train-01", "sens', decode.NOT_JSON),
    (b"train-01,axle_bearing_temp,2026-11-01T08:00:00Z,41.2,degC", decode.NOT_JSON),
    (b"[1, 2]", decode.NOT_JSON),
    (b"", decode.NOT_JSON),
    (event(sensor=...), decode.MISSING_FIELD),
    (event(value=None), decode.MISSING_FIELD),
    (event(value="41.2"), decode.WRONG_TYPE),
    (event(value=True), decode.WRONG_TYPE),
    (event(device_id=7), decode.WRONG_TYPE),
    (event(event_time=1790000000), decode.WRONG_TYPE),
    (event(unit=["degC"]), decode.WRONG_TYPE),
    (event(sensor="cabin_humidity"), decode.UNKNOWN_SENSOR),
    (event(unit="degF"), decode.UNIT_MISMATCH),
    (event(event_time="yesterday"), decode.BAD_EVENT_TIME),
    (event(event_time="2026-13-45T99:00:00Z"), decode.BAD_EVENT_TIME),
    (event(event_time=""), decode.BAD_EVENT_TIME),
    (event(event_time="2026-10-01T08:00:00Z"), decode.EVENT_TIME_SKEW),
    (event(event_time="2026-11-01T08:06:00Z"), decode.EVENT_TIME_SKEW),
    (event(value=950), decode.VALUE_OUT_OF_RANGE),
    (event(value=-51), decode.VALUE_OUT_OF_RANGE),
    (json.dumps(event()).replace("41.25", "1e999").encode(), decode.VALUE_OUT_OF_RANGE),
    # train-01 (the thing the IoT rule put in the partition key) sending as train-02.
    (Sent(event(device_id="train-02"), by="train-01"), decode.DEVICE_MISMATCH),
]


@pytest.mark.parametrize(
    "payload,reason", MALFORMED, ids=[f"{r}-{i}" for i, (_, r) in enumerate(MALFORMED)]
)
def test_each_malformed_kind_is_quarantined_with_its_reason(spark, payload, reason):
    keys = None
    if isinstance(payload, Sent):
        payload, keys = payload.payload, [payload.by]
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    rows = decoded(spark, [payload], keys).transform(quarantined_records).collect()
    assert [(r.reason, bytes(r.data)) for r in rows] == [(reason, raw)]
    assert rows[0].detail, "every quarantined record says why"
    assert rows[0].sequence_number == "1000" and rows[0].arrival_time == ARRIVAL


def test_every_reason_is_covered_by_a_case():
    assert {r for _, r in MALFORMED} == set(decode.REASONS)


def test_a_device_id_other_than_its_senders_is_quarantined_and_the_sender_kept(spark):
    """The decoder took device_id from the payload alone: one train's readings under another's
    id corrupted that train's detector and incidents and updated its shadow (issue 30, item
    4). The partition key is the sender (the IoT rule sets it from the authenticated thing's
    topic); a reading that names another device is quarantined with its own reason."""
    payloads = [event(), event(device_id="train-02"), event(device_id="train-02")]
    rows = decoded(spark, payloads, ["train-01", "train-01", "train-02"]).collect()
    assert [(r.device_id, r.partition_key, r.reason) for r in rows] == [
        ("train-01", "train-01", None),
        ("train-02", "train-01", decode.DEVICE_MISMATCH),
        ("train-02", "train-02", None),
    ]
    assert rows[1].detail == (
        'device_id ["train-02"] is not its sender\'s (partition key ["train-01"])'
    )


def test_detail_names_the_problem(spark):
    rows = decoded(spark, [event(sensor=..., unit=...), event(value="x", device_id=3)]).collect()
    assert [r.detail for r in rows] == [
        "missing: sensor, unit",
        "device_id: BIGINT, expected a string; value: STRING, expected a number",
    ]


def test_boundaries_of_range_and_time_window_are_valid(spark):
    payloads = [
        event(value=-50),
        event(value=200),
        event(event_time="2026-11-01T08:05:01Z"),  # exactly the 5 minute lead
        event(event_time="2026-10-25T08:00:01Z"),  # exactly the 168 hour lag
    ]
    assert decoded(spark, payloads).transform(valid_events).count() == 4


def test_counts_reconcile_on_a_mix(spark):
    mixed = [event()] * 7 + [p for p, _ in MALFORMED]
    payloads = [p.payload if isinstance(p, Sent) else p for p in mixed]
    keys = [p.by if isinstance(p, Sent) else sender(p) for p in mixed]
    frame = decoded(spark, payloads, keys)
    valid = frame.transform(valid_events).count()
    quarantined = frame.transform(quarantined_records).count()
    assert (valid, quarantined) == (7, len(MALFORMED))


ONE = json.dumps(event()).encode()


@pytest.mark.parametrize(
    "payload",
    [
        ONE + ONE,  # two readings in one record: the second would vanish
        ONE + b"\n" + ONE,
        ONE + b" trailing text",
        ONE + b"],[" + ONE,  # closes an array wrapper early
        ONE + b'},"x":' + ONE,  # closes an object wrapper early
        ONE + b"," + ONE,
        ONE + b', "x": 1',
    ],
)
def test_a_record_is_one_json_object_anything_after_it_is_not_json(spark, payload):
    rows = decoded(spark, [payload]).collect()
    assert [(r.reason, bytes(r.data)) for r in rows] == [(decode.NOT_JSON, payload)]
    assert "not one JSON document" in rows[0].detail


def test_one_object_with_whitespace_around_it_is_valid(spark):
    rows = decoded(spark, [b"  " + ONE + b"\n", b'{"x": "a]}b",' + ONE[1:]]).collect()
    assert [r.reason for r in rows] == [None, None]


@pytest.mark.parametrize(
    "device_id",
    ["", "train\x0001", "t" * 65, "\ud800x", "../../etc", "train 01", "train/01", "trä"],
)
def test_a_device_id_outside_the_contract_is_quarantined(spark, device_id):
    payload = json.dumps(event(device_id=device_id)).encode()
    (row,) = decoded(spark, [payload]).collect()
    assert row.reason == decode.WRONG_TYPE, (device_id, row.reason)
    assert "expected 1 to 64 of" in row.detail


def test_device_ids_inside_the_contract_are_valid(spark):
    ids = ["train-01", "t" * 64, "fleet:42_b"]
    payloads = [json.dumps(event(device_id=d)).encode() for d in ids]
    rows = decoded(spark, payloads, ids).collect()  # each sent by itself
    assert [r.reason for r in rows] == [None, None, None]


@pytest.mark.parametrize("event_time", ["2026-11-01T08:00:00", "2026-11-01T08:00:00.000",
                                        "2026-11-01", "2026-12-05"])
def test_an_event_time_without_a_time_and_a_zone_is_a_bad_event_time(spark, event_time):
    """A date alone ends in what looks like an offset ("-01"): it has no time, and no zone."""
    (row,) = decoded(spark, [json.dumps(event(event_time=event_time)).encode()]).collect()
    assert (row.reason, "has no time of day with its zone" in row.detail) == (
        decode.BAD_EVENT_TIME, True)  # fmt: skip


def test_event_times_with_a_zone_or_an_offset_are_valid(spark):
    times = ["2026-11-01T08:00:00Z", "2026-11-01T09:00:00+01:00", "2026-11-01T03:00:00-0500"]
    rows = decoded(spark, [json.dumps(event(event_time=t)).encode() for t in times]).collect()
    assert [r.reason for r in rows] == [None, None, None]
    assert len({r.event_time for r in rows}) == 1


def test_a_kpl_aggregate_failing_its_md5_is_quarantined_whole(spark):
    """docs/kinesis.md: an aggregate whose checksum fails passes through whole and lands in
    quarantine, its bytes as they came (issue 30's audit of untested claims)."""
    from sensorpipe.sources.kpl import UserRecord, aggregate, deaggregate

    good = aggregate([UserRecord("train-01", json.dumps(event()).encode())] * 2)
    damaged = good[:-1] + bytes([good[-1] ^ 0xFF])
    (record,) = deaggregate(damaged, "train-01")
    rows = decoded(spark, [record.data], ["train-01"]).transform(quarantined_records).collect()
    assert [(r.reason, bytes(r.data)) for r in rows] == [(decode.NOT_UTF8, damaged)]
