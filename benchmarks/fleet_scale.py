"""Fleet scale: the streaming scorer's cost per key per micro-batch, from 20 to 20,000 keys.

    .venv/bin/python benchmarks/fleet_scale.py [--keys 20 200 2000 20000] [--points 10]
        [--batches 8] [--repeats 3] [--detector NAME] [--trees N] [--resident-mb MB]
        [--conf spark.key=value ...]

Each key (train, sensor) first gets `--warmup` points of history, in batches of at most
WARMUP_CHUNK points a key (one batch of 2,000 points at 20,000 keys is 40 million rows, and
building it took 18 GB: the benchmark was OOM-killed), then `--points` readings per
micro-batch, one Parquet file per batch
read by Spark's file source (so the figures are the scorer's, not Kinesis's), scored by
`score_stream` with conf/local.yaml's anomaly settings and state store (RocksDB), local[2],
written to a no-op sink. Per key count it prints, medians over the steady batches (the first
two after the warm-up batches are discarded) of `--repeats` runs, with the spread:

- time per key per micro-batch, and records/s;
- checkpoint bytes written per micro-batch (new or grown files under the checkpoint), per
  point scored, and as a share of the whole state (state bytes per key times keys);
- state bytes per key (the state store's current version, RocksDB's SST files, at the end);
- and the detector's own sizes: resident (shared memory) and stored (a snapshot).

`--trees` sets `anomaly.forest_trees` (the scorer's and the anchor's forest). The default
detector (contextual) is 0.14 MiB a key resident, 2.9 GB at 20,000 keys; `--detector likelihood`
is 1.87 MiB, so 20,000 keys need 37 GiB of shared memory, more than a 24 GiB machine has
(with 8 trees, 0.48 MiB, it fits).
The last line divides each key count's records/s by the first's.

The anchor, in the same process: the detector core alone scoring the same points in the same
`--points`-point calls, one core (`core points/s`), and what two such cores would reach.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
WARMUP_CHUNK = 250  # warm-up points a key per batch
SENSORS = ["axle_bearing_temp", "brake_pipe_pressure", "vibration_rms", "traction_motor_current",
           "wheel_speed"]  # fmt: skip


def batch_frame(keys: int, points: int, batch: int, first: int | None = None) -> pd.DataFrame:
    """`points` readings of each key for micro-batch `batch`, one a second from second `first`
    (batch x points if None), distinct series."""
    k = np.repeat(np.arange(keys), points)
    step = np.tile(np.arange(points), keys) + (batch * points if first is None else first)
    rng = np.random.default_rng(batch)
    start = pd.Timestamp("2026-11-01", tz="UTC")
    moments = start + pd.to_timedelta(step, unit="s")
    devices = [f"train-{i // len(SENSORS):05d}" for i in k]
    return pd.DataFrame({
        "device_id": devices,
        "sensor": [SENSORS[i % len(SENSORS)] for i in k],
        "event_time": moments,
        "value": 50 + 10 * np.sin(step / (30 + k % 17)) + rng.normal(0, 0.5, len(k)),
        "unit": "x",
        "stream_name": "bench",
        "partition_key": devices,
        "sequence_number": [f"{batch:06d}{i:09d}" for i in range(len(k))],
        "sub_sequence_number": np.zeros(len(k), dtype=np.int64),
        "arrival_time": moments,
        "event_date": moments.date,
        "event_hour": moments.hour.astype(np.int32),
    })  # fmt: skip


def core_rate(keys: int, points: int, batches: int, spec: str) -> float:
    """points/s of the detector core on one core, `points` values per call, as the stream."""
    from sensorpipe.anomaly.detectors import make_detector

    sample = min(keys, 200)
    frames = [batch_frame(sample, points, b) for b in range(batches)]
    detectors = [make_detector(spec) for _ in range(sample)]
    detectors[0].update(np.ones(4))  # compiled outside the timing
    detectors[0] = make_detector(spec)
    start = time.perf_counter()
    for frame in frames:
        values = frame["value"].to_numpy().reshape(sample, points)
        for detector, row in zip(detectors, values, strict=True):
            detector.update(row)
    return sample * points * batches / (time.perf_counter() - start)


class Written:
    """Bytes written under a folder between two looks: new files, and growth of old ones."""

    def __init__(self, root: Path) -> None:
        self.root, self.sizes = root, {}

    def since_last(self) -> int:
        total = 0
        for path in self.root.rglob("*"):
            try:
                size = path.stat().st_size if path.is_file() else None
            except FileNotFoundError:
                continue
            if size is None:
                continue
            total += max(0, size - self.sizes.get(path, 0))
            self.sizes[path] = size
        return total


def run_once(spark, keys: int, points: int, batches: int, warmup: int, tmp: Path,
             anomaly) -> dict:  # noqa: ANN001 (AnomalySettings)  # fmt: skip
    from sensorpipe.listener import ProgressListener
    from sensorpipe.schemas import EVENT_SCHEMA
    from sensorpipe.streaming.queries import score_stream, scoring_settings

    source, checkpoint = tmp / "in", tmp / "checkpoint"
    source.mkdir(parents=True)
    # The first batches give every key `warmup` points of history (its detector past learning,
    # its state not trivially small); the steady batches after them are the figures. One
    # frame at a time: 20,000 keys' frames are gigabytes of this process's memory.
    chunks = [min(WARMUP_CHUNK, warmup - done) for done in range(0, warmup, WARMUP_CHUNK)]
    plan = [(n, sum(chunks[:c])) for c, n in enumerate(chunks)]  # (points, first second)
    plan += [(points, warmup + b * points) for b in range(batches)]
    for b, (count, first) in enumerate(plan):
        path = source / f"batch-{b:05d}.parquet"
        batch_frame(keys, count, b, first).to_parquet(path, coerce_timestamps="us")
        os.utime(path, (1_700_000_000 + b, 1_700_000_000 + b))  # the file source's order
    warmup_batches = len(chunks)
    batches += warmup_batches
    written = Written(checkpoint)
    per_batch: dict[int, dict] = {}
    done = threading.Event()

    class Progress(ProgressListener):
        def onQueryProgress(self, event) -> None:  # noqa: ANN001
            p = event.progress
            if p.numInputRows:
                sst = sum(op.customMetrics.get("rocksdbSstFileSize", 0)
                          for op in p.stateOperators)  # fmt: skip
                per_batch[p.batchId] = {"ms": p.batchDuration, "rows": p.numInputRows,
                                        "written": written.since_last(), "sst": sst}  # fmt: skip
                if len(per_batch) >= batches:
                    done.set()

        def onQueryTerminated(self, event) -> None:  # noqa: ANN001
            done.set()

    listener = Progress()
    spark.streams.addListener(listener)
    stream = (
        spark.readStream.schema(EVENT_SCHEMA).option("maxFilesPerTrigger", 1).parquet(str(source))
    )
    scoring = scoring_settings(anomaly, partitions=2)
    query = (
        score_stream(stream, scoring)
        .writeStream.format("noop")
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime="0 seconds")
        .start()
    )
    try:
        done.wait(3600)
        if query.exception():
            raise RuntimeError(str(query.exception()))
    finally:
        query.stop()
        spark.streams.removeListener(listener)
    ordered = [per_batch[b] for b in sorted(per_batch)]
    state_bytes = ordered[-1]["sst"]  # the state store's current version (RocksDB SST files)
    steady = ordered[warmup_batches + 2:] or ordered[-1:]  # after the warm-up and two batches
    shutil.rmtree(tmp, ignore_errors=True)
    ms = statistics.median(b["ms"] for b in steady)
    return {
        "ms_per_key": ms / keys,
        "records_per_s": keys * points / (ms / 1000),
        "written_per_batch": statistics.median(b["written"] for b in steady),
        "state_bytes_per_key": state_bytes / keys,
        "batches_ms": [b["ms"] for b in ordered],
    }


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[20, 200, 2000, 20000])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--batches", type=int, default=8, help="steady batches after warm-up")
    parser.add_argument("--warmup", type=int, default=2000, help="points per key first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-keys", type=int, default=20000,
                        help="from this many keys: one run of 5 batches (time)")  # fmt: skip
    parser.add_argument("--detector", help="anomaly.detector (default: conf/local.yaml's)")
    parser.add_argument("--trees", type=int, help="anomaly.forest_trees (default: the detector's)")
    parser.add_argument("--resident-mb", type=int, help="anomaly.resident_mb (conf/local.yaml's)")
    parser.add_argument("--conf", action="append", default=[], help="extra spark.key=value")
    args = parser.parse_args()

    from dataclasses import replace

    from pyspark.sql import SparkSession
    from sensorpipe.anomaly.detectors import detector_spec, make_detector
    from sensorpipe.anomaly.state import detector_nbytes
    from sensorpipe.config import load_settings
    from sensorpipe.session import job_spark_conf, local_spark_conf

    anomaly = load_settings(ROOT / "conf/local.yaml", environ={}).anomaly
    anomaly = replace(anomaly, forest_trees=args.trees, detector=args.detector or anomaly.detector,
                      resident_mb=args.resident_mb or anomaly.resident_mb)  # fmt: skip
    spec = detector_spec(anomaly.detector, anomaly.forest_trees)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {**job_spark_conf(), **local_spark_conf(2), "spark.sql.shuffle.partitions": "2",
            "spark.driver.memory": "4g"}  # fmt: skip
    conf.update(dict(c.split("=", 1) for c in args.conf))
    builder = SparkSession.builder.master("local[2]").appName("fleet-scale")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    print(f"fleet scale: {args.points} points per key per micro-batch, local[2], detector "
          f"{spec}, resident {anomaly.resident_mb:,} MB, "
          f"{', '.join(args.conf) or 'default state store conf'}")  # fmt: skip
    # Checkpoint bytes per point scored, and as a share of the whole state: the first stays
    # about level as keys grow if a batch writes in proportion to its points (issue 14).
    print(f"{'keys':>7} {'ms/key/batch':>22} {'records/s':>24} {'checkpoint B/batch':>26} "
          f"{'B/point':>8} {'of state':>8} {'state B/key':>12} {'core points/s':>14} "
          f"{'vs 2 cores':>10}")  # fmt: skip
    rates: dict[int, float] = {}
    for keys in args.keys:
        big = keys >= args.big_keys
        repeats, batches = (1, min(args.batches, 5)) if big else (args.repeats, args.batches)
        runs = []
        for _ in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix=f"fleet-{keys}-"))
            runs.append(run_once(spark, keys, args.points, batches, args.warmup, tmp, anomaly))
        core = core_rate(keys, args.points, batches, spec)
        rate = statistics.median(r["records_per_s"] for r in runs)
        rates[keys] = rate
        written = statistics.median(r["written_per_batch"] for r in runs)
        state = statistics.median(r["state_bytes_per_key"] for r in runs)
        print(f"{keys:>7} {spread([r['ms_per_key'] for r in runs], '.3f'):>22} "
              f"{spread([r['records_per_s'] for r in runs], ',.0f'):>24} "
              f"{spread([r['written_per_batch'] for r in runs], ',.0f'):>26} "
              f"{written / (keys * args.points):>8,.0f} {written / (state * keys):>8.2%} "
              f"{state:>12,.0f} "
              f"{core:>14,.0f} {rate / (2 * core):>10.2f}", flush=True)  # fmt: skip
        if os.environ.get("SENSORPIPE_BENCH_DEBUG"):
            for r in runs:
                print("   batch ms:", r["batches_ms"])
    first = args.keys[0]
    print(f"records/s against {first:,} keys: " + ", ".join(
        f"{keys:,} keys {rate / rates[first]:.2f}" for keys, rate in rates.items()))  # fmt: skip
    detector = make_detector(spec)
    detector.update(batch_frame(1, 5000, 0)["value"].to_numpy())
    stored = len(detector.to_bytes())
    print(f"detector: {detector_nbytes(detector) / 2**20:.2f} MiB resident, "
          f"{stored / 1e3:,.0f} KB as a snapshot (after 5,000 points)")  # fmt: skip
    spark.stop()


if __name__ == "__main__":
    main()
