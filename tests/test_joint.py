"""Issue 32, item 4: a device's sensors judged together catch a relation that breaks while
each sensor stays inside its own normal range, and name the sensors (anomaly/joint.py)."""

from __future__ import annotations

import os

import numpy as np
from sensorpipe.anomaly.detectors import make_detector
from sensorpipe.anomaly.joint import LEARN, JointDetector, attributed
from sensorpipe_tools.samples import relation_break_case


def test_a_broken_relation_is_missed_per_sensor_and_caught_jointly_naming_its_sensors():
    series, faults = relation_break_case()
    names = list(series)
    everything = np.concatenate(list(faults.values()))
    before = np.arange(everything.min())
    # Each sensor stays inside the range it showed before the faults...
    for name, values in series.items():
        low, high = values[before].min(), values[before].max()
        assert np.all((values[everything] >= low) & (values[everything] <= high)), name
    # ...and the per-sensor detector (the default, with its warm-up) flags none of the faults.
    for name, values in series.items():
        _, score = make_detector().update(values)
        flagged = (score >= 0.5) & (np.arange(len(values)) >= 50)
        assert not flagged[everything].any(), name
    score, flagged, z = JointDetector(len(names)).update(np.column_stack(list(series.values())))
    parked, accelerating = faults["current_without_speed"], faults["pressure_while_accelerating"]
    assert flagged[parked].all() and flagged[accelerating].all()
    # Named right: the current first at every minute, and the wheels that do not turn at most
    # (a minute whose other sensors predict a standing train's wheels names the current alone);
    # the pressure among the first two while the train accelerates.
    named = [attributed(z[row], names) for row in parked]
    assert all(n[0] == "traction_motor_current" for n in named), named
    assert sum("wheel_speed" in n for n in named) > len(parked) / 2, named
    assert all(set(n) <= {"traction_motor_current", "wheel_speed"} for n in named), named
    for row in accelerating:
        assert "brake_pipe_pressure" in attributed(z[row], names)[:2]
    # Few flags elsewhere once it has learnt: departures are the rare moments it finds odd.
    rest = np.ones(len(score), dtype=bool)
    rest[everything] = False
    rest[:LEARN] = False
    assert flagged[rest].mean() < 0.01, flagged[rest].sum()


def test_the_joint_detector_continues_exactly_across_cuts_and_restores():
    series, _ = relation_break_case(seed=3, days=2)
    matrix = np.column_stack(list(series.values()))
    whole = JointDetector(matrix.shape[1]).update(matrix)
    detector = JointDetector(matrix.shape[1])
    parts = []
    for chunk in np.array_split(matrix, 7):
        parts.append(detector.update(chunk))
        detector = JointDetector.from_bytes(detector.to_bytes())  # as between micro-batches
    for got, want in zip(zip(*parts, strict=True), whole, strict=True):
        np.testing.assert_array_equal(np.concatenate(got), want)


def _readings(series: dict[str, np.ndarray], seed: int = 11, dropped: int = 40):
    """The case as a stream of readings: each sensor at its own second inside each minute,
    the sensors of a minute in a shuffled order, and `dropped` readings missing. Returns the
    readings (seconds, sensors, values) in time order and the matrix the detector should see:
    a missing reading is the sensor's reading of the minute before, worked out here."""
    rng = np.random.default_rng(seed)
    names = list(series)
    matrix = np.column_stack(list(series.values()))
    minutes, width = matrix.shape
    offsets = rng.integers(0, 60, size=(minutes, width))
    keep = np.ones((minutes, width), dtype=bool)
    missing = rng.choice(np.arange(10, minutes) * width, size=dropped, replace=False)
    keep.flat[missing + rng.integers(0, width, size=dropped)] = False
    expected = matrix.copy()
    for minute, column in sorted(zip(*np.nonzero(~keep), strict=True)):
        expected[minute, column] = expected[minute - 1, column]
    seconds = (np.arange(minutes)[:, None] * 60 + offsets)[keep]
    sensors = np.array(names)[np.nonzero(keep)[1]]
    values = matrix[keep]
    order = np.argsort(seconds, kind="stable")
    return seconds[order], sensors[order], values[order], expected


def test_a_devices_readings_are_gathered_into_moments_whatever_the_cuts():
    """Readings arriving a sensor at a time, cut into batches with the state carried through
    bytes in between, are judged as the moments the test builds itself (a missing reading
    carried from the minute before), with the scores of the detector on those moments."""
    from sensorpipe.anomaly.joint import DeviceMoments

    series, faults = relation_break_case(seed=5, days=2)
    seconds, sensors, values, expected = _readings(series)
    names = list(series)
    want_score, want_flag, _ = JointDetector(len(names)).update(expected)
    device = DeviceMoments(names, moment_seconds=60, hold_seconds=90)
    judged = []
    for part in np.array_split(np.arange(len(seconds)), 13):
        judged += device.judge(device.add(seconds[part], sensors[part], values[part]))
        again = DeviceMoments(names, moment_seconds=60, hold_seconds=90)
        again.restore(device.to_bytes())
        device = again
    # Every minute but the last few (the hold has not passed them yet) is judged.
    assert [j["moment"] for j in judged] == list(range(len(judged)))
    assert len(judged) >= len(expected) - 3
    np.testing.assert_array_equal([j["joint_score"] for j in judged], want_score[: len(judged)])
    np.testing.assert_array_equal([j["is_joint_anomaly"] for j in judged],
                                  want_flag[: len(judged)])  # fmt: skip
    carried = sum(bool(j["carried"]) for j in judged)
    assert 30 <= carried <= 40  # the dropped readings (a few may share a minute)
    # A reading for a moment already judged is dropped and counted, not judged again.
    before = len(judged)
    assert device.add(np.array([60.0]), np.array([names[0]]), np.array([1.0])) == []
    assert device.late == 1 and before == len(judged)


def test_the_joint_stream_flags_the_broken_relation_naming_its_sensors(spark, tmp_path):
    """The joint query over a train's scored readings, three micro-batches and a restart:
    the moments it flags are the faults', named as the detector names them, the same as one
    uninterrupted detector over the minutes."""
    import pandas as pd
    from sensorpipe.anomaly.joint_spark import score_joint_stream

    series, faults = relation_break_case()
    seconds, sensors, values, expected = _readings(series, dropped=0)
    start = np.datetime64("2026-03-02T00:00:00", "us")
    frame = pd.DataFrame({
        "device_id": "train-0042", "sensor": sensors, "value": values,
        "event_time": start + (seconds * 1_000_000).astype("timedelta64[us]"),
        "is_anomaly": False,
    })  # fmt: skip
    source, out, checkpoint = tmp_path / "in", tmp_path / "out", tmp_path / "ck"
    source.mkdir()
    parts = np.array_split(np.arange(len(frame)), 3)
    for run in ([0, 1], [2]):  # stop after two batches, resume from the checkpoint
        for k in run:
            path = source / f"part-{k}.parquet"
            frame.iloc[parts[k]].to_parquet(path, coerce_timestamps="us")
            os.utime(path, (1_700_000_000 + k, 1_700_000_000 + k))
        stream = (spark.readStream.schema(spark.createDataFrame(frame.head(1)).schema)
                  .option("maxFilesPerTrigger", 1).parquet(str(source)))  # fmt: skip
        query = (score_joint_stream(stream, list(series), 60, 90).writeStream.format("parquet")
                 .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True)
                 .start(str(out)))  # fmt: skip
        try:
            query.awaitTermination()
        finally:
            query.stop()
    got = spark.read.parquet(str(out)).toPandas().sort_values("moment_time")
    minutes = ((got["moment_time"].to_numpy() - start) // np.timedelta64(60, "s")).astype(int)
    assert list(minutes) == list(range(len(got))) and len(got) >= len(expected) - 3
    score, flagged, z = JointDetector(len(series)).update(expected[: len(got)])
    np.testing.assert_array_equal(got["joint_score"], score)
    np.testing.assert_array_equal(got["is_joint_anomaly"], flagged)
    parked = faults["current_without_speed"]
    assert got["is_joint_anomaly"].to_numpy()[parked].all()
    named = got["sensors"].to_numpy()
    assert all(named[row].split(",")[0] == "traction_motor_current" for row in parked)
    assert all("brake_pipe_pressure" in named[row].split(",")[:2]
               for row in faults["pressure_while_accelerating"])  # fmt: skip


def test_a_moment_is_the_mean_of_its_readings_judged_a_hold_after_it_ends():
    from sensorpipe.anomaly.joint import DeviceMoments

    device = DeviceMoments(["a", "b"], moment_seconds=60, hold_seconds=30)
    readings = [(1, "a", 1.0), (2, "b", 10.0), (31, "a", 3.0), (65, "a", 5.0), (89, "b", 20.0)]
    add = lambda second, sensor, value: device.add(  # noqa: E731
        np.array([float(second)]), np.array([sensor]), np.array([value]))
    assert all(add(*r) == [] for r in readings)  # minute 0 ends at 60: due from 90
    [(moment, row, carried)] = add(90, "a", 7.0)
    assert moment == 0 and list(row) == [2.0, 10.0] and carried == []
    assert add(59, "b", 99.0) == [] and device.late == 1  # minute 0 was judged
    # Minute 1: a at 65 s and 90 s (mean 6), b at 89 s.
    [(moment, row, carried)] = add(150, "b", 1.0)
    assert moment == 1 and list(row) == [6.0, 20.0] and carried == []
    # Minute 2 (120..180) has only b: a carries its last value forward.
    [(moment, row, carried)] = add(211, "a", 1.0)
    assert moment == 2 and list(row) == [6.0, 1.0] and carried == ["a"]
