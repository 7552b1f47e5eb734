"""Memory is set by the service's bounds, not by what producers send: the service in its own
process (mock broker over TCP, local CAMS endpoint over HTTP), its peak RSS read from /proc."""

from __future__ import annotations

from pathlib import Path

from chatapp_devkit.samples import phone, request_record

from consumer.codec import PlainAvroCodec
from tests.fixtures.service import RESULTS, produce, service_env

PARTITIONS = 24  # the mock keeps at most 5 MB per partition
PEAK_BOUND_MIB = 300  # docs/performance.md: the peak RSS target
CJK = "文字" * 512  # 1,024 characters, 3,072 UTF-8 bytes: the longest parameter value


def _memory_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(("VmHWM", "VmRSS")))
    return {name: int(value.split()[0]) / 1024 for name, value in fields.items()}


def test_rejected_and_huge_valid_requests_stay_within_the_memory_bound(service_cluster, local_cams, start_service, topic_reader):
    codec = PlainAvroCodec()
    # 300 rejected requests of 200 kB, each with its own batch key (fallback_content over its limit)
    rejected = [codec.encode_request(request_record(f"rej-{i}", "welcome", "en", [phone(i)], fallback_content=f"{i}" + "x" * 200_000)) for i in range(300)]
    # 60 valid requests of 100 parameters of 1,024 CJK characters each (~300 kB, 18 MB in all)
    params = {f"p{j}": CJK for j in range(100)}
    valid = []
    for i in range(60):
        record = request_record(f"cjk-{i}", "welcome", "en", [phone(10_000 + i)])
        record["recipients"][0]["template_params"] = params
        valid.append(codec.encode_request(record))
    produce(service_cluster.bootstrap_servers, rejected + valid)
    service = start_service(service_env(service_cluster.bootstrap_servers, local_cams.url))
    results = topic_reader(service_cluster.bootstrap_servers, RESULTS)
    assert results.read_until(lambda r: len(r.messages) >= 360, timeout=120), service.log_tail()
    memory = _memory_mib(service.process.pid)
    print(f"peak RSS {memory['VmHWM']:.0f} MiB, now {memory['VmRSS']:.0f} MiB")
    statuses = {r["request_id"]: r["status"] for r in results.results()}
    assert all(statuses[f"rej-{i}"] == "REJECTED" for i in range(300))
    assert all(statuses[f"cjk-{i}"] == "SENT" for i in range(60))
    calls = [c for c in local_cams.calls() if c["code"] == "OK"]
    assert max(c["recipients"] for c in calls) <= 3, "a call carries at most 1 MiB of requests: 3 of these"
    assert memory["VmHWM"] < PEAK_BOUND_MIB, memory
    assert service.stop() == 0
