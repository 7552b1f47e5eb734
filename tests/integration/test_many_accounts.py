"""Several accounts at once (issue 23): one instance of two worker processes sends for four
``[accounts.NAME]`` together, each with its own AccessKey at the local CAMS endpoint, which
counts each key's calls as they arrive. Judged from the endpoint's own call log: no account ever
has more than its 10 calls in a 1-second window, from its first call to its last and its
throttled calls included, and each keeps its budget full while its backlog lasts, with two sender
threads per account and process (``CHATAPP_SEND_CONCURRENCY=2``): enough for one account, not if
the accounts had to share them."""

from __future__ import annotations

from pathlib import Path

import pytest
from chatapp_devkit.local_cams import LocalCams
from chatapp_devkit.samples import phone, request_record

from consumer.codec import PlainAvroCodec
from tests.fixtures.calls import max_received_in_window
from tests.fixtures.service import RESULTS, TEST_KEY_ID, TEST_SECRET, produce, service_env, wait_for

PARTITIONS = 8
RATE = 10
ACCOUNTS = ("shop", "bank", "clinic", "school")
PER_CALL = 100  # recipients per request and per call: 40 calls/s in all, light on a busy machine
RUN_S = 12.0  # the window judged for fill: after each account's first second
CALLS = int(RATE * (RUN_S + 4))  # per account: its backlog outlasts the window


def key_id(account: str) -> str:
    return f"LTAI_{account.upper()}"


def backlog() -> list[bytes]:
    """``CALLS`` requests of ``PER_CALL`` recipients per account, the accounts interleaved."""
    codec = PlainAvroCodec()
    return [
        codec.encode_request(request_record(f"{account}-{i}", "otp_login", "en", [phone(i * PER_CALL + r) for r in range(PER_CALL)], account=account))
        for i in range(CALLS)
        for account in ACCOUNTS
    ]


@pytest.mark.slow
def test_every_account_keeps_its_own_budget_full_and_never_over(service_cluster, start_service, topic_reader, tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text("".join(f'[accounts.{a}]\naccess_key_id = "{key_id(a)}"\naccess_key_secret = "secret-{a}"\n' for a in ACCOUNTS))
    keys = {TEST_KEY_ID: TEST_SECRET, **{key_id(a): f"secret-{a}" for a in ACCOUNTS}}
    values = backlog()
    with LocalCams.start(accounts=keys, rate_limit=RATE) as cams:
        env = service_env(
            service_cluster.bootstrap_servers, cams.url, config=config, workers=2, batch_max_recipients=PER_CALL, rate_limit_per_second=RATE, send_concurrency=2
        )
        service_cluster.set_initial_rebalance_delay(2000)  # both workers join the group's first generation together
        service = start_service(env)
        service.wait_ready(timeout=60)  # ready: both workers hold partitions
        produce(service_cluster.bootstrap_servers, values)
        reader = topic_reader(service_cluster.bootstrap_servers, RESULTS)
        assert reader.read_until(lambda r: len(r.messages) >= len(values), timeout=CALLS / RATE * 3 + 30), "not every request answered"
        assert wait_for(lambda: len(cams.calls()) >= len(values), timeout=10)
        calls = cams.calls()
        assert service.stop() == 0
    assert {r["status"] for r in reader.results()} == {"SENT"}
    for account in ACCOUNTS:
        own = sorted((c for c in calls if c["access_key_id"] == key_id(account)), key=lambda c: c["received_at"])
        accepted = [c for c in own if c["code"] == "OK"]
        assert len(accepted) == CALLS, f"{account}: {len(accepted)} calls accepted of {CALLS}"
        # every call the endpoint received counts, throttled ones too: from the account's first call
        peak = max_received_in_window(own)
        assert peak <= RATE, f"{account}: {peak} calls arrived within 1 s"
        start = own[0]["received_at"] + 1.0  # its first second: both workers fetch and fill their first batches
        in_run = [c for c in accepted if start <= c["received_at"] < start + RUN_S]
        fill = len(in_run) / (RATE * RUN_S)
        assert fill >= 0.95, f"{account}: {len(in_run)} calls in {RUN_S:.0f} s, {fill:.1%} of its budget"
    first_calls = [min(c["received_at"] for c in calls if c["access_key_id"] == key_id(a)) for a in ACCOUNTS]
    assert max(first_calls) - min(first_calls) < 2.0, "the accounts started together: none waited for another"
