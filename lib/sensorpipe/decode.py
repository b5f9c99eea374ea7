"""Kinesis records (the connector's columns) to typed events, or to quarantine with a reason.

Every record comes out exactly once, either valid (reason is null) or with one reason code,
the first check it fails in the order below; nothing is dropped. Built-in functions only: the
payload is parsed into a VARIANT, which keeps JSON types, so a value sent as the string
"41.2" is a wrong type rather than silently coerced; a record is exactly one JSON object (a
second object or any text after the first is `not_json`, the record kept whole).
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensorpipe.schemas import EVENT_FIELDS, EVENT_SCHEMA, QUARANTINE_SCHEMA
from sensorpipe.sensors import SENSORS, Sensor

# Reason codes, in the order the checks run.
OVERSIZE = "oversize"
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_SENSOR = "unknown_sensor"
UNIT_MISMATCH = "unit_mismatch"
BAD_EVENT_TIME = "bad_event_time"
EVENT_TIME_SKEW = "event_time_skew"
VALUE_OUT_OF_RANGE = "value_out_of_range"
# The payload's device_id is not its sender's: the Kinesis partition key, which the IoT rule
# sets from the MQTT topic of the authenticated thing (a train speaking for another).
DEVICE_MISMATCH = "device_mismatch"

REASONS: tuple[str, ...] = (
    OVERSIZE,
    NOT_UTF8,
    NOT_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
    UNKNOWN_SENSOR,
    UNIT_MISMATCH,
    BAD_EVENT_TIME,
    EVENT_TIME_SKEW,
    VALUE_OUT_OF_RANGE,
    DEVICE_MISMATCH,
)

_STRING_FIELDS = ("device_id", "sensor", "event_time", "unit")
# A device id names the train's AWS IoT thing (thing names: [a-zA-Z0-9:_-]+, AWS IoT API
# Reference, CreateThing) and fills the warehouse's VARCHAR(64): no control character, no path
# separator, nothing empty or longer.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9:_-]{1,64}$"
# The contract's event time carries its zone: Z or an offset (+01:00, -0500).
# A time of day, then its zone: a date alone ("2026-12-05") ended in what looked like an offset
# ("-05") and passed as zoned (issue 30).
_ZONED = r"[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_NUMBER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE")


def _json_type(field_value: Column) -> Column:
    """The JSON type of a VARIANT as Spark names it: STRING, BIGINT, DECIMAL(3,1), OBJECT<..>."""
    return F.schema_of_variant(field_value)


def _is_number(json_type: Column) -> Column:
    return json_type.isin(*_NUMBER_TYPES) | json_type.startswith("DECIMAL")


def _one_json_value(payload: Column) -> Column:
    """True when the payload is exactly one JSON value. Spark's JSON parser stops after the
    first value and ignores what follows ('{..}{..}' parses as the first object), so the
    payload is also parsed inside an array and as an object's value: text after the first
    value, or a second value, breaks at least one of the two (a depth-0 ',' must be followed
    by a value in one and by a key in the other; an early closer must be ']' in one and '}' in
    the other)."""
    in_array = F.try_parse_json(F.concat(F.lit("["), payload, F.lit("]")))
    in_object = F.try_parse_json(F.concat(F.lit('{"v":'), payload, F.lit("}")))
    return in_array.isNotNull() & in_object.isNotNull()


def _catalogue_map(sensors: Mapping[str, Sensor], attribute: str) -> Column:
    pairs = []
    for name, sensor in sorted(sensors.items()):
        pairs += [F.lit(name), F.lit(getattr(sensor, attribute))]
    return F.create_map(*pairs)


def decode_records(
    records: DataFrame,
    max_record_bytes: int,
    max_event_lag_hours: int,
    max_event_lead_minutes: int,
    sensors: Mapping[str, Sensor] = SENSORS,
) -> DataFrame:
    """Connector columns -> typed event columns plus `reason` and `detail` (null when valid)."""
    payload = F.col("data").cast("string")
    doc = F.col("_doc")
    # Each field extracted from the document once, as a column the checks below read. Written
    # into every check, a valid record had them extracted again in all 14 checks, twice
    # (reason and detail): half the records/s (benchmarks/decode_speed.py).
    fields = records.withColumn("_doc", F.try_parse_json(payload)).select(
        "*",
        *[F.try_variant_get(doc, f"$.{name}", "variant").alias(f"_raw_{name}")
          for name in EVENT_FIELDS],
        F.try_variant_get(doc, "$.device_id", "string").alias("_device_id"),
        F.try_variant_get(doc, "$.sensor", "string").alias("_sensor"),
        F.try_variant_get(doc, "$.unit", "string").alias("_unit"),
        F.try_variant_get(doc, "$.event_time", "string").alias("_event_time_text"),
        F.try_variant_get(doc, "$.value", "double").alias("_value"),
    )  # fmt: skip
    fields = fields.select(
        "*",
        F.try_to_timestamp("_event_time_text").alias("_event_time"),
        *[_json_type(F.col(f"_raw_{name}")).alias(f"_kind_{name}") for name in EVENT_FIELDS],
    )
    raw = {name: F.col(f"_raw_{name}") for name in EVENT_FIELDS}
    kind = {name: F.col(f"_kind_{name}") for name in EVENT_FIELDS}

    missing = [(raw[n].isNull() | (kind[n] == "VOID"), n) for n in EVENT_FIELDS]
    wrong = [(kind[n] != "STRING", f"{n}: {{}}, expected a string") for n in _STRING_FIELDS]
    wrong.append((~_is_number(kind["value"]), "value: {}, expected a number"))

    device_id, sensor, unit = F.col("_device_id"), F.col("_sensor"), F.col("_unit")
    event_time_text, event_time = F.col("_event_time_text"), F.col("_event_time")
    value = F.col("_value")
    arrival = F.col("approximateArrivalTimestamp")
    expected_unit = _catalogue_map(sensors, "unit")[sensor]
    low = _catalogue_map(sensors, "physical_min")[sensor]
    high = _catalogue_map(sensors, "physical_max")[sensor]
    too_late = event_time < arrival - F.make_dt_interval(F.lit(0), F.lit(max_event_lag_hours))
    too_early = event_time > arrival + F.make_dt_interval(
        F.lit(0), F.lit(0), F.lit(max_event_lead_minutes)
    )

    checks: list[tuple[Column, str, Column]] = [
        (
            F.octet_length("data") > max_record_bytes,
            OVERSIZE,
            F.format_string("%d bytes, limit %d", F.octet_length("data"), F.lit(max_record_bytes)),
        ),
        (~F.is_valid_utf8(payload), NOT_UTF8, F.lit("payload is not valid UTF-8")),
        (doc.isNull(), NOT_JSON, F.lit("payload is not a JSON document")),
        (
            ~_one_json_value(payload),
            NOT_JSON,
            F.lit("payload is not one JSON document: a second value or text follows the first"),
        ),
        (
            ~_json_type(doc).startswith("OBJECT"),
            NOT_JSON,
            F.concat(F.lit("JSON "), _json_type(doc), F.lit(", expected an object")),
        ),
        (
            F.greatest(*[c for c, _ in missing]),
            MISSING_FIELD,
            F.concat(F.lit("missing: "), F.concat_ws(", ", *[F.when(c, n) for c, n in missing])),
        ),
        (
            F.greatest(*[c for c, _ in wrong]),
            WRONG_TYPE,
            F.concat_ws(
                "; ",
                *[
                    F.when(c, F.format_string(msg.replace("{}", "%s"), kind[n]))
                    for (c, msg), n in zip(wrong, (*_STRING_FIELDS, "value"), strict=True)
                ],
            ),
        ),
        (
            ~device_id.rlike(DEVICE_ID_PATTERN),
            WRONG_TYPE,
            F.format_string(
                "device_id %s: expected 1 to 64 of A-Z a-z 0-9 : _ -", F.to_json(F.array(device_id))
            ),
        ),
        (
            # Null-safe: a record without a partition key has no sender to speak for.
            ~device_id.eqNullSafe(F.col("partitionKey")),
            DEVICE_MISMATCH,
            F.format_string(
                "device_id %s is not its sender's (partition key %s)",
                F.to_json(F.array(device_id)), F.to_json(F.array(F.col("partitionKey"))),
            ),
        ),
        (
            expected_unit.isNull(),
            UNKNOWN_SENSOR,
            F.concat(F.lit("sensor "), sensor, F.lit(" is not in the catalogue")),
        ),
        (
            unit != expected_unit,
            UNIT_MISMATCH,
            F.format_string("unit %s, expected %s for %s", unit, expected_unit, sensor),
        ),
        (
            event_time.isNull(),
            BAD_EVENT_TIME,
            F.concat(F.lit("event_time "), event_time_text, F.lit(" is not an ISO-8601 time")),
        ),
        (
            ~event_time_text.rlike(_ZONED),
            BAD_EVENT_TIME,
            F.concat(F.lit("event_time "), event_time_text,
                     F.lit(" has no time of day with its zone (Z or +hh:mm)")),
        ),
        (
            too_late | too_early,
            EVENT_TIME_SKEW,
            F.format_string(
                "event_time %s is too far from arrival %s",
                event_time.cast("string"),
                arrival.cast("string"),
            ),
        ),
        (
            F.isnan(value) | ~value.between(low, high),
            VALUE_OUT_OF_RANGE,
            F.format_string("value %s outside [%s, %s] %s", value, low, high, expected_unit),
        ),
    ]
    # Our sources number the user records of a KPL aggregate; EMR's connector has no column.
    sub_sequence = (
        F.col("subSequenceNumber") if "subSequenceNumber" in records.columns else F.lit(None)
    )
    # The first check a record fails, each condition evaluated once; then its code, and its
    # detail built for that record only. A case on the check's index, not
    # element_at(codes, index + 1): that returned the last code for a null index (pyspark 4.0.2).
    failed = F.lit(None).cast("int")
    for i in reversed(range(len(checks))):
        failed = F.when(checks[i][0], F.lit(i)).otherwise(failed)
    first = F.col("_failed")
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for i in reversed(range(len(checks))):
        reason = F.when(first == i, F.lit(checks[i][1])).otherwise(reason)
        detail = F.when(first == i, checks[i][2]).otherwise(detail)

    return fields.withColumn("_failed", failed).select(
        device_id.alias("device_id"),
        sensor.alias("sensor"),
        event_time.alias("event_time"),
        value.alias("value"),
        unit.alias("unit"),
        F.col("streamName").alias("stream_name"),
        F.col("partitionKey").alias("partition_key"),
        F.col("sequenceNumber").alias("sequence_number"),
        sub_sequence.cast("long").alias("sub_sequence_number"),
        arrival.alias("arrival_time"),
        F.col("data"),
        reason.alias("reason"),
        detail.alias("detail"),
    )


def valid_events(decoded: DataFrame) -> DataFrame:
    """The valid rows, in the lake's event schema, with their partition columns."""
    return (
        decoded.where(F.col("reason").isNull())
        .withColumn("event_date", F.to_date("event_time"))
        .withColumn("event_hour", F.hour("event_time"))
        .select(*EVENT_SCHEMA.fieldNames())
    )


def quarantined_records(decoded: DataFrame) -> DataFrame:
    """The rejected rows: original bytes, provenance, reason and detail."""
    return (
        decoded.where(F.col("reason").isNotNull())
        .withColumn("arrival_date", F.to_date("arrival_time"))
        .select(*QUARANTINE_SCHEMA.fieldNames())
    )
