"""What a streaming progress report costs a Python listener: pyspark's field-by-field conversion
against the report's JSON (sensorpipe/listener.py).

    .venv/bin/python benchmarks/progress_events.py [--reports 50] [--repeats 3]

A rate stream with one observed metric (as the job's events query has) runs a few batches on
local[2]; its last progress report is then converted `--reports` times each way, alternating,
`--repeats` rounds. The anchor is pyspark's `StreamingQueryProgress.fromJObject`, which its
listeners use; prints ms per report, median and spread, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.listener import StreamingQueryProgress
    from sensorpipe.config import load_settings
    from sensorpipe.listener import progress_of
    from sensorpipe.session import build_session

    # The job's own session (conf/local.yaml: local[2]).
    spark = build_session(load_settings(ROOT / "conf/local.yaml", environ={}))
    spark.sparkContext.setLogLevel("ERROR")
    stream = spark.readStream.format("rate").option("rowsPerSecond", 10).load()
    query = (
        stream.observe("counts", F.count(F.lit(1)).alias("n"), F.max("value").alias("top"))
        .writeStream.format("noop").trigger(processingTime="1 second")
        .option("checkpointLocation", tempfile.mkdtemp(prefix="progress-events-")).start()
    )  # fmt: skip
    while query.lastProgress is None or not query.lastProgress["observedMetrics"]:
        time.sleep(0.5)
    query.stop()
    report = query._jsq.lastProgress()
    ways = {"pyspark fromJObject (anchor)": StreamingQueryProgress.fromJObject,
            "JSON (sensorpipe.listener)": progress_of}  # fmt: skip
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, convert in ways.items():
            start = time.perf_counter()
            for _ in range(args.reports):
                convert(report)
            timings[name].append((time.perf_counter() - start) / args.reports * 1000)
    anchor = statistics.median(next(iter(timings.values())))
    print(f"progress report with one observed metric, {args.reports} conversions x "
          f"{args.repeats} rounds, local[2]")  # fmt: skip
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:<30} {median:8.2f} ms ({min(values):.2f}..{max(values):.2f})  "
              f"{median / anchor:6.3f}x the anchor")  # fmt: skip
    spark.stop()


if __name__ == "__main__":
    main()
