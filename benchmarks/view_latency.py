"""Operations page latency: from a reading's arrival in Kinesis (kinesalite's
ApproximateArrivalTimestamp, as the incidents table records it) to its incident showing on the
page (`sensorpipe view`), observed in a real headless Chromium: the page notes when each alert
id first appears (`window.sensorpipeSeen`). The streaming job runs continuously at a 1 s
trigger on local[2], loading incidents into PostgreSQL through the alerts' fast path.

    .venv/bin/python benchmarks/view_latency.py [--rate 100] [--runs 3] [--keys 120]

Each key (train, sensor) gets a normal history, then one planted spike at a random point of a
measured stretch of `--points` readings, all keys interleaved at `--rate` records a second. A
spike whose incident never shows on the page counts as a miss: the percentiles are over every
planted spike, a miss being slower than any arrival. The anchor is Kinesis Data Firehose's
minimum buffering interval, 60 s (what the seed's Elasticsearch path would wait at least).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import psycopg
from sensorpipe.config import load_settings
from sensorpipe.session import build_session
from sensorpipe.sources.kpl import UserRecord
from sensorpipe.streaming import start_lake_run
from sensorpipe_tools.local_services import Kinesalite, Postgres, local_aws_environment
from sensorpipe_tools.local_settings import lake_environ
from sensorpipe_tools.producer import produce
from sensorpipe_tools.view import reader_from_settings, serve
from sensorpipe_tools.watch import grant_read_only

ROOT = Path(__file__).resolve().parent.parent
SENSORS = {"axle_bearing_temp": ("degC", 40.0), "vibration_rms": ("mm/s", 4.0),
           "traction_motor_current": ("A", 300.0), "wheel_speed": ("km/h", 120.0)}  # fmt: skip


def planted(keys: int, warm: int, points: int, seed: int = 3):
    """(warm records, measured records, {alert id of each planted spike}), keys interleaved."""
    rng = np.random.default_rng(seed)
    start = (datetime.now(UTC) - timedelta(days=2)).replace(second=0, microsecond=0)
    names = list(SENSORS)
    warm_rows, measured_rows, spikes = [], [], set()
    for k in range(keys):
        device, sensor = f"train-{k // len(names) + 1:03d}", names[k % len(names)]
        unit, base = SENSORS[sensor]
        spike_at = warm + int(rng.integers(2, points - 2))
        rows = []
        for i in range(warm + points):
            moment = start + timedelta(minutes=i)
            # Bounded noise: once a key has seen its range, normal readings stay in it (the
            # range check flags readings beyond what a key has seen; a false alarm shortly
            # before a spike would hold the spike in its incident, hiding its planted id).
            value = base * (1 + rng.uniform(-0.002, 0.002)) + (base * 0.5 if i == spike_at else 0)
            event = {"device_id": device, "sensor": sensor, "unit": unit, "value": round(value, 4),
                     "event_time": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")}  # fmt: skip
            rows.append(UserRecord(device, json.dumps(event).encode()))
        spikes.add(f"{device}/{sensor}#{start + timedelta(minutes=spike_at):%Y%m%dT%H%M%SZ}")
        warm_rows.append(rows[:warm])
        measured_rows.append(rows[warm:])

    def interleave(groups):
        return [r for step in zip(*groups, strict=True) for r in step]

    return interleave(warm_rows), interleave(measured_rows), spikes


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def run_once(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sensorpipe-view-bench-"))
    tmp.chmod(0o755)
    kinesalite = Kinesalite.start()
    postgres = Postgres.start(tmp / "pg")
    spark = run = server = driver = None
    seen: dict = {}
    spikes: set = set()
    try:
        kinesis = boto3.client(
            "kinesis", endpoint_url=kinesalite.endpoint_url, region_name="us-east-1"
        )
        kinesis.create_stream(StreamName="bench", ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName="bench")
        settings = load_settings(
            ROOT / "conf/local.yaml",
            environ={
                **lake_environ(tmp / "out"),
                "SENSORPIPE__SOURCE__ENDPOINT_URL": kinesalite.endpoint_url,
                "SENSORPIPE__SOURCE__STREAM_NAME": "bench",
                "SENSORPIPE__WAREHOUSE__KIND": "postgres",
                "SENSORPIPE__WAREHOUSE__PORT": str(postgres.port),
                "SENSORPIPE__ALERTS__KIND": "outbox",
                "SENSORPIPE__ALERTS__OUTBOX_PATH": str(tmp / "outbox"),
                "SENSORPIPE__ANOMALY__WARMUP_POINTS": "50",
                # A false alarm while a key is still learning closes before its spike comes.
                "SENSORPIPE__ANOMALY__INCIDENT_QUIET_MINUTES": "5",
                "SENSORPIPE__STREAM__TRIGGER": "1 second",
                "SENSORPIPE__STREAM__SIDE_TRIGGER": args.side_trigger,
            },
        )
        grant_read_only(settings)
        warm, measured, spikes = planted(args.keys, args.warm, args.points)
        produce(kinesis, "bench", warm)
        spark = build_session(settings)
        spark.sparkContext.setLogLevel("ERROR")
        run = start_lake_run(spark, settings)
        while sum(p.numInputRows for p in run.events.recentProgress) < len(warm) or not (
            run.alerts is not None and run.alerts.recentProgress
        ):
            time.sleep(0.5)
        server = serve(reader_from_settings(settings), settings.view, port=0)
        driver = browser()
        driver.get(server.url)
        producer = threading.Thread(
            target=produce, args=(kinesis, "bench", measured), kwargs={"rate": args.rate}
        )
        producer.start()
        producer.join()
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            seen = driver.execute_script("return window.sensorpipeSeen")
            if spikes <= set(seen):
                break
            time.sleep(0.5)
        seen = driver.execute_script("return window.sensorpipeSeen")
        dsn = f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={postgres.database}"
        with psycopg.connect(dsn) as conn:
            arrivals = dict(conn.execute(
                "SELECT alert_id, arrival_time FROM incidents WHERE action = 'open'"
            ).fetchall())  # fmt: skip
        latencies = sorted(
            seen[a] / 1000 - arrivals[a].replace(tzinfo=UTC).timestamp()
            if a in seen and a in arrivals else math.inf
            for a in spikes
        )  # fmt: skip
        return {"latencies": latencies, "spikes": len(spikes), "records": len(measured),
                "opened": len(spikes & set(arrivals))}  # fmt: skip
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.stop()
        if run is not None:
            run.stop()
        if spark is not None:
            spark.stop()
        kinesalite.stop()
        postgres.stop()
        if os.environ.get("SENSORPIPE_BENCH_KEEP"):
            print(f"kept {tmp}; missed: {sorted(spikes - set(seen or {}))}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values; inf counts as the slowest."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="records per second")
    parser.add_argument("--keys", type=int, default=120, help="keys, one planted spike each")
    parser.add_argument("--warm", type=int, default=100, help="normal readings per key first")
    parser.add_argument("--points", type=int, default=30, help="measured readings per key")
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait after the last")
    parser.add_argument("--side-trigger", default="5 seconds", help="stream.side_trigger")
    args = parser.parse_args()
    for key, value in local_aws_environment().items():
        os.environ.setdefault(key, value)
    p99s, p50s = [], []
    for n in range(args.runs):
        result = run_once(args)
        lat = result["latencies"]
        missed = sum(math.isinf(v) for v in lat)
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        p50s.append(p50)
        p99s.append(p99)
        print(f"run {n + 1}: {result['spikes'] - missed} of {result['spikes']} planted incidents "
              f"shown, {result['opened']} in the incidents table ({result['records']} records "
              f"at {args.rate:.0f}/s): arrival in Kinesis -> "
              f"on the page p50 {p50:.2f} s, p99 {p99:.2f} s, max {lat[-1]:.2f} s",
              flush=True)  # fmt: skip
    median99 = statistics.median(p99s)
    print(f"\nmedian of {args.runs} runs at {args.rate:.0f} records/s: p50 "
          f"{statistics.median(p50s):.2f} s, p99 {median99:.2f} s (p99 of the runs: "
          f"{', '.join(f'{v:.2f}' for v in sorted(p99s))}; a miss counts as infinite)")  # fmt: skip
    print(f"  anchor: Firehose buffering 60 s -> p99 is {median99 / 60:.1%} of it")


if __name__ == "__main__":
    main()
