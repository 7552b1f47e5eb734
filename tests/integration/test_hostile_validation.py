"""Hostile and careless requests against real processes (issue 18, points 7 and 12): the service
in its own process, the mock broker over TCP, the local CAMS endpoint over HTTP."""

from __future__ import annotations

from chatapp_devkit.samples import request_record

from consumer.codec import PlainAvroCodec, _long
from tests.fixtures.service import RESULTS, produce, service_env

NUMBER = "8613933330003"


def _ttl_as_a_ten_byte_varint(codec: PlainAvroCodec) -> bytes:
    """A Viber request whose ttl_s is a 10-byte varint with a top byte of 2: a bit past the 64th,
    which the old hand-written reader read as 2**63 + 1 (and sent); fastavro drops it: ttl_s 1."""
    value = codec.encode_request(request_record("ttl-varint", "welcome", "en", ["8613900000009"], channel_type="viber", ttl_s=30))
    at = value.index(b"\x02" + _long(30) + b"\x00") + 1
    return value[:at] + b"\x82" + b"\x80" * 8 + b"\x02" + value[at + 1 :]


def test_one_number_goes_out_once_per_call_and_a_wild_ttl_is_rejected(service_cluster, local_cams, start_service, topic_reader):
    codec = PlainAvroCodec()
    values = [
        codec.encode_request(request_record("with-plus", "welcome", "en", ["+" + NUMBER])),
        codec.encode_request(request_record("filler", "welcome", "en", ["8613900000001"])),
        codec.encode_request(request_record("without-plus", "welcome", "en", [NUMBER])),
        _ttl_as_a_ten_byte_varint(codec),
    ]
    produce(service_cluster.bootstrap_servers, values, keys=[b"one-partition"] * len(values))  # one partition: one batch window
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url, batch_linger_ms=1000))
    reader = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert reader.read_until(lambda r: len(r.messages) >= len(values), timeout=60), service.log_tail()
    results = {r["request_id"]: r for r in reader.results()}
    assert {i: results[i]["status"] for i in ("with-plus", "filler", "without-plus")} == dict.fromkeys(("with-plus", "filler", "without-plus"), "SENT")
    rejected = results["ttl-varint"]
    assert rejected["status"] == "REJECTED" and "ttl_s must be between 30 and 1209600 (got 1)" in rejected["message"], rejected

    calls = [c for c in local_cams.calls() if c["code"] == "OK"]
    holding = [c for c in calls if any(to.lstrip("+") == NUMBER for to in c["to"])]
    assert len(holding) == 2, [c["to"] for c in calls]  # two calls, not one call with the number twice
    assert all(sum(to.lstrip("+") == NUMBER for to in c["to"]) == 1 for c in holding)
    assert sorted(c["recipients"] for c in calls) == [1, 2]  # the filler rode with the first: the batch was shared
    assert service.stop() == 0
