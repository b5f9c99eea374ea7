"""Ingest throughput: records/s from Kinesis (kinesalite) into the lake on local[2], with the
file-replay source of the same records as the in-run anchor; and the producer's records/s, with
one PutRecord call per record as its anchor.

    .venv/bin/python benchmarks/ingest_throughput.py [--repeats 3]

Figures are medians of --repeats runs, alternating the two sources; the machine is noisy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from sensorpipe.config import load_settings
from sensorpipe.session import build_session
from sensorpipe.streaming import run_lake_job
from sensorpipe_tools.local_services import Kinesalite, local_aws_environment
from sensorpipe_tools.producer import produce, sample_records

ROOT = Path(__file__).resolve().parent.parent


def settings(tmp: Path, **extra: str):
    environ = {
        "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(tmp / "lake/quarantine"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(tmp / "checkpoints"),
        "SENSORPIPE__WAREHOUSE__KIND": "none",
        "SENSORPIPE__ALERTS__KIND": "none",
        "SENSORPIPE__SOURCE__STARTING_POSITION": "TRIM_HORIZON",
        **extra,
    }
    return load_settings(ROOT / "conf/local.yaml", environ=environ)


def timed_job(spark, config) -> tuple[float, int]:
    start = time.perf_counter()
    summary = run_lake_job(spark, config)
    return time.perf_counter() - start, summary.records_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import os

    for key, value in local_aws_environment().items():
        os.environ.setdefault(key, value)
    records = [rec for _, rec in sample_records(ROOT / "samples")]
    kinesalite = Kinesalite.start()
    client = boto3.client("kinesis", endpoint_url=kinesalite.endpoint_url, region_name="us-east-1")
    tmp_root = Path(tempfile.mkdtemp(prefix="sensorpipe-bench-"))
    spark = build_session(settings(tmp_root))
    spark.sparkContext.setLogLevel("ERROR")
    replay_rates, kinesis_rates, produce_rates, aggregated_rates = [], [], [], []
    try:
        for i in range(args.repeats):
            stream = f"bench-{i}"
            client.create_stream(StreamName=stream, ShardCount=2)
            client.get_waiter("stream_exists").wait(StreamName=stream)
            stats = produce(client, stream, records)
            produce_rates.append(stats.records_per_second)

            agg_stream = f"bench-agg-{i}"
            client.create_stream(StreamName=agg_stream, ShardCount=2)
            client.get_waiter("stream_exists").wait(StreamName=agg_stream)
            aggregated_rates.append(
                produce(client, agg_stream, records, aggregate_records=100).records_per_second
            )

            run_dir = tmp_root / f"replay-{i}"
            seconds, n = timed_job(spark, settings(run_dir, SENSORPIPE__SOURCE__KIND="replay"))
            replay_rates.append(n / seconds)
            shutil.rmtree(run_dir)

            run_dir = tmp_root / f"kinesis-{i}"
            seconds, n = timed_job(
                spark,
                settings(
                    run_dir,
                    SENSORPIPE__SOURCE__KIND="kinesis",
                    SENSORPIPE__SOURCE__ENDPOINT_URL=kinesalite.endpoint_url,
                    SENSORPIPE__SOURCE__STREAM_NAME=stream,
                ),
            )
            assert n == len(records), f"read {n} of {len(records)}"
            kinesis_rates.append(n / seconds)
            shutil.rmtree(run_dir)
            print(
                f"run {i + 1}: replay {replay_rates[-1]:,.0f}/s, "
                f"kinesis {kinesis_rates[-1]:,.0f}/s, "
                f"producer {produce_rates[-1]:,.0f}/s, aggregated {aggregated_rates[-1]:,.0f}/s"
            )

        # Producer anchor: one PutRecord call per record, on a subset (it is slow).
        client.create_stream(StreamName="bench-single", ShardCount=2)
        client.get_waiter("stream_exists").wait(StreamName="bench-single")
        subset = records[:3000]
        start = time.perf_counter()
        for rec in subset:
            client.put_record(
                StreamName="bench-single", Data=rec.data, PartitionKey=rec.partition_key
            )
        single_rate = len(subset) / (time.perf_counter() - start)
    finally:
        spark.stop()
        kinesalite.stop()
        shutil.rmtree(tmp_root, ignore_errors=True)

    med = statistics.median
    print(
        f"\ningest into the lake, {len(records)} sample records, local[2], "
        f"median of {args.repeats}:"
    )
    print(f"  anchor  replay files -> lake      {med(replay_rates):>10,.0f} records/s")
    print(
        f"  kinesis (kinesalite) -> lake      {med(kinesis_rates):>10,.0f} records/s "
        f"({med(kinesis_rates) / med(replay_rates):.2f}x the anchor)"
    )
    print("producer into kinesalite:")
    print(f"  anchor  PutRecord per record      {single_rate:>10,.0f} records/s")
    print(
        f"  PutRecords (500 a call)           {med(produce_rates):>10,.0f} records/s "
        f"({med(produce_rates) / single_rate:.1f}x the anchor)"
    )
    print(
        f"  PutRecords + KPL aggregation 100  {med(aggregated_rates):>10,.0f} records/s "
        f"({med(aggregated_rates) / single_rate:.1f}x the anchor)"
    )


if __name__ == "__main__":
    main()
