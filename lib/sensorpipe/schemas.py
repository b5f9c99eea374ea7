"""Every StructType of the project, in one place.

The event contract (what a device publishes, one JSON object per Kinesis record):

    {"device_id": "train-01", "sensor": "axle_bearing_temp",
     "event_time": "2026-11-01T08:00:00.000Z", "value": 41.2, "unit": "degC"}

`device_id` and `sensor` are strings, `event_time` an ISO-8601 string with a zone, `value` a
JSON number, `unit` a string equal to the catalogue's unit for that sensor. Other fields are
ignored.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# Required fields of the JSON event, in contract order.
EVENT_FIELDS: tuple[str, ...] = ("device_id", "sensor", "event_time", "value", "unit")

# Exactly the columns of EMR's Kinesis connector (aws-kinesis); every source yields these.
KINESIS_RECORD_SCHEMA = StructType(
    [
        StructField("data", BinaryType(), True),
        StructField("streamName", StringType(), True),
        StructField("partitionKey", StringType(), True),
        StructField("sequenceNumber", StringType(), True),
        StructField("approximateArrivalTimestamp", TimestampType(), True),
    ]
)

# What this project's Kinesis source yields: the connector's columns plus the position of a
# user record inside a KPL aggregate (0 for a plain record).
KINESIS_SOURCE_SCHEMA = StructType(
    [*KINESIS_RECORD_SCHEMA.fields, StructField("subSequenceNumber", LongType(), True)]
)

# One line of a sample replay file: a Kinesis record as it arrived. `data` holds the payload
# when it is UTF-8 text; `dataBase64` holds it otherwise, so every byte survives the file.
REPLAY_RECORD_SCHEMA = StructType(
    [
        StructField("partitionKey", StringType(), True),
        StructField("sequenceNumber", StringType(), True),
        StructField("approximateArrivalTimestamp", TimestampType(), True),
        StructField("data", StringType(), True),
        StructField("dataBase64", StringType(), True),
    ]
)

# Record provenance kept on every decoded row, valid or not.
_PROVENANCE = [
    StructField("stream_name", StringType(), True),
    StructField("partition_key", StringType(), True),
    StructField("sequence_number", StringType(), True),
    StructField("sub_sequence_number", LongType(), True),
    StructField("arrival_time", TimestampType(), True),
]

# A valid, typed event as it lands in the lake (event_date and event_hour are the partitions).
EVENT_SCHEMA = StructType(
    [
        StructField("device_id", StringType(), True),
        StructField("sensor", StringType(), True),
        StructField("event_time", TimestampType(), True),
        StructField("value", DoubleType(), True),
        StructField("unit", StringType(), True),
        *_PROVENANCE,
        StructField("event_date", DateType(), True),
        StructField("event_hour", IntegerType(), True),
    ]
)

# An event as it lands in the lake: with its anomaly scores (anomaly/spark.py adds them).
SCORE_FIELDS = [
    StructField("anomaly_raw", DoubleType(), True),
    StructField("anomaly_score", DoubleType(), True),
    StructField("is_anomaly", BooleanType(), True),
    # Incident transitions (anomaly/incidents.py): open | escalate | close, on the point where
    # they happen; null elsewhere.
    StructField("alert_id", StringType(), True),
    StructField("alert_action", StringType(), True),
    StructField("alert_severity", StringType(), True),
    # The range the key's readings so far made normal at this point (IncidentState.
    # expected_range): null while it has seen too few readings.
    StructField("expected_low", DoubleType(), True),
    StructField("expected_high", DoubleType(), True),
    # How a flagged reading is anomalous (incidents.explain): above or below the expected
    # range's middle, and how far, in half-widths of the range (1 at its edge); null elsewhere.
    StructField("anomaly_direction", StringType(), True),
    StructField("anomaly_strength", DoubleType(), True),
]
# As Spark reads the partitioned table back: data columns, then the partition columns.
SCORED_EVENT_SCHEMA = StructType(
    [f for f in EVENT_SCHEMA.fields if f.name not in ("event_date", "event_hour")]
    + SCORE_FIELDS
    + [f for f in EVENT_SCHEMA.fields if f.name in ("event_date", "event_hour")]
)

# A rejected record: original bytes, where it came from, why it was rejected.
QUARANTINE_SCHEMA = StructType(
    [
        StructField("data", BinaryType(), True),
        *_PROVENANCE,
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("arrival_date", DateType(), True),
    ]
)
