"""How the detector does on labelled telemetry (the samples' manifest): recall of the injected
anomalies and the false-alarm rate elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd


@dataclass
class Evaluation:
    anomalies: int
    detected: int
    flagged_points: int
    false_alarm_points: int
    normal_points: int
    missed: list[dict]

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else 1.0

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarm_points / self.normal_points if self.normal_points else 0.0

    def render(self, name_device: Callable[[str], str] = str) -> str:
        """`name_device`: how a missed anomaly's device is printed (a keyed reference for a
        hospital device, whose serial identifies its patient: sensorpipe.logref)."""
        lines = [
            f"injected anomalies flagged: {self.detected}/{self.anomalies} "
            f"(recall {self.recall:.0%}); false alarms: {self.false_alarm_points} of "
            f"{self.normal_points} normal points ({self.false_alarm_rate:.3%})"
        ]
        lines += [
            f"  missed: {name_device(m['device_id'])} {m['sensor']} {m['kind']} {m['start']}"
            for m in self.missed
        ]
        return "\n".join(lines)


def evaluate(
    scored: pd.DataFrame, anomalies: list[dict], grace: timedelta = timedelta(minutes=30)
) -> Evaluation:
    """`scored`: device_id, sensor, event_time, is_anomaly. An anomaly is detected if a point of
    its series is flagged between its start and its end plus `grace`; a flag elsewhere is a
    false alarm, except on the signals the anomaly lists under `also` during it."""
    frame = scored[["device_id", "sensor", "event_time", "is_anomaly"]].copy()
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    inside = pd.Series(False, index=frame.index)
    detected, missed = 0, []
    for anomaly in anomalies:
        start = pd.Timestamp(anomaly["start"])
        end = pd.Timestamp(anomaly["end"]) + grace
        during = (frame["device_id"] == anomaly["device_id"]) & frame["event_time"].between(
            start, end
        )
        mask = during & (frame["sensor"] == anomaly["sensor"])
        # Signals the anomaly also changed (hypotension lowers the diastolic pressure too):
        # their flags are neither a detection nor a false alarm.
        inside |= mask | (during & frame["sensor"].isin(anomaly.get("also", [])))
        if frame.loc[mask, "is_anomaly"].any():
            detected += 1
        else:
            missed.append(anomaly)
    normal = ~inside
    return Evaluation(
        len(anomalies),
        detected,
        int(frame["is_anomaly"].sum()),
        int((frame["is_anomaly"] & normal).sum()),
        int(normal.sum()),
        missed,
    )
