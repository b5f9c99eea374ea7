"""Seeded generator of realistic train telemetry, as recorded Kinesis records.

Each train runs a day of service (stations, accelerations, cruising, braking) and is parked at
night; its sensors follow the physics loosely (bearings warm with speed and the day's ambient
temperature, brake-pipe pressure drops when braking, motor current follows traction and
regenerative braking). In tunnels the train has no network: readings are buffered and arrive
together at the tunnel's exit. Anomalies of four kinds (spike, level shift, drift, stuck sensor)
are injected and malformed records of every kind the decoder rejects are mixed in; all of
them are listed in the manifest, with the counts the pipeline must reproduce.

Output: ``<out>/telemetry/telemetry-<arrival hour>.jsonl.gz`` (one JSON line per Kinesis record,
ordered by arrival) and ``<out>/manifest.json``. Same seed, same bytes.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sensorpipe import decode
from sensorpipe.sensors import SENSORS, Sensor
from sensorpipe.sensors import catalogue as sensors_catalogue

ANOMALY_KINDS = ("spike", "level_shift", "drift", "stuck")

# Size of each anomaly kind per sensor, in the sensor's unit: beyond what the sensor shows in
# normal service (a failing bearing, a brake-pipe leak, a loose bogie), still inside the
# physical range so the event is valid and must be scored, not quarantined.
_SPIKE = {
    "axle_bearing_temp": 45.0,
    "brake_pipe_pressure": -2.5,
    "vibration_rms": 22.0,
    "traction_motor_current": 650.0,
    "wheel_speed": 80.0,
}
_SHIFT = {
    "axle_bearing_temp": 25.0,
    "brake_pipe_pressure": -2.2,
    "vibration_rms": 8.0,
    "traction_motor_current": 400.0,
    "wheel_speed": 45.0,
}
_DRIFT = {
    "axle_bearing_temp": 45.0,
    "brake_pipe_pressure": -2.5,
    "vibration_rms": 12.0,
    "traction_motor_current": 500.0,
    "wheel_speed": 60.0,
}


@dataclass(frozen=True)
class SampleSpec:
    seed: int = 20261101
    trains: int = 4
    hours: int = 36
    interval_seconds: int = 60
    start: str = "2026-11-01T00:00:00+00:00"
    anomalies_per_train: int = 3
    malformed_per_kind: int = 24
    oversize_records: int = 4


@dataclass
class _Record:
    arrival_ms: int
    device_id: str
    payload: bytes
    reason: str | None = None
    note: str | None = None


def _iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _journey(rng: np.random.Generator, minutes_of_day: np.ndarray, step_min: float) -> np.ndarray:
    """Speed in km/h at each step: station stops, accelerations, cruising; parked at night."""
    n = len(minutes_of_day)
    speed = np.zeros(n)
    service_start = 5 * 60 + rng.uniform(0, 40)
    service_end = 23 * 60 + rng.uniform(0, 30)
    i = 0
    while i < n:
        if not (service_start <= minutes_of_day[i] <= service_end):
            i += 1
            continue
        cruise = rng.uniform(110, 160)
        leg = int(rng.uniform(15, 35) / step_min)
        ramp = max(1, int(3 / step_min))
        profile = np.full(leg, cruise)
        profile[:ramp] = np.linspace(cruise / ramp, cruise, ramp)
        profile[-ramp:] = np.linspace(cruise, 0, ramp + 1)[1:]
        end = min(n, i + leg)
        speed[i:end] = profile[: end - i]
        i = end + int(rng.uniform(2, 5) / step_min)  # dwell at the station
    return speed


def _lag(signal: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(signal)
    acc = signal[0]
    for k, x in enumerate(signal):
        acc += alpha * (x - acc)
        out[k] = acc
    return out


def _train_series(
    rng: np.random.Generator, times_s: np.ndarray, step_min: float
) -> dict[str, np.ndarray]:
    hours_of_day = (times_s % 86400) / 3600.0
    speed = _journey(rng, hours_of_day * 60, step_min)
    accel = np.gradient(speed) / step_min  # km/h per minute
    n = len(times_s)
    ambient = 6 + rng.uniform(-2, 2) + 5 * np.sin(2 * np.pi * (hours_of_day - 9) / 24)
    bearing = ambient + _lag(0.18 * speed, alpha=step_min / 20) + rng.normal(0, 0.3, n)
    pressure = 5.0 - 0.035 * np.clip(-accel, 0, None) + rng.normal(0, 0.02, n)
    vibration = 0.4 + 0.025 * speed * (1 + 0.1 * rng.normal(size=n)) + rng.gamma(2.0, 0.05, n)
    current = 2.0 * speed + 11.0 * accel + rng.normal(0, 12, n)
    wheel = np.clip(speed + rng.normal(0, 0.5, n) * (speed > 0), 0, None)
    return {
        "axle_bearing_temp": bearing,
        "brake_pipe_pressure": pressure,
        "vibration_rms": vibration,
        "traction_motor_current": current,
        "wheel_speed": wheel,
    }


def _inject(
    rng: np.random.Generator, values: np.ndarray, kind: str, sensor: str, start: int, n: int
) -> tuple[int, int]:
    """Alter `values` in place with one anomaly starting at `start`; return its [first, last]."""
    if kind == "spike":
        width = int(rng.integers(1, 3))
        values[start : start + width] += _SPIKE[sensor]
        return start, start + width - 1
    length = {"level_shift": 90, "drift": 240, "stuck": 120}[kind]
    end = min(len(values), start + length)
    if kind == "level_shift":
        values[start:end] += _SHIFT[sensor]
    elif kind == "drift":
        values[start:end] += np.linspace(0, _DRIFT[sensor], end - start)
    else:
        values[start:end] = values[start]
    return start, end - 1


# Per catalogue: signal names the catalogue does not have (one a near-miss spelling), and a
# plausible wrong unit for each signal.
_UNKNOWN = {
    "train": ("cabin_humidity", "door_cycle_count", "axle_bearing_temperature"),
    "hospital": ("resp_rate", "skin_temp", "heartrate"),
}
_WRONG_UNIT = {
    "axle_bearing_temp": "degF", "brake_pipe_pressure": "psi", "wheel_speed": "mph",
    "vibration_rms": "g", "traction_motor_current": "kA",
    "heart_rate": "Hz", "systolic_bp": "kPa", "diastolic_bp": "kPa", "spo2": "ratio",
    "pacing_rate": "Hz", "lead_impedance": "kohm",
}  # fmt: skip


def _malformed(
    rng: np.random.Generator, reason: str, event: dict, arrival_ms: int, k: int,
    catalogue: str = "train",
) -> tuple[bytes, str]:  # fmt: skip
    """One record that the decoder must reject for exactly `reason`; returns (bytes, note)."""
    e = dict(event)
    dumps = json.dumps
    if reason == decode.OVERSIZE:
        e["diagnostics"] = "".join(rng.choice(list("0123456789abcdef"), 9000))
        return dumps(e).encode(), "9 KB diagnostics blob"
    if reason == decode.NOT_UTF8:
        text = dumps(e).replace(e["device_id"], e["device_id"] + "\udce9")
        return text.encode("utf-8", "surrogateescape"), "latin-1 byte in device_id"
    if reason == decode.NOT_JSON:
        options = [
            (dumps(e)[: 20 + k % 30], "truncated JSON"),
            (",".join(str(v) for v in e.values()), "CSV line"),
            (dumps(list(e.values())), "JSON array"),
            ("", "empty record"),
            ("{'device_id': 'train-01'}", "single-quoted pseudo-JSON"),
        ]
        text, note = options[k % len(options)]
        return text.encode(), note
    if reason == decode.MISSING_FIELD:
        name = ("device_id", "sensor", "event_time", "value", "unit")[k % 5]
        if k % 2:
            e[name] = None
            return dumps(e).encode(), f"{name} is null"
        del e[name]
        return dumps(e).encode(), f"{name} absent"
    if reason == decode.WRONG_TYPE:
        options = [
            ("value", str(e["value"]), "value as a string"),
            ("value", True, "value as a boolean"),
            ("device_id", 7, "device_id as a number"),
            ("event_time", arrival_ms // 1000, "event_time as epoch seconds"),
            ("unit", [e["unit"]], "unit as an array"),
        ]
        name, bad, note = options[k % len(options)]
        e[name] = bad
        return dumps(e).encode(), note
    if reason == decode.UNKNOWN_SENSOR:
        e["sensor"] = _UNKNOWN[catalogue][k % 3]
        return dumps(e).encode(), f"sensor {e['sensor']}"
    if reason == decode.UNIT_MISMATCH:
        e["unit"] = _WRONG_UNIT[e["sensor"]]
        return dumps(e).encode(), f"unit {e['unit']}"
    if reason == decode.BAD_EVENT_TIME:
        bad = ("yesterday", "2026-13-45T99:00:00Z", "01/11/2026 08:00", "")[k % 4]
        e["event_time"] = bad
        return dumps(e).encode(), f"event_time {bad!r}"
    if reason == decode.EVENT_TIME_SKEW:
        shift = timedelta(days=-30) if k % 2 else timedelta(days=2)
        e["event_time"] = _iso_ms(arrival_ms + int(shift.total_seconds() * 1000))
        return dumps(e).encode(), f"event time shifted {shift.days} days"
    if reason == decode.VALUE_OUT_OF_RANGE:
        sensor = sensors_catalogue(catalogue)[e["sensor"]]
        if k % 3 == 2:
            text = dumps(e).replace(f'"value": {dumps(e["value"])}', '"value": 1e999')
            return text.encode(), "value 1e999 (infinite)"
        e["value"] = sensor.physical_max * 5 + 100 if k % 2 else sensor.physical_min - 50
        return dumps(e).encode(), f"value {e['value']}"
    if reason == decode.DEVICE_MISMATCH:
        # A valid reading sent under another device's id than its sender's (partition key).
        e["device_id"] = f"{e['device_id']}-{'other' if k % 2 else 'x'}"
        return dumps(e).encode(), "device_id not its sender's"
    raise ValueError(f"no malformed generator for reason {reason!r}")


def generate(spec: SampleSpec, out_dir: str | Path) -> dict:
    """Write the sample records and manifest under `out_dir`; return the manifest."""
    rng = np.random.default_rng(spec.seed)
    start_s = int(datetime.fromisoformat(spec.start).timestamp())
    n = spec.hours * 3600 // spec.interval_seconds
    times_s = start_s + spec.interval_seconds * np.arange(n)
    step_min = spec.interval_seconds / 60
    records: list[_Record] = []
    anomalies: list[dict] = []
    tunnels = 0
    kinds = list(ANOMALY_KINDS) * (spec.trains * spec.anomalies_per_train // len(ANOMALY_KINDS) + 1)
    rng.shuffle(kinds)
    sensor_names = list(SENSORS)

    for t in range(spec.trains):
        device_id = f"train-{t + 1:02d}"
        series = _train_series(rng, times_s, step_min)
        # Anomalies start after eight hours of history (detectors learn a series first), six
        # hours apart; spikes and stuck sensors while moving, where a parked train hides them.
        per_hour = int(60 / step_min)
        candidates = np.arange(8 * per_hour, n - 5 * per_hour, 6 * per_hour)
        if len(candidates) < spec.anomalies_per_train:
            raise ValueError(
                f"{spec.hours} hours leave room for {len(candidates)} anomalies per train, "
                f"not {spec.anomalies_per_train} (after eight hours, each needs six)"
            )
        slots = rng.choice(candidates, spec.anomalies_per_train, replace=False)
        moving_at = np.flatnonzero(series["wheel_speed"] > 20)
        for slot in sorted(slots):
            kind = kinds.pop()
            sensor = sensor_names[int(rng.integers(len(sensor_names)))]
            begin = int(slot) + int(rng.integers(0, 2 * per_hour))
            if kind in ("spike", "stuck"):
                begin = int(moving_at[np.searchsorted(moving_at, begin)])
            first, last = _inject(rng, series[sensor], kind, sensor, begin, n)
            anomalies.append(
                {
                    "device_id": device_id,
                    "sensor": sensor,
                    "kind": kind,
                    "start": _iso_ms(int(times_s[first]) * 1000),
                    "end": _iso_ms(int(times_s[last]) * 1000),
                }
            )
        moving = series["wheel_speed"] > 1
        arrival_ms = (times_s * 1000 + rng.integers(200, 2500, n)).astype(np.int64)
        # Tunnels: no network while inside; buffered readings arrive at the exit, in order.
        moving_steps = np.flatnonzero(moving)
        tunnel_count = min(len(moving_steps), 8 * spec.hours // 24)
        for entry in rng.choice(moving_steps, tunnel_count, replace=False):
            exit_ = min(n - 1, int(entry) + int(rng.integers(4, 16) / step_min))
            arrival_ms[entry:exit_] = arrival_ms[exit_] + np.arange(exit_ - entry) * 40
            tunnels += 1
        for name in sensor_names:
            records += readings(device_id, SENSORS[name], series[name], times_s, arrival_ms,
                                range(n), digits=2)  # fmt: skip

    valid_count = len(records)
    by_file, malformed = mix_and_write(rng, records, spec.malformed_per_kind,
                                       spec.oversize_records, Path(out_dir))  # fmt: skip
    out = Path(out_dir)
    event_hours = {(int(s) // 3600) for s in times_s}
    manifest = {
        "generator": "sensorpipe samples",
        "spec": asdict(spec),
        "sensors": {name: asdict(s) for name, s in SENSORS.items()},
        "counts": {
            "records": len(records),
            "valid": valid_count,
            "quarantined": dict(sorted(Counter(m["reason"] for m in malformed).items())),
            "event_partitions": len(event_hours),
            "files": len(by_file),
            "tunnels": tunnels,
        },
        "anomalies": anomalies,
        "malformed": malformed,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def readings(
    device_id: str, sensor: Sensor, values: np.ndarray, times_s: np.ndarray,
    arrival_ms: np.ndarray, steps: Iterable[int], digits: int,
) -> list[_Record]:  # fmt: skip
    """One valid record per step: the value clipped to the sensor's range, rounded."""
    values = np.clip(values, sensor.physical_min, sensor.physical_max)
    out = []
    for k in steps:
        event = {
            "device_id": device_id,
            "sensor": sensor.name,
            "event_time": _iso_ms(int(times_s[k]) * 1000),
            "value": round(float(values[k]), digits),
            "unit": sensor.unit,
        }
        payload = json.dumps(event, separators=(",", ":")).encode()
        out.append(_Record(int(arrival_ms[k]), device_id, payload))
    return out


def mix_and_write(
    rng: np.random.Generator, records: list[_Record], per_kind: int, oversize: int, out: Path,
    catalogue: str = "train",
) -> tuple[dict[str, list[str]], list[dict]]:  # fmt: skip
    """Mix malformed records of every reason into `records` (each copied from a valid one),
    order all by arrival and write them as recorded Kinesis records under `out`/telemetry;
    returns the lines per file and the malformed records' sequence numbers and reasons."""
    valid_count = len(records)
    for reason in decode.REASONS:
        count = oversize if reason == decode.OVERSIZE else per_kind
        for k in range(count):
            base = records[int(rng.integers(valid_count))]
            event = json.loads(base.payload)
            arrival = base.arrival_ms + int(rng.integers(1, 500))
            payload, note = _malformed(rng, reason, event, arrival, k, catalogue)
            records.append(_Record(arrival, base.device_id, payload, reason, note))

    records.sort(key=lambda r: (r.arrival_ms, r.device_id, r.payload))
    telemetry = out / "telemetry"
    telemetry.mkdir(parents=True, exist_ok=True)
    for old in telemetry.glob("telemetry-*.jsonl.gz"):
        old.unlink()
    by_file: dict[str, list[str]] = {}
    malformed = []
    for i, rec in enumerate(records):
        seq = str(49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000 + i)
        line = {
            "partitionKey": rec.device_id,
            "sequenceNumber": seq,
            "approximateArrivalTimestamp": _iso_ms(rec.arrival_ms),
        }
        try:
            line["data"] = rec.payload.decode("utf-8")
        except UnicodeDecodeError:
            line["dataBase64"] = base64.b64encode(rec.payload).decode()
        hour = _iso_ms(rec.arrival_ms)[:13].replace("-", "")
        by_file.setdefault(f"telemetry-{hour}.jsonl.gz", []).append(json.dumps(line))
        if rec.reason:
            malformed.append({"sequenceNumber": seq, "reason": rec.reason, "note": rec.note})
    for name, lines in by_file.items():
        with (
            open(telemetry / name, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        ):
            gz.write(("\n".join(lines) + "\n").encode())
    return by_file, malformed


def relation_break_case(seed: int = 7, days: int = 4) -> tuple[dict[str, np.ndarray], dict]:
    """A train's five sensors, a reading a minute for `days` days, with two faults on the last
    day where every sensor stays inside its own normal range while their relation breaks
    (issue 32, item 4): traction current at a cruising level for 20 minutes while the train is
    parked at night (`current_without_speed`), and brake-pipe pressure at a braking level
    while the train accelerates out of a station (`pressure_while_accelerating`). Returns the
    series and each fault's rows. Acceleration is the minute just gone, so the moment before
    a departure is still a standing one (the bundled samples' central difference gives it
    current already)."""
    rng = np.random.default_rng(seed)
    times = np.arange(0, days * 86400, 60.0)
    hours = (times % 86400) / 3600
    speed = _journey(rng, hours * 60, 1.0)
    accel = np.diff(speed, prepend=speed[0])  # km/h per minute
    n = len(times)
    ambient = 6 + 5 * np.sin(2 * np.pi * (hours - 9) / 24)
    series = {
        "axle_bearing_temp": ambient + _lag(0.18 * speed, 1 / 20) + rng.normal(0, 0.3, n),
        "brake_pipe_pressure": 5.0 - 0.008 * np.clip(-accel, 0, None) + rng.normal(0, 0.02, n),
        "vibration_rms": 0.4 + 0.025 * speed * (1 + 0.1 * rng.normal(size=n))
        + rng.gamma(2.0, 0.05, n),
        "traction_motor_current": 2.0 * speed + 4.0 * accel + rng.normal(0, 12, n),
        "wheel_speed": np.clip(speed + rng.normal(0, 0.5, n) * (speed > 0), 0, None),
    }
    last_day = (days - 1) * 86400
    parked = np.flatnonzero((times >= last_day + 2 * 3600) & (times < last_day + 2 * 3600 + 1200))
    series["traction_motor_current"][parked] = 260 + rng.normal(0, 12, len(parked))
    departing = np.flatnonzero((times >= last_day + 10 * 3600) & (accel > 5))[0]
    accelerating = np.arange(departing, departing + 3)
    series["brake_pipe_pressure"][accelerating] = 4.6 + rng.normal(0, 0.02, 3)
    return series, {"current_without_speed": parked, "pressure_while_accelerating": accelerating}
