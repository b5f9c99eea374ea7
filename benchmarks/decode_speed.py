"""Decode speed: records/s of `decode_records` (validation, typed fields, quarantine reason and
detail) on the bundled samples, local[2], with JSON parsing alone (`try_parse_json` of every
payload) as the anchor in the same process.

    .venv/bin/python benchmarks/decode_speed.py [--repeats 5]

The records are read once and cached; each repeat decodes all of them to a no-op sink. Medians
of --repeats, spread in brackets; the first repeat includes code generation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from pyspark.sql import functions as F
    from sensorpipe.config import load_settings
    from sensorpipe.decode import decode_records
    from sensorpipe.schemas import REPLAY_RECORD_SCHEMA
    from sensorpipe.sensors import catalogue
    from sensorpipe.session import build_session
    from sensorpipe.sources.replay import as_kinesis_records

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The job's own session and decode settings (conf/local.yaml), the streaming job's.
    settings = load_settings(ROOT / "conf/local.yaml", environ={})
    spark = build_session(settings)
    spark.sparkContext.setLogLevel("ERROR")
    raw = spark.read.schema(REPLAY_RECORD_SCHEMA).json(str(ROOT / "samples/telemetry"))
    records = as_kinesis_records(raw, "bench").cache()
    n = records.count()
    d = settings.decode
    decoded = decode_records(records, d.max_record_bytes, d.max_event_lag_hours,
                             d.max_event_lead_minutes, catalogue(d.catalogue))  # fmt: skip
    cases = {
        "anchor: try_parse_json alone": records.select(
            F.try_parse_json(F.col("data").cast("string")).alias("doc")
        ),
        "decode_records": decoded,
    }
    print(f"decode speed: {n:,} records (the bundled samples), local[2], {args.repeats} repeats")
    rates = {}
    for label, frame in cases.items():
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            frame.write.format("noop").mode("overwrite").save()
            seconds.append(time.perf_counter() - start)
        rates[label] = [n / s for s in seconds]
        r = rates[label]
        print(f"  {label:<30} {statistics.median(r):>9,.0f} records/s "
              f"({min(r):,.0f}..{max(r):,.0f})")  # fmt: skip
    anchor, decode = (statistics.median(r) for r in rates.values())
    print(f"  decode_records costs {anchor / decode:.1f}x the parse alone")
    spark.stop()


if __name__ == "__main__":
    main()
