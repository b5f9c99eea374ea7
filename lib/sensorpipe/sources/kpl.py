"""The Kinesis Producer Library's aggregated record format, both ways.

An aggregated Kinesis record is ``MAGIC + AggregatedRecord (protobuf) + MD5(protobuf)``:

    message AggregatedRecord { repeated string partition_key_table = 1;
                               repeated string explicit_hash_key_table = 2;
                               repeated Record records = 3; }
    message Record { required uint64 partition_key_index = 1;
                     optional uint64 explicit_hash_key_index = 2;
                     required bytes data = 3;  repeated Tag tags = 4; }

As in the KCL, a record whose magic or checksum does not match is passed through whole, as one
user record: nothing is dropped, and the decoder quarantines it if it is not an event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


@dataclass(frozen=True)
class UserRecord:
    partition_key: str
    data: bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")


def aggregate(records: Sequence[UserRecord]) -> bytes:
    """One aggregated Kinesis record holding `records`, in order."""
    keys: dict[str, int] = {}
    body = bytearray()
    for rec in records:
        index = keys.setdefault(rec.partition_key, len(keys))
        inner = _varint((1 << 3) | 0) + _varint(index) + _field(3, rec.data)
        body += _field(3, inner)
    table = b"".join(_field(1, key.encode()) for key in keys)
    message = table + bytes(body)
    return MAGIC + message + hashlib.md5(message).digest()


def is_aggregated(data: bytes) -> bool:
    if len(data) <= len(MAGIC) + _DIGEST or not data.startswith(MAGIC):
        return False
    message = data[len(MAGIC) : -_DIGEST]
    return hashlib.md5(message).digest() == data[-_DIGEST:]


def deaggregate(data: bytes, partition_key: str) -> list[UserRecord]:
    """The user records in a Kinesis record: several if it is a valid aggregate, else itself."""
    if not is_aggregated(data):
        return [UserRecord(partition_key, data)]
    message = data[len(MAGIC) : -_DIGEST]
    try:
        keys: list[str] = []
        raw_records: list[bytes] = []
        for number, value in _fields(message):
            if number == 1:
                keys.append(bytes(value).decode())
            elif number == 3:
                raw_records.append(bytes(value))
        out = []
        for raw in raw_records:
            fields = dict(_fields(raw))
            out.append(UserRecord(keys[int(fields[1])], bytes(fields[3])))
        return out
    except (ValueError, KeyError, IndexError, UnicodeDecodeError):
        return [UserRecord(partition_key, data)]  # checksum matched but body is not a KPL record
