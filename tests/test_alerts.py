"""Alerts to the trains: incidents, not points; shadow updates against moto's iot-data server
(a mock: no AWS IoT server runs here) and the local file outbox."""

import json
from datetime import datetime, timedelta

import boto3
import pandas as pd
import pytest
from sensorpipe.anomaly.incidents import (
    CLOSE,
    ESCALATE,
    OPEN,
    IncidentState,
    advance,
    alert_id,
)
from sensorpipe.sinks.alerts import (
    ALERTS_KEY,
    FileOutbox,
    IotShadowStore,
    alert_patches,
    deliver,
)

from tests.fault_proxy import FaultProxy, first_shadow_updates_throttled

QUIET = timedelta(minutes=30)
T0 = datetime(2026, 11, 1, 8, 0)
SPIKE = "axle_bearing_temp#20261101T081000Z"  # the key of an incident opened at 08:10 UTC


def transitions(points):
    """Run (minute, is_anomaly, score) points of train-01/axle_bearing_temp through the
    incident logic; return the transition rows as the lake holds them."""
    state = IncidentState()
    rows = []
    for minute, flagged, score in points:
        moment = T0 + timedelta(minutes=minute)
        action, severity = advance(
            state, "train-01", "axle_bearing_temp", moment, flagged, score, QUIET
        )
        if action:
            rows.append(
                {
                    "device_id": "train-01",
                    "sensor": "axle_bearing_temp",
                    "event_time": moment,
                    "anomaly_score": score,
                    "alert_id": alert_id("train-01", "axle_bearing_temp", state.number),
                    "alert_action": action,
                    "alert_severity": {1: "minor", 2: "major", 3: "critical"}[severity],
                }
            )
    return pd.DataFrame(rows)


def normal(minutes):
    return [(m, False, 0.05) for m in minutes]


def test_a_spike_opens_one_incident_and_closes_it_after_the_quiet_period():
    rows = transitions(normal(range(10)) + [(10, True, 1.0)] + normal(range(11, 60)))
    assert list(rows["alert_action"]) == [OPEN, CLOSE]
    assert rows["event_time"].iloc[1] == T0 + timedelta(minutes=40)  # 30 quiet minutes later
    assert rows["alert_id"].nunique() == 1


def test_a_long_anomaly_is_one_incident_escalated_once_not_one_alert_per_point():
    long_run = [(m, True, 0.6) for m in range(10, 40)] + [(m, True, 0.95) for m in range(40, 70)]
    rows = transitions(normal(range(10)) + long_run + normal(range(70, 120)))
    assert list(rows["alert_action"]) == [OPEN, ESCALATE, CLOSE]
    patch = alert_patches(rows)
    assert list(patch) == ["train-01"] and list(patch["train-01"]) == [SPIKE]
    assert patch["train-01"][SPIKE]["status"] == "closed"
    assert patch["train-01"][SPIKE]["severity"] == "major"


def test_a_second_incident_gets_a_new_alert_id():
    rows = transitions([(0, True, 1.0)] + normal(range(1, 40)) + [(40, True, 1.0)])
    assert list(rows["alert_id"]) == ["train-01/axle_bearing_temp#20261101T080000Z"] * 2 + [
        "train-01/axle_bearing_temp#20261101T084000Z"
    ]


def test_an_incident_after_a_state_reset_does_not_reuse_a_closed_alert_id():
    """State TTL or a new checkpoint start the incident state afresh: the next incident must
    not take `#1` again, which the shadow holds closed (its updates would be dropped)."""
    first = transitions(normal(range(10)) + [(10, True, 1.0)] + normal(range(11, 60)))
    later = transitions(normal(range(600, 610)) + [(610, True, 1.0)] + normal(range(611, 660)))
    assert set(first["alert_id"]).isdisjoint(later["alert_id"])
    # A replay of the same points gives the same ids.
    again = transitions(normal(range(10)) + [(10, True, 1.0)] + normal(range(11, 60)))
    assert list(again["alert_id"]) == list(first["alert_id"])


@pytest.fixture
def iot(moto_server):
    kwargs = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    boto3.client("iot", **kwargs).create_thing(thingName="train-01")
    yield boto3.client("iot-data", **kwargs)
    boto3.client("iot", **kwargs).delete_thing(thingName="train-01")


def shadow(client):
    return json.loads(client.get_thing_shadow(thingName="train-01")["payload"].read())


def spike_updates(store):
    """Deliver a spike's two batches (open, then close) as the job would; return sent flags."""
    rows = transitions(normal(range(10)) + [(10, True, 1.0)] + normal(range(11, 60)))
    opened = alert_patches(rows.iloc[:1])["train-01"]
    closed = alert_patches(rows.iloc[1:])["train-01"]
    return [deliver(store, "train-01", opened), deliver(store, "train-01", closed)]


def test_spike_is_one_alert_and_one_close_on_the_shadow_mock(iot):
    store = IotShadowStore(iot)
    assert spike_updates(store) == [True, True]
    doc = shadow(iot)
    entry = doc["state"]["desired"][ALERTS_KEY][SPIKE]
    assert entry["status"] == "closed" and entry["alert_id"] == f"train-01/{SPIKE}"
    assert entry["event_time"] == "2026-11-01T08:10:00.000Z" and entry["severity"] == "critical"
    assert doc["version"] == 2 and len(store.sent) == 2


def test_replayed_batch_sends_no_new_document_mock(iot):
    store = IotShadowStore(iot)
    spike_updates(store)
    version = shadow(iot)["version"]
    assert spike_updates(store) == [False, False]  # the same batches again
    assert shadow(iot)["version"] == version and len(store.sent) == 2


def test_version_conflict_is_merged_without_overwriting_another_writer_mock(iot):
    class OtherWriterInBetween(IotShadowStore):
        interfered = False

        def read(self, thing):
            current = super().read(thing)
            if not self.interfered:  # someone else updates between our read and our write
                self.interfered = True
                self.client.update_thing_shadow(
                    thingName=thing,
                    payload=json.dumps(
                        {
                            "state": {
                                "desired": {
                                    "door_mode": "auto",
                                    ALERTS_KEY: {"vibration_rms#4": {"status": "open"}},
                                }
                            }
                        }
                    ).encode(),
                )
            return current

        def write(self, thing, changes, version):
            self.writes.append(version)
            return super().write(thing, changes, version)

    # The shadow exists (version 1), so our first write names version 1 and conflicts with
    # the other writer's version 2; the retry reads version 2 and merges into it.
    iot.update_thing_shadow(
        thingName="train-01",
        payload=json.dumps({"state": {"desired": {"door_mode": "manual"}}}).encode(),
    )
    store = OtherWriterInBetween(iot)
    store.writes = []
    rows = transitions([(10, True, 1.0)])
    assert deliver(store, "train-01", alert_patches(rows)["train-01"]) is True
    assert store.writes == [1, 2]  # a real conflict, then the merged write
    desired = shadow(iot)["state"]["desired"]
    assert desired["door_mode"] == "auto"  # the other writer's field survives
    assert desired[ALERTS_KEY]["vibration_rms#4"] == {"status": "open"}
    assert desired[ALERTS_KEY][SPIKE]["status"] == "open"
    assert shadow(iot)["version"] == 3


def test_throttling_is_retried_mock(iot, moto_server):
    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]), first_shadow_updates_throttled(2))
    try:
        client = boto3.client(
            "iot-data",
            endpoint_url=proxy.endpoint_url,
            region_name="us-east-1",
            config=__import__("botocore.config", fromlist=["Config"]).Config(
                retries={"total_max_attempts": 1}
            ),
        )
        store = IotShadowStore(client, retry_initial_s=0.01)
        rows = transitions([(10, True, 1.0)])
        assert deliver(store, "train-01", alert_patches(rows)["train-01"]) is True
    finally:
        proxy.close()
    assert proxy.faults == {"ThrottlingException": 2}
    assert shadow(iot)["state"]["desired"][ALERTS_KEY][SPIKE]["status"] == "open"


def test_file_outbox_has_the_shadow_semantics(tmp_path):
    outbox = FileOutbox(tmp_path)
    assert spike_updates(outbox) == [True, True]
    assert spike_updates(outbox) == [False, False]
    doc = json.loads((tmp_path / "train-01.json").read_text())
    assert doc["version"] == 2
    assert doc["state"]["desired"][ALERTS_KEY][SPIKE]["status"] == "closed"
    assert len((tmp_path / "updates.jsonl").read_text().splitlines()) == 2


def test_outbox_keeps_a_hostile_device_id_inside_the_outbox(tmp_path):
    outbox = FileOutbox(tmp_path / "outbox")
    for thing in ("../escaped", "../../etc/passwd", "a/b", "nul\x00byte"):
        outbox.write(thing, {"s#1": {"status": "open"}}, None)
        assert outbox.read(thing)[1] == 1  # written once, and read back under the same name
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p.parts[0] == "outbox" and len(p.parts) == 2 for p in written), written


def test_an_older_open_does_not_overwrite_a_newer_escalation(tmp_path):
    """The fast path sends the escalation first; the alerts query then replays the batch that
    opened the incident: the shadow keeps the newer severity and time."""
    rows = transitions([(10, True, 0.6), (11, True, 0.99), (12, True, 0.99), (13, True, 0.99)])
    opened = rows[rows["alert_action"] == OPEN]
    escalated = rows[rows["alert_action"] == ESCALATE]
    assert len(opened) == 1 and len(escalated) >= 1
    outbox = FileOutbox(tmp_path / "outbox")
    assert deliver(outbox, "train-01", alert_patches(escalated)["train-01"]) is True
    newest = dict(outbox.read("train-01")[0])
    assert deliver(outbox, "train-01", alert_patches(opened)["train-01"]) is False
    assert outbox.read("train-01")[0] == newest


def spike_then_close(start: int) -> pd.DataFrame:
    return transitions(normal(range(start, start + 10)) + [(start + 10, True, 1.0)]
                       + normal(range(start + 11, start + 60)))  # fmt: skip


def test_closed_alerts_leave_the_shadow_after_the_retention_and_do_not_come_back(tmp_path):
    """The shadow must not only grow (past the document limit every update fails): an alert
    closed more than closed_retention_hours before the newest one is removed, and a replay of
    its transitions does not bring it back. Open alerts stay, however old."""
    outbox = FileOutbox(tmp_path / "outbox", closed_retention_hours=24)
    old, new = spike_then_close(0), spike_then_close(36 * 60)  # a day and a half later
    assert deliver(outbox, "train-01", alert_patches(old)["train-01"])
    long_open = transitions([(60, True, 0.9)])  # opens 09:00 and never closes
    assert deliver(outbox, "train-01", alert_patches(long_open)["train-01"])
    assert deliver(outbox, "train-01", alert_patches(new)["train-01"])
    shadow_now = outbox.read("train-01")[0]
    assert set(shadow_now) == {
        "axle_bearing_temp#20261102T201000Z",  # the new one, closed
        "axle_bearing_temp#20261101T090000Z",  # open since the first day: kept
    }
    # The old incident's batches replayed (a restart from an older checkpoint): nothing sent.
    assert not deliver(outbox, "train-01", alert_patches(old)["train-01"])
    assert not deliver(outbox, "train-01", alert_patches(old.iloc[:1])["train-01"])
    assert outbox.read("train-01")[0] == shadow_now


def test_one_trains_permanent_refusal_is_dead_lettered_and_the_others_are_served_mock(
    iot, moto_server, tmp_path
):
    """The shadow of train-02 refuses its update for good (too large): the batch goes on,
    train-01 gets its update, train-02's update is a dead letter with the reason, counted.
    (One train's refusal failed the whole batch, again on every re-run.)"""
    from sensorpipe.jsonstore import JsonStore
    from sensorpipe.sinks.alerts import AlertStats
    from sensorpipe.sinks.alerts.delivery import deliver_batch

    def refuse_train_02(method: str, path: str, target: str):
        if method == "POST" and "/things/train-02/shadow" in path:
            return 413, "RequestEntityTooLargeException"
        return None

    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]), refuse_train_02)
    try:
        client = boto3.client("iot-data", endpoint_url=proxy.endpoint_url,
                              region_name="us-east-1")  # fmt: skip
        store = IotShadowStore(client, retry_initial_s=0.01)
        rows = transitions([(10, True, 1.0)])
        patch = alert_patches(rows)["train-01"]
        patches = {"train-01": patch, "train-02": patch}
        stats, seen = AlertStats(), []
        dead = JsonStore(str(tmp_path / "anomalies/_dead_letters"))
        deliver_batch(store, patches, dead, "load_batch=7", 7, stats, lambda: seen.append(1))
    finally:
        proxy.close()
    assert stats.updates_sent == 1 and stats.dead_letters == 1 and seen == [1]
    assert shadow(iot)["state"]["desired"][ALERTS_KEY][SPIKE]["status"] == "open"
    letter = json.loads(
        (tmp_path / "anomalies/_dead_letters/load_batch=7/train-02.json").read_text()
    )
    assert letter["thing"] == "train-02" and "RequestEntityTooLargeException" in letter["error"]
    assert letter["update"] == json.loads(json.dumps(patch))
    assert proxy.faults == {"RequestEntityTooLargeException": 1}  # not retried
