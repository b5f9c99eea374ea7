"""Seeded hospital device telemetry, as recorded Kinesis records (the trusted proxy's stream).

The devices are the synthetic hospital's (synthetic_hospital.py, same seed): bedside monitors
of admitted patients (heart rate, SpO2, systolic and diastolic pressure from an arterial line,
every 30 s) and pacemakers (pacing rate and lead impedance by remote telemetry, every 60 s).
Each patient has their own baseline, a slow circadian swing and physiological noise; monitors
are taken off now and then (gaps of 10 to 40 minutes without readings). After seven hours of
history (the detectors learn each series first) clinical episodes are planted, one per
device: tachycardia, hypotension, desaturation (monitors, in turn) and pacing failure
(pacemakers: the rate falls to a backup rate as the lead's impedance rises, a lead fracture).
Malformed records of every reason the decoder has are mixed in.

Output, like the train samples: ``<out>/telemetry/telemetry-<hour>.jsonl.gz`` and
``<out>/manifest.json`` with the episodes, the malformed records, the counts the pipeline
must reproduce and the device serials (protected health information: a serial identifies its
patient). Same seed, same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sensorpipe.sensors import HOSPITAL_SENSORS

from sensorpipe_tools.samples import _iso_ms, _Record, mix_and_write, readings
from sensorpipe_tools.synthetic_hospital import HospitalSpec
from sensorpipe_tools.synthetic_hospital import generate as generate_hospital

MONITOR_SIGNALS = ("heart_rate", "spo2", "systolic_bp", "diastolic_bp")
PACER_SIGNALS = ("pacing_rate", "lead_impedance")
MONITOR_EPISODES = ("tachycardia", "hypotension", "desaturation")
# The signal an episode is judged on (the one a clinician's alarm would be set on).
# The other signals an episode changes (as planted).
EPISODE_ALSO = {"hypotension": ["diastolic_bp"], "pacing_failure": ["lead_impedance"]}
EPISODE_SIGNAL = {
    "tachycardia": "heart_rate",
    "hypotension": "systolic_bp",
    "desaturation": "spo2",
    "pacing_failure": "pacing_rate",
}


@dataclass(frozen=True)
class HospitalTelemetrySpec:
    hospital_seed: int = 7  # the synthetic hospital whose devices report
    hospital_patients: int = 120
    seed: int = 20260629
    monitors: int = 8
    pacemakers: int = 3
    hours: int = 12
    start: str = "2026-06-29T18:00:00+00:00"
    monitor_interval_seconds: int = 30
    pacer_interval_seconds: int = 30  # through the bedside transmitter
    history_hours: float = 7.0  # of readings before a device's episode
    malformed_per_kind: int = 6
    oversize_records: int = 2


def _smooth(rng: np.random.Generator, n: int, sd: float, alpha: float) -> np.ndarray:
    """An AR(1) series (physiological wander) with stationary standard deviation `sd`."""
    noise = rng.normal(0, sd * np.sqrt(1 - (1 - alpha) ** 2), n)
    out = np.empty(n)
    acc = rng.normal(0, sd)
    for k in range(n):
        acc = (1 - alpha) * acc + noise[k]
        out[k] = acc
    return out


def _ramp(n: int, first: int, last: int, ramp: int) -> np.ndarray:
    """0 outside [first, last], rising to 1 over `ramp` steps at the start, falling at the end."""
    shape = np.zeros(n)
    up = np.clip((np.arange(n) - first + 1) / ramp, 0, 1)
    down = np.clip((last - np.arange(n) + 1) / ramp, 0, 1)
    inside = (np.arange(n) >= first) & (np.arange(n) <= last)
    shape[inside] = np.minimum(up, down)[inside]
    return shape


def _monitor(rng: np.random.Generator, times_s: np.ndarray) -> dict[str, np.ndarray]:
    n = len(times_s)
    hours = (times_s % 86400) / 3600.0
    night = np.cos(2 * np.pi * (hours - 3) / 24)  # lowest around 03:00
    hr0, sys0, spo0 = rng.uniform(62, 88), rng.uniform(110, 135), rng.uniform(95.5, 98.5)
    heart = hr0 - 2 * night + _smooth(rng, n, 2.0, 0.05) + rng.normal(0, 1.5, n)
    systolic = sys0 - 3 * night + _smooth(rng, n, 2.5, 0.05) + rng.normal(0, 2.0, n)
    diastolic = 0.62 * systolic + rng.uniform(-4, 4) + rng.normal(0, 1.2, n)
    spo2 = np.minimum(100, spo0 + _smooth(rng, n, 0.4, 0.05) + rng.normal(0, 0.3, n))
    return {"heart_rate": heart, "spo2": spo2, "systolic_bp": systolic, "diastolic_bp": diastolic}


def _pacemaker(rng: np.random.Generator, times_s: np.ndarray) -> dict[str, np.ndarray]:
    n = len(times_s)
    rate0, ohm0 = rng.choice([60.0, 70.0]), rng.uniform(450, 800)
    # Rate-responsive pacing: above the base rate with the patient's activity.
    activity = np.clip(_smooth(rng, n, 6.0, 0.04), 0, None)
    return {
        "pacing_rate": rate0 + activity + rng.normal(0, 0.8, n),
        "lead_impedance": ohm0 + _smooth(rng, n, 12.0, 0.02) + rng.normal(0, 4.0, n),
    }


def _plant(series: dict[str, np.ndarray], kind: str, first: int, last: int, step_s: int) -> None:
    n = len(next(iter(series.values())))
    shape = _ramp(n, first, last, max(1, 120 // step_s))
    if kind == "tachycardia":
        series["heart_rate"] += shape * (150 - series["heart_rate"][first])
    elif kind == "hypotension":
        series["systolic_bp"] -= shape * 45
        series["diastolic_bp"] -= shape * 25
    elif kind == "desaturation":
        series["spo2"] -= shape * (series["spo2"][first] - 84)
    elif kind == "pacing_failure":
        series["pacing_rate"] -= shape * (series["pacing_rate"] - 40)  # backup rate only
        series["lead_impedance"] += shape * 2800
    else:
        raise ValueError(f"unknown episode {kind!r}")


def latest_start(spec: HospitalTelemetrySpec, now: datetime) -> str:
    """The spec's start moved by whole days to the latest that ends before `now`: the same
    readings (they follow the time of day, not the date), recent enough to be published as
    recorded (`produce --keep-event-times`), so the manifest's episode times hold."""
    start = datetime.fromisoformat(spec.start)
    days = (now - timedelta(hours=spec.hours, minutes=5) - start) // timedelta(days=1)
    return (start + timedelta(days=days)).isoformat()


def devices(spec: HospitalTelemetrySpec) -> tuple[list[str], list[str]]:
    """The bedside monitors and pacemakers that report, from the synthetic hospital's
    device table (so the snapshot finds each one's patient)."""
    data = generate_hospital(HospitalSpec(seed=spec.hospital_seed, patients=spec.hospital_patients))
    serials = sorted({r["device_id"] for r in data.rows["clinical.device_readings"]})
    monitors = [s for s in serials if s.startswith("BEDMON-")]
    pacers = [s for s in serials if s.startswith("PACER-")]
    if len(monitors) < spec.monitors or len(pacers) < spec.pacemakers:
        raise ValueError(
            f"the hospital has {len(monitors)} monitors and {len(pacers)} pacemakers, the "
            f"spec asks for {spec.monitors} and {spec.pacemakers}"
        )
    rng = np.random.default_rng(spec.seed)
    chosen = sorted(rng.choice(monitors, spec.monitors, replace=False).tolist())
    return chosen, sorted(rng.choice(pacers, spec.pacemakers, replace=False).tolist())


def generate(spec: HospitalTelemetrySpec, out_dir: str | Path) -> dict:
    """Write the records and manifest under `out_dir`; return the manifest."""
    monitors, pacers = devices(spec)
    rng = np.random.default_rng(spec.seed + 1)
    start_s = int(datetime.fromisoformat(spec.start).timestamp())
    records: list[_Record] = []
    episodes: list[dict] = []
    gaps = 0
    fleet = [(d, "monitor") for d in monitors] + [(d, "pacemaker") for d in pacers]
    for i, (device, kind) in enumerate(fleet):
        step = spec.monitor_interval_seconds if kind == "monitor" else spec.pacer_interval_seconds
        n = spec.hours * 3600 // step
        times_s = start_s + step * np.arange(n)
        series = _monitor(rng, times_s) if kind == "monitor" else _pacemaker(rng, times_s)
        per_minute = 60 // step
        episode = MONITOR_EPISODES[i % len(MONITOR_EPISODES)] if kind == "monitor" else (
            "pacing_failure"
        )  # fmt: skip
        history = int(spec.history_hours * 3600 / step)
        keep = np.ones(n, dtype=bool)
        if kind == "monitor":  # taken off the monitor now and then, in the history
            for _ in range(int(rng.integers(1, 3))):
                at = int(rng.integers(0, history - 40 * per_minute))
                keep[at : at + int(rng.integers(10, 40)) * per_minute] = False
                gaps += 1
        # The episode after `history` readings (not hours: the gaps have none).
        earliest = int(np.searchsorted(np.cumsum(keep), history))
        if earliest + 30 * per_minute > n:
            raise ValueError(f"{spec.hours} hours leave no room for an episode after "
                             f"{spec.history_hours} hours of readings")  # fmt: skip
        first = earliest + int(rng.integers(0, max(1, n - earliest - 60 * per_minute)))
        last = min(n - 1, first + int(rng.integers(12, 30)) * per_minute)
        _plant(series, episode, first, last, step)
        episodes.append({
            "device_id": device, "sensor": EPISODE_SIGNAL[episode],
            "also": EPISODE_ALSO.get(episode, []), "kind": episode,
            "start": _iso_ms(int(times_s[first]) * 1000),
            "end": _iso_ms(int(times_s[last]) * 1000),
        })  # fmt: skip
        arrival_ms = (times_s * 1000 + rng.integers(300, 3000, n)).astype(np.int64)
        for name, values in series.items():
            records += readings(device, HOSPITAL_SENSORS[name], values, times_s, arrival_ms,
                                np.flatnonzero(keep), digits=1)  # fmt: skip
    valid_count = len(records)
    out = Path(out_dir)
    by_file, malformed = mix_and_write(
        rng, records, spec.malformed_per_kind, spec.oversize_records, out, "hospital"
    )
    manifest = {
        "generator": "sensorpipe hospital telemetry",
        "spec": asdict(spec),
        "sensors": {name: asdict(s) for name, s in HOSPITAL_SENSORS.items()},
        "devices": {"monitors": monitors, "pacemakers": pacers},
        "counts": {
            "records": len(records),
            "valid": valid_count,
            "quarantined": dict(sorted(Counter(m["reason"] for m in malformed).items())),
            "files": len(by_file),
            "gaps": gaps,
        },
        "anomalies": episodes,
        "malformed": malformed,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
