"""Claims docs/kinesis.md makes about the producer and KPL aggregates, each tested (issue 30's
audit found them untested)."""

from __future__ import annotations

import hashlib

import pytest
from sensorpipe.sources.kpl import MAGIC, UserRecord, aggregate, deaggregate
from sensorpipe_tools.producer import ProduceError, ProduceStats, put_batch


class PartlyFailingKinesisMock:
    """A mock Kinesis client (kinesalite never fails part of a PutRecords): the listed
    partition keys fail once each, as a throttled shard's entries do."""

    def __init__(self, fail_once: set[str]) -> None:
        self.fail_once, self.calls = set(fail_once), []

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        self.calls.append([r["PartitionKey"] for r in Records])
        results = []
        for r in Records:
            if r["PartitionKey"] in self.fail_once:
                self.fail_once.discard(r["PartitionKey"])
                results.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "slow down"})  # fmt: skip
            else:
                results.append({"SequenceNumber": "1", "ShardId": "shardId-0"})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def test_the_producer_resends_only_the_failed_entries_mock(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    client = PartlyFailingKinesisMock({"t-1", "t-3"})
    batch = [UserRecord(f"t-{i}", b"{}") for i in range(5)]
    stats = ProduceStats()
    put_batch(client, "s", batch, stats)
    assert client.calls == [["t-0", "t-1", "t-2", "t-3", "t-4"], ["t-1", "t-3"]]
    assert stats.retried_entries == 2


def test_the_producer_gives_up_clearly_on_entries_that_keep_failing_mock(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)

    class AlwaysFailing(PartlyFailingKinesisMock):
        def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803
            self.fail_once = {r["PartitionKey"] for r in Records}
            return super().put_records(StreamName, Records)

    with pytest.raises(ProduceError, match="1 records not accepted by s after 3 tries"):
        put_batch(AlwaysFailing(set()), "s", [UserRecord("t", b"{}")], ProduceStats(), 3)


def test_an_aggregate_failing_its_md5_is_kept_whole_as_one_record():
    """docs/kinesis.md: a record whose checksum fails passes through whole, as the KCL does
    (and lands in quarantine: it is not a JSON reading)."""
    records = [UserRecord("train-01", b'{"a": 1}'), UserRecord("train-02", b'{"b": 2}')]
    good = aggregate(records)
    assert [(r.partition_key, r.data) for r in deaggregate(good, "pk")] == [
        (r.partition_key, r.data) for r in records
    ]
    damaged = good[:-1] + bytes([good[-1] ^ 0xFF])  # the MD5's last byte flipped
    assert deaggregate(damaged, "pk") == [UserRecord("pk", damaged)]
    body = good[len(MAGIC) : -16]
    assert hashlib.md5(body).digest() != damaged[-16:]
