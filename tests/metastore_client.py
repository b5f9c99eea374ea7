"""Run in its own process, with SPARK_CONF_DIR holding the hive-site.xml the bootstrap wrote:
one Spark process writes a partitioned table through the external metastore, another reads it.

    python tests/metastore_client.py write WAREHOUSE_DIR
    python tests/metastore_client.py read WAREHOUSE_DIR     # prints JSON: partitions, rows
"""

import json
import sys

from pyspark.sql import SparkSession

JDBC_JAR = "/usr/share/java/postgresql.jar"


def session(warehouse: str) -> SparkSession:
    return (
        SparkSession.builder.master("local[1]")
        .appName("sensorpipe-metastore-test")
        .config("spark.driver.extraClassPath", JDBC_JAR)
        .config("spark.sql.warehouse.dir", warehouse)
        .config("spark.ui.enabled", "false")
        .enableHiveSupport()
        .getOrCreate()
    )


def main() -> int:
    action, warehouse = sys.argv[1:3]
    spark = session(warehouse)
    spark.sparkContext.setLogLevel("ERROR")
    if action == "write":
        spark.sql("CREATE DATABASE IF NOT EXISTS sensorpipe_agg")
        rows = [
            ("T1", "brake_pressure", "2026-11-01", 5.1),
            ("T1", "brake_pressure", "2026-11-02", 5.0),
            ("T2", "axle_temp", "2026-11-02", 41.0),
        ]
        df = spark.createDataFrame(
            rows, "device_id string, sensor string, event_date string, mean double"
        )
        df.write.mode("overwrite").partitionBy("event_date").format("parquet").saveAsTable(
            "sensorpipe_agg.daily_aggregates"
        )
        print(json.dumps({"written": df.count()}))
    else:
        partitions = [
            r[0] for r in spark.sql("SHOW PARTITIONS sensorpipe_agg.daily_aggregates").collect()
        ]
        rows = spark.table("sensorpipe_agg.daily_aggregates").count()
        catalog = spark.conf.get("spark.sql.catalogImplementation")
        print(json.dumps({"partitions": sorted(partitions), "rows": rows, "catalog": catalog}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
