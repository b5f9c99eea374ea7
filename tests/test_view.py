"""The operations page (`sensorpipe view`): in a real headless Chromium (Debian's, driven by
Selenium with the binary's path: nothing downloaded), against a continuous streaming run on
kinesalite and the session's PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import psycopg
import pytest
from sensorpipe.sources.kpl import UserRecord
from sensorpipe.streaming import start_lake_run
from sensorpipe_tools.producer import produce
from sensorpipe_tools.view import PAGE, board, reader_from_settings, serve
from sensorpipe_tools.watch import grant_read_only

from tests.kinesis_helpers import new_stream
from tests.local_settings import ROOT, local_settings

TRAINS = ["train-01", "train-02", "train-03"]
SENSOR, UNIT, BASE = "axle_bearing_temp", "degC", 40.0
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: tools/install-system-packages.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _readings(device: str, start: datetime, minutes: range, spike_at: int | None = None,
              seed: int = 0) -> list[UserRecord]:  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    for m in minutes:
        value = BASE + rng.normal(0, 0.3) + (60.0 if m == spike_at else 0.0)
        event = {
            "device_id": device,
            "sensor": SENSOR,
            "unit": UNIT,
            "value": round(value, 3),
            "event_time": (start + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        out.append(UserRecord(device, json.dumps(event).encode()))
    return out


def _interleaved(start: datetime, minutes: range, spikes: dict[str, int]) -> list[UserRecord]:
    per_train = [_readings(t, start, minutes, spikes.get(t), seed=i) for i, t in enumerate(TRAINS)]
    return [r for group in zip(*per_train, strict=True) for r in group]


def _wait(condition, seconds: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"not within {seconds:.0f} s: {what}")


def _open_ids(driver) -> list[str]:  # noqa: ANN001
    return driver.execute_script(
        "return [...document.querySelectorAll('#open tbody tr')].map(r => r.dataset.alertId)"
    )


def test_operations_page_shows_a_planted_incident_live_without_a_reload(
    spark, kinesis, postgres, warehouse_db, browser, tmp_path
):
    stream = new_stream(kinesis, 1)
    settings = local_settings(
        tmp_path,
        SENSORPIPE__SOURCE__STREAM_NAME=stream,
        SENSORPIPE__SOURCE__ENDPOINT_URL=kinesis.meta.endpoint_url,
        SENSORPIPE__WAREHOUSE__KIND="postgres",
        SENSORPIPE__WAREHOUSE__PORT=str(postgres.port),
        SENSORPIPE__WAREHOUSE__DATABASE=warehouse_db,
        SENSORPIPE__ALERTS__KIND="outbox",
        SENSORPIPE__ALERTS__OUTBOX_PATH=str(tmp_path / "outbox"),
        SENSORPIPE__ANOMALY__WARMUP_POINTS="40",
        SENSORPIPE__STREAM__TRIGGER="1 second",
        SENSORPIPE__STREAM__SIDE_TRIGGER="2 seconds",
        SENSORPIPE__STREAM__QUERY_PREFIX="view",
    )
    grant_read_only(settings)
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    produce(kinesis, stream, _interleaved(start, range(0, 90), {}))
    run = start_lake_run(spark, settings)
    server = serve(reader_from_settings(settings), settings.view, port=0)
    try:
        browser.get(server.url)
        # The fleet: every train of the data, each reporting.
        _wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#fleet tbody tr')].map(r => r.dataset.device)"
        ) == TRAINS, 120, "the fleet lists every train")  # fmt: skip
        assert _open_ids(browser) == []
        browser.execute_script("window.notReloaded = true")
        updates = int(browser.execute_script("return document.body.dataset.updates"))

        # A planted spike on train-02, then train-03 goes silent (a tunnel) while the others
        # report for ten more minutes.
        produce(kinesis, stream, _interleaved(start, range(90, 95), {"train-02": 92}))
        later = _interleaved(start, range(95, 108), {})
        produce(kinesis, stream, [r for r in later if r.partition_key != "train-03"])
        alert = _wait(lambda: [a for a in _open_ids(browser) if a.startswith("train-02/")], 90,
                      "the planted incident appears in the open incidents")[0]  # fmt: skip
        assert browser.execute_script("return window.notReloaded === true")  # no reload
        assert int(browser.execute_script("return document.body.dataset.updates")) > updates
        row = browser.execute_script(
            "const r = document.querySelector(`#open tbody tr[data-alert-id='${arguments[0]}']`);"
            "return [...r.cells].map(c => c.textContent)", alert)  # fmt: skip
        assert row[:3] == ["train-02", SENSOR, "critical"]
        assert float(row[4]) > 90  # the value, 40 + 60, against the expected range beside it
        low, high = (float(v) for v in row[5].split(" .. "))
        assert low < BASE < high < float(row[4])
        # How (issue 32): above the range, more than a half-width from its middle: outside it.
        direction, strength = row[6].split()
        assert direction == "above" and float(strength) > 1
        # The chart of the newest incident: its windows drawn, the anomalous reading marked.
        marked = "#chart circle.anomaly.reading[data-alert-id='${arguments[0]}']"
        _wait(lambda: browser.execute_script(
            f"return document.querySelector(`{marked}`) !== null"
            " && document.querySelector('#chart polyline.mean') !== null", alert,
        ), 30, "the chart with the anomaly marked")  # fmt: skip
        _wait(lambda: browser.execute_script(
            "return document.querySelector('#fleet tr[data-device=\"train-03\"]').className"
        ) == "silent", 60, "train-03, in a tunnel, shown silent")  # fmt: skip
        Path(ROOT / "build").mkdir(exist_ok=True)
        browser.save_screenshot(str(ROOT / "build/view-test.png"))

        # The warehouse restarts; the page says so, then carries on without a reload.
        run.stop()
        postgres.pause()
        _wait(lambda: "unavailable" in browser.find_element("id", "warehouse").text, 30,
              "the page reports the warehouse down")  # fmt: skip
        postgres.resume()
        run = start_lake_run(spark, settings)
        produce(kinesis, stream, _interleaved(start, range(108, 112), {"train-01": 110}))
        _wait(lambda: [a for a in _open_ids(browser) if a.startswith("train-01/")], 90,
              "an incident after the warehouse's restart")  # fmt: skip
        assert browser.find_element("id", "warehouse").text == "live"
        assert browser.execute_script("return window.notReloaded === true")
    finally:
        server.stop()
        run.stop()
    # Both delivery paths loaded the transitions: the table holds each once.
    lake = spark.read.parquet(settings.lake.events_path).where("alert_action IS NOT NULL")
    expected = sorted((r.alert_id, r.alert_action) for r in lake.collect())
    with psycopg.connect(f"{postgres.dsn.rsplit(' ', 1)[0]} dbname={warehouse_db}") as conn:
        loaded = sorted(conn.execute("SELECT alert_id, action FROM incidents").fetchall())
    assert loaded == expected and len(expected) >= 2


def test_the_view_login_reads_and_cannot_write(postgres, warehouse_db, tmp_path):
    settings = local_settings(
        tmp_path,
        SENSORPIPE__WAREHOUSE__KIND="postgres",
        SENSORPIPE__WAREHOUSE__PORT=str(postgres.port),
        SENSORPIPE__WAREHOUSE__DATABASE=warehouse_db,
    )
    grant_read_only(settings)
    reader = reader_from_settings(settings)
    assert reader.query("SELECT COUNT(*) AS n FROM incidents") == [{"n": 0}]
    dsn = f"host=127.0.0.1 port={postgres.port} dbname={warehouse_db} user={settings.view.user}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        writes = (
            "DELETE FROM incidents",
            "CREATE TABLE mine (x int)",
            "INSERT INTO sensorpipe_load_log (query_name, batch_id) VALUES ('x', 1)",
        )
        for sql in writes:
            with pytest.raises(psycopg.Error):
                conn.execute(sql)


def test_the_page_loads_nothing_from_elsewhere_and_binds_to_loopback(postgres, tmp_path):
    html = (PAGE / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references and all(r.startswith("/") and not r.startswith("//") for r in references)
    assert "http" not in (PAGE / "app.js").read_text().replace("http://www.w3.org/2000/svg", "")
    settings = local_settings(
        tmp_path, SENSORPIPE__WAREHOUSE__KIND="postgres",
        SENSORPIPE__WAREHOUSE__PORT=str(postgres.port),
    )  # fmt: skip
    server = serve(reader_from_settings(settings), settings.view, port=0)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        with urlopen(server.url) as response:
            policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
    finally:
        server.stop()


def test_board_marks_a_silent_train_and_counts_open_incidents_by_severity():
    t = datetime(2026, 12, 1, 12, 0)
    fleet = [{"device_id": "a", "reported_until": t},
             {"device_id": "b", "reported_until": t - timedelta(minutes=9)}]  # fmt: skip

    def row(alert: str, action: str, minute: int, severity: str = "major") -> dict:
        return {"alert_id": alert, "action": action, "event_time": t - timedelta(minutes=minute),
                "device_id": alert.split("/")[0], "sensor": "s", "severity": severity,
                "opened_at": t - timedelta(minutes=30), "score": 0.9, "value": 1.0,
                "expected_low": 0.0, "expected_high": 0.5,
                "direction": None if action == "close" else "above",
                "strength": None if action == "close" else 3.0}  # fmt: skip

    rows = [row("a/s#1", "open", 30), row("a/s#1", "escalate", 20, "critical"),
            row("b/s#2", "open", 30), row("b/s#2", "close", 15)]  # fmt: skip
    state = board(fleet, rows, timedelta(minutes=5))
    assert [(f["device_id"], f["status"]) for f in state["fleet"]] == [("a", "alerting"),
                                                                       ("b", "silent")]  # fmt: skip
    assert state["fleet"][0]["open"] == {"critical": 1, "major": 0, "minor": 0}
    assert [i["alert_id"] for i in state["open"]] == ["a/s#1"]
    assert state["open"][0]["severity"] == "critical"
    assert (state["open"][0]["direction"], state["open"][0]["strength"]) == ("above", 3.0)
    assert [i["alert_id"] for i in state["closed"]] == ["b/s#2"]


def test_view_config_reads_a_jobs_file_or_its_own_and_names_a_missing_field(tmp_path):
    from sensorpipe.config import ConfigError, ViewConfig, load_settings

    job = load_settings(ROOT / "conf/local.yaml", environ={}, kind=ViewConfig)
    assert (job.warehouse.kind, job.view.host) == ("postgres", "127.0.0.1")
    env = {"AWS_REGION": "eu-west-1", "SENSORPIPE_REDSHIFT_WORKGROUP": "sensorpipe",
           "SENSORPIPE_REDSHIFT_COPY_ROLE_ARN": "arn:aws:iam::123456789012:role/copy",
           "SENSORPIPE_BUCKET": "b"}  # fmt: skip
    aws = load_settings(ROOT / "conf/view-aws.yaml", environ=env, kind=ViewConfig)
    assert (aws.warehouse.kind, aws.warehouse.secret_arn, aws.view.poll_seconds) == (
        "redshift", None, 1.0)  # fmt: skip
    with pytest.raises(ConfigError, match="warehouse.workgroup_name"):
        unset = {**env, "SENSORPIPE_REDSHIFT_WORKGROUP": ""}
        load_settings(ROOT / "conf/view-aws.yaml", environ=unset, kind=ViewConfig)


def test_redshift_reader_requests_fit_the_data_api_model_as_the_callers_identity_mock():
    """A mock (no Redshift runs here): botocore's Stubber checks each request against the
    redshift-data model; the reader sends no secret and no database user, so the Data API signs
    in as the caller's IAM identity."""
    import boto3
    from botocore.stub import Stubber
    from sensorpipe_tools.view import MARKER_SQL, RedshiftReader

    client = boto3.client("redshift-data", region_name="eu-west-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    reader = RedshiftReader(client, "telemetry", workgroup_name="sensorpipe", poll_seconds=0)
    with Stubber(client) as stub:
        stub.add_response(
            "execute_statement", {"Id": "s-1"},
            {"Sql": MARKER_SQL, "Database": "telemetry", "WorkgroupName": "sensorpipe"},
        )  # fmt: skip
        stub.add_response("describe_statement", {"Id": "s-1", "Status": "STARTED"}, {"Id": "s-1"})
        stub.add_response("describe_statement", {"Id": "s-1", "Status": "FINISHED"}, {"Id": "s-1"})
        stub.add_response(
            "get_statement_result",
            {"ColumnMetadata": [{"name": "loads"}, {"name": "last_load"}],
             "Records": [[{"longValue": 3}, {"isNull": True}]], "TotalNumRows": 1},
            {"Id": "s-1"},
        )  # fmt: skip
        assert reader.query(MARKER_SQL) == [{"loads": 3, "last_load": None}]
        stub.assert_no_pending_responses()
