"""hive-site.xml as EMR writes it from the deployment's spark-hive-site classification
(conf/emr/metastore-jdbc.json) for an external metastore on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
SECRET_ANNOTATION = "EMR.secret@"


def hive_site(jdbc_url: str, user: str, secret_arn: str, secrets: Any, warehouse: Path) -> str:
    """The classification's properties, filled; the EMR.secret@ property's ARN resolved with
    `secrets` (a Secrets Manager client), as EMR resolves it when it configures the nodes."""
    (classification,) = json.loads((ROOT / "conf/emr/metastore-jdbc.json").read_text())
    assert classification["Classification"] == "spark-hive-site"
    values = {"METASTORE_JDBC_URL": jdbc_url, "METASTORE_USER": user,
              "METASTORE_PASSWORD_SECRET_ARN": secret_arn, "BUCKET": "unused"}  # fmt: skip
    properties = {}
    for key, value in classification["Properties"].items():
        for name, filled in values.items():
            value = value.replace("{{" + name + "}}", filled)
        # "Store sensitive configuration data in AWS Secrets Manager": the annotation is on the
        # property's key, the value is the secret's ARN; EMR writes the property without it.
        if key.startswith(SECRET_ANNOTATION):
            key = key.removeprefix(SECRET_ANNOTATION)
            value = secrets.get_secret_value(SecretId=value)["SecretString"]
        properties[key] = value
    properties["hive.metastore.warehouse.dir"] = str(warehouse)
    body = "".join(
        f"<property><name>{escape(k)}</name><value>{escape(v)}</value></property>"
        for k, v in properties.items()
    )
    return f"<configuration>{body}</configuration>\n"


def spark_defaults(jdbc_jar: str) -> str:
    """spark-defaults.conf beside that hive-site.xml: the driver's JDBC jar and the metastore
    properties (`spark.sql.hive.*`) of the cluster's spark-defaults classification
    (conf/emr/configurations.json), as EMR writes them. Not its other properties: network
    authentication and dynamic allocation are for a YARN cluster, not local[1]."""
    (defaults, *_) = json.loads((ROOT / "conf/emr/configurations.json").read_text())
    assert defaults["Classification"] == "spark-defaults"
    hive = {k: v for k, v in defaults["Properties"].items() if k.startswith("spark.sql.hive.")}
    lines = [f"spark.driver.extraClassPath {jdbc_jar}", *(f"{k} {v}" for k, v in hive.items())]
    return "\n".join(lines) + "\n"
