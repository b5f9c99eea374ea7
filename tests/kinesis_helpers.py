"""Helpers for the Kinesis integration tests: streams, synthetic records, a fault proxy, the
lake's exactness check."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sensorpipe.config import load_settings
from sensorpipe.producer import produce
from sensorpipe.sources.kpl import UserRecord

ROOT = Path(__file__).resolve().parent.parent
_names = itertools.count()


def new_stream(client, shards: int) -> str:
    name = f"test-{int(time.time() * 1000)}-{next(_names)}"
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_active(client, name)
    return name


def wait_active(client, stream: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = client.describe_stream_summary(StreamName=stream)
        if status["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise TimeoutError(f"stream {stream} not ACTIVE")


def events(first: int, count: int) -> list[UserRecord]:
    """Valid events, each with a unique (device_id, event_time)."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    out = []
    for i in range(first, first + count):
        device = f"train-{i % 4:02d}"
        moment = (base + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        body = {
            "device_id": device,
            "sensor": "wheel_speed",
            "event_time": moment,
            "value": float(i % 300),
            "unit": "km/h",
        }
        out.append(UserRecord(device, json.dumps(body).encode()))
    return out


def put(client, stream: str, records: list[UserRecord], aggregate: int = 0) -> None:
    produce(client, stream, records, aggregate_records=aggregate)


def settings_for(tmp: Path, endpoint: str, stream: str, **extra: str):
    environ = {
        "SENSORPIPE__SOURCE__KIND": "kinesis",
        "SENSORPIPE__SOURCE__ENDPOINT_URL": endpoint,
        "SENSORPIPE__SOURCE__STREAM_NAME": stream,
        "SENSORPIPE__SOURCE__STARTING_POSITION": "TRIM_HORIZON",
        "SENSORPIPE__LAKE__EVENTS_PATH": str(tmp / "lake/events"),
        "SENSORPIPE__LAKE__QUARANTINE_PATH": str(tmp / "lake/quarantine"),
        "SENSORPIPE__LAKE__CHECKPOINT_ROOT": str(tmp / "checkpoints"),
        "SENSORPIPE__WAREHOUSE__KIND": "none",
        "SENSORPIPE__ALERTS__KIND": "none",
        **extra,
    }
    return load_settings(ROOT / "conf/local.yaml", environ=environ)


def assert_lake_exact(spark, settings, produced: list[UserRecord]) -> None:
    """The lake holds exactly the produced records: same count, no duplicate
    (stream, sequence number, sub-sequence), none missing."""
    events_df = spark.read.parquet(settings.lake.events_path)
    rows = events_df.select(
        "stream_name", "sequence_number", "sub_sequence_number", "device_id", "event_time"
    ).collect()
    keys = [(r.stream_name, r.sequence_number, r.sub_sequence_number) for r in rows]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} duplicate records"
    expected = set()
    for rec in produced:
        body = json.loads(rec.data)
        expected.add((body["device_id"], body["event_time"]))
    got = {(r.device_id, r.event_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z") for r in rows}
    assert len(got) == len(rows), "two lake rows for one produced record"
    assert got == expected, f"missing {len(expected - got)}, unexpected {len(got - expected)}"


class FaultProxy:
    """An HTTP proxy in front of kinesalite that answers some GetRecords calls with a fault,
    as Kinesis would: throttling, or an expired shard iterator."""

    def __init__(
        self,
        upstream_port: int,
        throttle_every: int = 0,
        expire_every: int = 0,
        throttle_always: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        self.throttle_every = throttle_every
        self.expire_every = expire_every
        self.throttle_always = throttle_always
        self.get_records_calls = 0
        self.faults: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = proxy._fault_for(self.headers.get("X-Amz-Target", ""))
                if fault:
                    payload = json.dumps({"__type": fault, "message": "injected"}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _fault_for(self, target: str) -> str | None:
        if not target.endswith(".GetRecords"):
            return None
        with self._lock:
            self.get_records_calls += 1
            n = self.get_records_calls
            fault = None
            if self.throttle_always or (self.throttle_every and n % self.throttle_every == 0):
                fault = "ProvisionedThroughputExceededException"
            elif self.expire_every and n % self.expire_every == 0:
                fault = "ExpiredIteratorException"
            if fault:
                self.faults[fault] = self.faults.get(fault, 0) + 1
            return fault

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
