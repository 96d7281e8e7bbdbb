"""LOG_RECORD datagrams: never over the size that fragments, and a MAC over every field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import (
    LOG_DATAGRAM_BYTES,
    LogRecord,
    decode_datagram,
    encode_log_record,
    log_data_budget,
    log_key,
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
