"""Another Spark process: reads tables by name through the metastore $SPARK_CONF_DIR names.

    python tests/catalog_reader.py '{"events": "SELECT count(*) FROM sensorpipe.events ..."}'

prints {"events": <count>, ...} as one JSON line (for SHOW ..., the number of rows).
"""

import json
import sys

from pyspark.sql import SparkSession


def main() -> int:
    queries = json.loads(sys.argv[1])
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("sensorpipe-catalog-reader")
        .config("spark.ui.enabled", "false")
        .enableHiveSupport()
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    counts = {}
    for name, sql in queries.items():
        rows = spark.sql(sql).collect()
        counts[name] = len(rows) if sql.upper().startswith("SHOW") else rows[0][0]
    print(json.dumps(counts))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
