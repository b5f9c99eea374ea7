"""Spark glue for the joint detector (anomaly/joint.py, issue 32 item 4): one state per device
with `transformWithStateInPandas`, over the lake's scored events, judging each moment of the
device's sensors together once.

The state is the device's `DeviceMoments` as one blob (the detector's ring of normal moments is
most of it: about 58 KB for five sensors), rewritten in each micro-batch the device has
readings in. Only scored readings count (`is_anomaly` not null), so the devices with state are
bounded by the scorer's live keys (anomaly.max_live_keys), as the aggregates' state is. Like the
scorer, the operator runs without a time mode (anomaly/spark.py says why): moments are judged
by the device's own event-time clock, deterministic on a replay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from sensorpipe.anomaly.joint import DeviceMoments
from sensorpipe.worker_imports import install as cheap_import_cache_resets

_STATE = StructType([StructField("blob", BinaryType())])
_MOMENT_MICROS = "_moment_micros"
_OUT = StructType([
    StructField("device_id", StringType()),
    StructField(_MOMENT_MICROS, LongType()),
    StructField("joint_score", DoubleType()),
    StructField("is_joint_anomaly", BooleanType()),
    StructField("sensors", StringType()),  # the flag's sensors, furthest first
    StructField("carried", StringType()),  # sensors with no reading, carried forward
])  # fmt: skip


class DeviceMomentsProcessor(StatefulProcessor):
    def __init__(self, sensors: list[str], moment_seconds: int, hold_seconds: int) -> None:
        self.sensors, self.moment_seconds, self.hold_seconds = sensors, moment_seconds, hold_seconds

    def init(self, handle: StatefulProcessorHandle) -> None:
        cheap_import_cache_resets()
        self.state = handle.getValueState("moments", _STATE)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        frame = pd.concat(list(rows), ignore_index=True)
        # A batch's readings in event-time order (then sensor, for ties): the order they are
        # gathered in, so a cut between batches does not change which reading counts.
        frame = frame.sort_values(["_event_micros", "sensor"], kind="stable")
        device = DeviceMoments(self.sensors, self.moment_seconds, self.hold_seconds)
        if self.state.exists():
            device.restore(self.state.get()[0])
        judged = device.judge(device.add(frame["_event_micros"].to_numpy() / 1e6,
                                         frame["sensor"].to_numpy(),
                                         frame["value"].to_numpy(dtype=float)))  # fmt: skip
        self.state.update((device.to_bytes(),))
        out = pd.DataFrame(judged, columns=["moment", *_OUT.fieldNames()[2:]])
        out.insert(0, "device_id", key[0])
        out[_MOMENT_MICROS] = out.pop("moment").astype("int64") * self.moment_seconds * 1_000_000
        yield out[_OUT.fieldNames()]

    def close(self) -> None:
        pass


JOINT_COLUMNS = ["device_id", "moment_time", "joint_score", "is_joint_anomaly", "sensors",
                 "carried", "moment_date"]  # fmt: skip


def score_joint_stream(
    lake_events: DataFrame, sensors: list[str], moment_seconds: int, hold_seconds: int
) -> DataFrame:
    """Each device's moments judged jointly (one row per moment judged): its score (the
    largest sensor's distance from what the others predict, in usual errors), whether it is
    flagged, the sensors it names, and the sensors carried forward."""
    readings = lake_events.where(
        F.col("is_anomaly").isNotNull() & F.col("sensor").isin(*sensors)
    ).select("device_id", "sensor", "value",
             F.unix_micros("event_time").alias("_event_micros"))  # fmt: skip
    judged = readings.groupBy("device_id").transformWithStateInPandas(
        statefulProcessor=DeviceMomentsProcessor(list(sensors), moment_seconds, hold_seconds),
        outputStructType=_OUT,
        outputMode="Append",
        timeMode="None",
    )
    moment = F.timestamp_micros(_MOMENT_MICROS)
    return judged.select(
        "device_id", moment.alias("moment_time"), "joint_score", "is_joint_anomaly", "sensors",
        "carried", F.to_date(moment).alias("moment_date"),
    )  # fmt: skip
