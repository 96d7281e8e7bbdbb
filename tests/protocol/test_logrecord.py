"""LOG_RECORD datagrams: never over the size that fragments, and a MAC over every field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import (
    LOG_DATAGRAM_BYTES,
    LOG_LOCAL_DATAGRAM_BYTES,
    LOG_MAX_DATAGRAM_BYTES,
    LogRecord,
    decode_datagram,
    encode_log_record,
    log_data_budget,
    log_key,
    log_mac,
    log_record_head,
    log_record_mac,
)


@pytest.mark.parametrize("job_id", ["J", "TSK-1a2b3c4d", "x" * 64])
@pytest.mark.parametrize("with_mac", [False, True])
def test_a_full_datagram_fits_the_size_that_never_fragments(job_id: str, with_mac: bool) -> None:
    budget = log_data_budget(job_id, with_mac=with_mac)
    record = LogRecord(job_id, 2**40, "stderr", 2**40, b"y" * budget, 2**50, b"m" * 32 if with_mac else None)
    datagram = encode_log_record(record)
    assert len(datagram) <= LOG_DATAGRAM_BYTES
    assert budget > 1000
    assert LogRecord.from_wire(decode_datagram(datagram).body) == record


@pytest.mark.parametrize("with_mac", [False, True])
def test_a_full_local_datagram_fits_the_loopback_path_and_any_receiver(with_mac: bool) -> None:
    budget = log_data_budget("TSK-1a2b3c4d", with_mac=with_mac, datagram_bytes=LOG_LOCAL_DATAGRAM_BYTES)
    record = LogRecord("TSK-1a2b3c4d", 2**40, "stdout", 2**40, b"y" * budget, 2**50, b"m" * 32 if with_mac else None)
    datagram = encode_log_record(record)
    assert len(datagram) <= LOG_LOCAL_DATAGRAM_BYTES < LOG_MAX_DATAGRAM_BYTES
    assert budget > 64_000
    assert LogRecord.from_wire(decode_datagram(datagram).body) == record


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65_535, 65_536, 70_000])
@pytest.mark.parametrize("mac", [None, b"m" * 32])
def test_a_head_and_the_data_beside_it_are_the_record(size: int, mac: bytes | None) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    head = log_record_head("J", 3, "stderr", 9, 1234, size, mac)
    record = LogRecord.from_wire(decode_datagram(head + data).body)
    assert record == LogRecord("J", 3, "stderr", 9, data, 1234, mac)
    assert encode_log_record(record) == head + data


def test_the_mac_of_the_fields_over_a_view_is_the_records_mac() -> None:
    key = log_key("token")
    record = LogRecord("J", 1, "stderr", 7, b"some output\n", 100)
    view = memoryview(b"xxsome output\nxx")[2:-2]
    assert log_mac(key, "J", 1, "stderr", 7, 100, view) == log_record_mac(key, record)
    assert log_mac(key, "J", 1, "stderr", 7, 100, view) == log_record_mac(key, record)  # the cached key is reused


def test_the_mac_covers_every_field_and_depends_on_the_token() -> None:
    key = log_key("token")
    record = LogRecord("J", 1, "stdout", 7, b"data", 100)
    mac = log_record_mac(key, record)
    changed = [
        replace(record, job_id="K"),
        replace(record, attempt=2),
        replace(record, stream="stderr"),
        replace(record, seq=8),
        replace(record, offset=101),
        replace(record, data=b"datA"),
    ]
    assert all(log_record_mac(key, other) != mac for other in changed)
    assert log_record_mac(log_key("other"), record) != mac
    # length-prefixed: moving bytes between the job id and the data changes the MAC
    assert log_record_mac(key, LogRecord("JJ", 1, "stdout", 7, b"ata", 100)) != mac
