"""The sensor catalogue: every sensor a train reports, its unit and its physical range.

The decoder rejects readings outside these ranges (a bearing cannot be at 900 degC; such a
value is a broken sensor or a broken encoder, not an anomaly to score), and the sample
generator keeps its injected anomalies inside them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sensor:
    name: str
    unit: str
    physical_min: float
    physical_max: float
    description: str


SENSORS: dict[str, Sensor] = {
    s.name: s
    for s in (
        Sensor("axle_bearing_temp", "degC", -50.0, 200.0, "axle-box bearing temperature"),
        Sensor("brake_pipe_pressure", "bar", 0.0, 10.0, "brake pipe air pressure"),
        Sensor("vibration_rms", "mm/s", 0.0, 100.0, "bogie vibration velocity, RMS"),
        Sensor("traction_motor_current", "A", -1500.0, 1500.0, "traction motor current"),
        Sensor("wheel_speed", "km/h", 0.0, 400.0, "wheel speed"),
    )
}
