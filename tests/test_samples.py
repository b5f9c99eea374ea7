import filecmp
import gzip
import json
from pathlib import Path

from sensorpipe import decode
from sensorpipe.sensors import SENSORS
from sensorpipe_tools.samples import ANOMALY_KINDS, SampleSpec, generate

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def manifest():
    return json.loads((SAMPLES / "manifest.json").read_text())


def lines():
    for path in sorted((SAMPLES / "telemetry").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            yield from (json.loads(line) for line in f)


def test_bundled_samples_regenerate_byte_for_byte(tmp_path):
    spec = SampleSpec(**manifest()["spec"])
    generate(spec, tmp_path)
    committed = sorted(p.name for p in (SAMPLES / "telemetry").iterdir())
    regenerated = sorted(p.name for p in (tmp_path / "telemetry").iterdir())
    assert committed == regenerated
    match, mismatch, errors = filecmp.cmpfiles(
        SAMPLES / "telemetry", tmp_path / "telemetry", committed, shallow=False
    )
    assert (mismatch, errors) == ([], [])
    assert (tmp_path / "manifest.json").read_text() == (SAMPLES / "manifest.json").read_text()


def test_manifest_counts_match_the_files():
    m = manifest()
    records = list(lines())
    assert len(records) == m["counts"]["records"]
    assert len(records) == m["counts"]["valid"] + sum(m["counts"]["quarantined"].values())
    sequence = [r["sequenceNumber"] for r in records]
    assert len(set(sequence)) == len(sequence), "sequence numbers are unique"
    assert {x["sequenceNumber"] for x in m["malformed"]} <= set(sequence)
    arrivals = [r["approximateArrivalTimestamp"] for r in records]
    assert arrivals == sorted(arrivals), "records are in arrival order"


def test_every_reject_reason_and_anomaly_kind_is_present():
    m = manifest()
    assert set(m["counts"]["quarantined"]) == set(decode.REASONS)
    assert {a["kind"] for a in m["anomalies"]} == set(ANOMALY_KINDS)
    assert {a["sensor"] for a in m["anomalies"]} <= set(SENSORS)


def test_tunnels_delay_arrival():
    delays = []
    for r in lines():
        if "data" in r and r["data"].startswith('{"device_id"'):
            try:
                event_time = json.loads(r["data"])["event_time"]
            except (ValueError, KeyError):
                continue
            if not isinstance(event_time, str):
                continue
            delays.append(r["approximateArrivalTimestamp"] > event_time[:17] + "59.999Z")
    assert any(delays), "some readings arrive well after their event time (tunnel buffering)"
    assert manifest()["counts"]["tunnels"] > 0


def test_small_spec_is_deterministic(tmp_path):
    spec = SampleSpec(
        trains=2, hours=4, anomalies_per_train=0, malformed_per_kind=2, oversize_records=1
    )
    a = generate(spec, tmp_path / "a")
    b = generate(spec, tmp_path / "b")
    assert a == b
    assert a["counts"]["valid"] == 2 * len(SENSORS) * 4 * 60
