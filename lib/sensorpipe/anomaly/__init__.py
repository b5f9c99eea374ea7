"""Streaming anomaly detection: detector cores in numpy/numba (no Spark), their Spark glue,
and NAB scoring for the benchmark."""
