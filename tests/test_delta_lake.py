"""The Delta path of the lake sink. Delta's jars (delta-spark_2.13 4.0.0) ship with EMR under
/usr/share/aws/delta/lib and cannot be fetched here (no Maven), so this test runs where they are
on the classpath and reports itself skipped, with that reason, everywhere else."""

import pytest

from tests.test_stream_job import ROOT, run_job, settings_for


def delta_on_classpath(spark, path) -> bool:
    try:
        spark.range(1).write.format("delta").mode("overwrite").save(str(path))
        return True
    except Exception as exc:  # py4j wraps SparkClassNotFoundException, not an AnalysisException
        if "DATA_SOURCE_NOT_FOUND" in str(exc):
            return False
        raise


def test_stream_job_writes_delta_when_configured(spark, tmp_path):
    if not delta_on_classpath(spark, tmp_path / "probe"):
        pytest.skip(
            "Delta jars are not on this Spark's classpath (no Maven here); "
            "on EMR they are under /usr/share/aws/delta/lib"
        )
    settings = settings_for(tmp_path, ROOT / "samples", SENSORPIPE__LAKE__FORMAT="delta")
    summary = run_job(spark, settings)
    assert summary.reconciled
    assert spark.read.format("delta").load(settings.lake.events_path).count() == summary.valid
    again = run_job(spark, settings)
    assert again.records_in == 0
