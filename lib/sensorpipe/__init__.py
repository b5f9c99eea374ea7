"""sensorpipe: PySpark batch and streaming jobs for Amazon EMR on sensor telemetry."""

__version__ = "0.1.0"
