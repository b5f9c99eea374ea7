"""Issue 32, item 4: a device's sensors judged together catch a relation that breaks while
each sensor stays inside its own normal range, and name the sensors (anomaly/joint.py)."""

from __future__ import annotations

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
