"""A soak: the streaming job running continuously for a long time at a steady rate, to see
whether anything grows with the number of micro-batches (batch duration, driver or worker
memory) and whether it stops cleanly (issue 30: a StackOverflowError was seen in the alerts
query when a continuous run stopped).

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--rate 100] [--keys 40]

A live stream: `--keys` (train, sensor) keys report in turn at `--rate` records a second, event
time now, with a spike on one key every 30 s (incidents open and close all along). The job
runs as conf/local.yaml has it, continuously: 1 s trigger, 5 s side trigger, PostgreSQL
warehouse (aggregates and incidents), outbox shadows, the alerts' fast path.

Every `--every` seconds it prints the minute's events batches (count, median and max duration),
the driver JVM's resident memory and its heap after GC, and the Python workers' resident memory
(all processes under pyspark.daemon).
The job runs in a child process whose stderr (Spark's log) goes to a file; at the end the file
is searched for errors, above all at the stop, and the first and last samples are compared.
The anchor is the run's own first sample: growth is the last sample's ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENSORS = {"axle_bearing_temp": ("degC", 40.0), "vibration_rms": ("mm/s", 4.0),
           "traction_motor_current": ("A", 300.0), "wheel_speed": ("km/h", 120.0)}  # fmt: skip
ERRORS = re.compile(r"StackOverflowError|OutOfMemoryError|Exception in thread|\bERROR\b")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def workers_rss_kib() -> int:
    """Resident memory of every Python worker process (pyspark.daemon and its forks)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
            total += rss_kib(int(entry.name))
    return total


def heap_after_gc_mib(spark) -> int:  # noqa: ANN001
    """The driver JVM's heap as its last collections left it (each heap pool's usage after
    its last GC): what the heap holds on to, where resident memory also counts garbage not
    yet collected and memory outside the heap (RocksDB's, in local mode)."""
    total = 0
    for pool in spark._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():
        if str(pool.getType()) == "Heap memory":
            usage = pool.getCollectionUsage()
            if usage is not None:
                total += usage.getUsed()
    return total // (1 << 20)


def child(args: argparse.Namespace) -> int:
    """The job, the producer and the sampler, in this process (stderr is Spark's log)."""
    import boto3
    from sensorpipe.config import load_settings
    from sensorpipe.session import build_session
    from sensorpipe.sources.kpl import UserRecord
    from sensorpipe.streaming import start_lake_run
    from sensorpipe_tools.local_services import Kinesalite, Postgres, local_aws_environment
    from sensorpipe_tools.local_settings import lake_environ
    from sensorpipe_tools.producer import ProduceStats, put_batch

    for key, value in local_aws_environment().items():
        os.environ.setdefault(key, value)
    work = Path(tempfile.mkdtemp(prefix="sensorpipe-soak-"))
    work.chmod(0o755)
    kinesalite = Kinesalite.start(log_path=work / "kinesalite.log")
    postgres = Postgres.start(work / "pg")
    kinesis = boto3.client("kinesis", endpoint_url=kinesalite.endpoint_url, region_name="us-east-1")
    kinesis.create_stream(StreamName="soak", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="soak")
    settings = load_settings(ROOT / "conf/local.yaml", environ={
        **lake_environ(work / "out"),
        "SENSORPIPE__SOURCE__ENDPOINT_URL": kinesalite.endpoint_url,
        "SENSORPIPE__SOURCE__STREAM_NAME": "soak",
        "SENSORPIPE__WAREHOUSE__KIND": "postgres",
        "SENSORPIPE__WAREHOUSE__PORT": str(postgres.port),
        "SENSORPIPE__ALERTS__KIND": "outbox",
        "SENSORPIPE__ALERTS__OUTBOX_PATH": str(work / "outbox"),
        "SENSORPIPE__ANOMALY__WARMUP_POINTS": "50",
        "SENSORPIPE__ANOMALY__INCIDENT_QUIET_MINUTES": "1",
        "SENSORPIPE__STREAM__TRIGGER": "1 second",
        "SENSORPIPE__STREAM__SIDE_TRIGGER": "5 seconds",
    })  # fmt: skip
    spark = build_session(settings)
    jvm_pid = spark.sparkContext._gateway.proc.pid
    stop = threading.Event()
    produced = [0]

    def produce() -> None:
        names = list(SENSORS)
        keys = [(f"train-{k // len(names) + 1:02d}", names[k % len(names)])
                for k in range(args.keys)]  # fmt: skip
        import numpy as np

        rng = np.random.default_rng(1)
        per_tick = max(1, round(args.rate * 0.25))  # a put every quarter second
        started, n, spike_every = time.monotonic(), 0, int(args.rate * 30)
        stats = ProduceStats()
        while not stop.is_set():
            batch = []
            for _ in range(per_tick):
                device, sensor = keys[n % len(keys)]
                unit, base = SENSORS[sensor]
                value = base * (1 + rng.uniform(-0.002, 0.002))
                if n % spike_every == spike_every - 1:
                    value += base * 0.5
                event = {"device_id": device, "sensor": sensor, "unit": unit,
                         "value": round(value, 4),
                         "event_time": datetime.now(UTC).isoformat(timespec="milliseconds")
                         .replace("+00:00", "Z")}  # fmt: skip
                batch.append(UserRecord(device, json.dumps(event).encode()))
                n += 1
            put_batch(kinesis, "soak", batch, stats)
            produced[0] = n
            ahead = n / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    run = start_lake_run(spark, settings)
    samples = []
    seen_batches = set()
    deadline = time.monotonic() + args.minutes * 60
    try:
        while time.monotonic() < deadline:
            stop.wait(args.every)
            for query in run.queries:
                if query.exception() is not None:
                    raise RuntimeError(f"{query.name} failed: {query.exception()}")
            recent = [p for p in run.events.recentProgress
                      if p.batchId not in seen_batches and p.numInputRows]  # fmt: skip
            seen_batches.update(p.batchId for p in recent)
            durations = [p.batchDuration / 1000 for p in recent]
            sample = {
                "minute": round((time.monotonic() - (deadline - args.minutes * 60)) / 60, 1),
                "batches": len(durations),
                "median_s": round(statistics.median(durations), 2) if durations else None,
                "max_s": round(max(durations), 2) if durations else None,
                "driver_mib": rss_kib(jvm_pid) // 1024,
                "heap_after_gc_mib": heap_after_gc_mib(spark),
                "workers_mib": workers_rss_kib() // 1024,
                "produced": produced[0],
                "last_batch": max(seen_batches) if seen_batches else None,
            }
            samples.append(sample)
            # A file of its own: the job's progress lines share stdout from other threads, and
            # a sample interleaved with one was lost with the rest of an hour's run.
            with open(args.samples, "a") as out:
                out.write(json.dumps(sample) + "\n")
    finally:
        stop.set()
        producer.join(timeout=10)
        sys.stderr.write("\n=== SOAK: stopping the run ===\n")
        sys.stderr.flush()
        run.stop()
        sys.stderr.write("=== SOAK: run stopped ===\n")
        sys.stderr.flush()
        spark.stop()
        kinesalite.stop()
        postgres.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--every", type=float, default=60, help="seconds between samples")
    parser.add_argument("--log", default="build/soak-spark.log", help="the job's stderr")
    parser.add_argument("--samples", default="build/soak-samples.jsonl", help="one per line")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    Path(args.samples).unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", "--minutes", str(args.minutes), "--rate",
               str(args.rate), "--keys", str(args.keys), "--every", str(args.every),
               "--samples", args.samples]  # fmt: skip
    with open(log, "wb") as err:
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=err)
    samples = []
    if Path(args.samples).exists():
        samples = [json.loads(line) for line in Path(args.samples).read_text().splitlines()]
    for record in samples:
        print(f"  minute {record['minute']:>5}: {record['batches']:>3} events batches, "
              f"median {record['median_s']} s, max {record['max_s']} s; driver "
              f"{record['driver_mib']} MiB (heap after GC {record.get('heap_after_gc_mib')} "
              f"MiB), workers {record['workers_mib']} MiB")  # fmt: skip
    text = log.read_text(errors="replace")
    at_stop = text.split("=== SOAK: stopping the run ===", 1)[-1]
    errors = [line for line in text.splitlines() if ERRORS.search(line)]
    stop_errors = [line for line in at_stop.splitlines() if ERRORS.search(line)]
    print(f"\nsoak: {args.minutes:g} min at {args.rate:g} records/s, {args.keys} keys; exit "
          f"{done.returncode}; Spark's log: {log}")  # fmt: skip
    if samples:
        first, last = samples[0], samples[-1]
        steady = [s for s in samples if s["median_s"] is not None]
        print(f"  events batch median: first sample {first['median_s']} s, last "
              f"{last['median_s']} s (all samples: {min(s['median_s'] for s in steady)} to "
              f"{max(s['median_s'] for s in steady)} s)")  # fmt: skip
        for what in ("driver_mib", "heap_after_gc_mib", "workers_mib"):
            print(f"  {what.replace('_mib', '')} memory: first {first[what]} MiB, last "
                  f"{last[what]} MiB ({last[what] / max(first[what], 1):.2f}x the first sample)")
    print(f"  errors in the log: {len(errors)}, of which at the stop: {len(stop_errors)}")
    for line in stop_errors[:5] or errors[:5]:
        print(f"    {line[:200]}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
