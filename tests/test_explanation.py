"""Issue 32, item 3: a flagged reading says how it is anomalous: above or below the range the
detector took as normal at that moment, and how far (anomaly/incidents.py, explain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sensorpipe.anomaly.incidents import ABOVE, BELOW, explain
from sensorpipe.anomaly.spark import score_batch
from sensorpipe.schemas import EVENT_SCHEMA

from tests.test_anomaly_spark import series_frame

SPIKE_AT = 500  # series_frame plants +30 at this point of each key


def test_a_planted_spike_and_a_planted_drop_are_explained(spark):
    frame = series_frame(700)
    # train-02's spike made a drop of the same size: 60 below what it was.
    drop = (frame["device_id"] == "train-02") & (np.arange(len(frame)) == 700 + SPIKE_AT)
    frame.loc[drop, "value"] -= 60
    scored = score_batch(spark.createDataFrame(frame, EVENT_SCHEMA), "likelihood", 0.5, 50)
    scored = scored.toPandas().sort_values(["device_id", "event_time"]).reset_index(drop=True)
    spike = scored[scored["device_id"] == "train-01"].iloc[SPIKE_AT]
    fall = scored[scored["device_id"] == "train-02"].iloc[SPIKE_AT]
    assert spike["is_anomaly"] and fall["is_anomaly"]
    assert spike["anomaly_direction"] == "above" and spike["value"] > spike["expected_high"]
    assert fall["anomaly_direction"] == "below" and fall["value"] < fall["expected_low"]
    # Outside the range: more than one half-width from its middle, by the test's own arithmetic.
    for row in (spike, fall):
        middle = (row["expected_low"] + row["expected_high"]) / 2
        half = (row["expected_high"] - row["expected_low"]) / 2
        assert row["anomaly_strength"] == abs(row["value"] - middle) / half > 1
    # A reading not flagged is not explained.
    quiet = scored[~scored["is_anomaly"].astype(bool)]
    assert quiet["anomaly_direction"].isna().all() and quiet["anomaly_strength"].isna().all()


def test_explain_says_nothing_without_a_range_and_names_a_side_within_one():
    values = np.array([5.0, 12.0, 9.5, 3.0])
    expected = np.array([[np.nan, np.nan], [9.0, 11.0], [9.0, 11.0], [9.0, 11.0]])
    directions, strengths = explain(values, expected, np.array([True, True, True, False]))
    assert list(directions) == [None, ABOVE, BELOW, None]
    np.testing.assert_array_equal(strengths, [np.nan, 2.0, 0.5, np.nan])
    assert pd.isna(strengths[0]) and pd.isna(strengths[3])
