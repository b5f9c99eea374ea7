"""Sensor catalogues: every signal a deployment's devices report, its unit and physical range.

Each deployment names its catalogue in its configuration (`decode.catalogue`): `train` (the
five sensors a train reports) or `hospital` (bedside monitors and pacemakers). The decoder
rejects readings of a signal the catalogue does not list (`unknown_sensor`), in another unit
(`unit_mismatch`) or outside its physical range (`value_out_of_range`: a bearing cannot be at
900 degC, a heart cannot beat 900 times a minute; such a value is a broken sensor or encoder,
not an anomaly to score). The sample generators keep their planted anomalies inside the ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Sensor:
    name: str
    unit: str
    physical_min: float
    physical_max: float
    description: str


def _catalogue(*sensors: Sensor) -> dict[str, Sensor]:
    return {s.name: s for s in sensors}


SENSORS: dict[str, Sensor] = _catalogue(
    Sensor("axle_bearing_temp", "degC", -50.0, 200.0, "axle-box bearing temperature"),
    Sensor("brake_pipe_pressure", "bar", 0.0, 10.0, "brake pipe air pressure"),
    Sensor("vibration_rms", "mm/s", 0.0, 100.0, "bogie vibration velocity, RMS"),
    Sensor("traction_motor_current", "A", -1500.0, 1500.0, "traction motor current"),
    Sensor("wheel_speed", "km/h", 0.0, 400.0, "wheel speed"),
)

# Bedside monitors (heart rate, non-invasive blood pressure, pulse oximetry) and implanted
# pacemakers (remote telemetry through the trusted proxy). The ranges are what a device can
# physically report, far wider than what is clinically normal: the detectors judge the latter.
HOSPITAL_SENSORS: dict[str, Sensor] = _catalogue(
    Sensor("heart_rate", "bpm", 0.0, 350.0, "heart rate from the ECG leads"),
    Sensor("systolic_bp", "mmHg", 0.0, 300.0, "systolic blood pressure"),
    Sensor("diastolic_bp", "mmHg", 0.0, 250.0, "diastolic blood pressure"),
    Sensor("spo2", "%", 0.0, 100.0, "peripheral oxygen saturation"),
    Sensor("pacing_rate", "ppm", 0.0, 250.0, "pacemaker pacing pulses per minute"),
    Sensor("lead_impedance", "ohm", 0.0, 10000.0, "pacing lead impedance"),
)

CATALOGUES: dict[str, Mapping[str, Sensor]] = {"train": SENSORS, "hospital": HOSPITAL_SENSORS}


def catalogue(name: str) -> Mapping[str, Sensor]:
    """The catalogue called `name` (config.DecodeSettings validates the name at start-up)."""
    try:
        return CATALOGUES[name]
    except KeyError:
        raise ValueError(f"no sensor catalogue {name!r}; known: {', '.join(CATALOGUES)}") from None
