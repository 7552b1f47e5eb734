"""What the local CAMS endpoint does with a call, HTTP aside: verify, validate, rate-limit, inject, record."""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatapp_devkit.local_cams.auth import (
    Account,
    NonceCache,
    SignedRequest,
    authenticate,
    claimed_access_key_id,
)
from chatapp_devkit.local_cams.errors import ApiError
from chatapp_devkit.local_cams.faults import FAULT_KINDS, FaultDecider, Faults
from chatapp_devkit.local_cams.ledger import WINDOW_S, CallRecord, Ledger
from chatapp_devkit.local_cams.params import SendCall, parse_send_call
from chatapp_devkit.local_cams.receipt_pusher import ReceiptPusher
from chatapp_devkit.local_cams.receipt_settings import ReceiptSettings

DROPPED = "Dropped"  # the code recorded for a call whose connection was closed without an answer


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to send after ``delay_s``; ``status`` None means close the connection instead."""

    status: int | None
    body: dict[str, str] | None
    delay_s: float


def fits_window(arrivals: list[float], arrival: float, limit: int) -> bool:
    """Whether a call arriving at ``arrival`` keeps every ``WINDOW_S`` window of ``arrivals``
    (ascending) within ``limit`` calls: no ``limit + 1`` of them less than ``WINDOW_S`` apart.

    Calls count when they arrive (their request line has reached the host, by the kernel's
    receive time), not when this endpoint has parsed and verified them: its own delay, longer on
    a busy machine, is no concern of the caller's. Calls arriving together on different
    connections can be decided out of their order of arrival, so the window is checked on both
    sides of ``arrival``."""
    near = arrivals[bisect.bisect_right(arrivals, arrival - WINDOW_S) : bisect.bisect_left(arrivals, arrival + WINDOW_S)]
    bisect.insort(near, arrival)
    return all(near[k + limit] - near[k] >= WINDOW_S for k in range(len(near) - limit))


def _as_account(value: Account | str) -> Account:
    return value if isinstance(value, Account) else Account(value)


class Backend:
    """Thread-safe state of one endpoint: accounts, nonces, rate windows, fault settings, ledger,
    and the receipt pusher that accepted calls are handed to (its thread is the server's to run)."""

    def __init__(self, accounts: Mapping[str, Account | str], faults: Faults, receipts: ReceiptSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._accounts = {key: _as_account(value) for key, value in accounts.items()}
        self._initial_faults = faults
        self._decider = FaultDecider(faults)
        self._nonces = NonceCache()
        self._arrivals: defaultdict[str, list[float]] = defaultdict(list)  # per key: accepted calls' arrival times, ascending
        self.ledger = Ledger()
        self.receipts = ReceiptPusher(receipts or ReceiptSettings())

    @property
    def faults(self) -> Faults:
        return self._decider.faults

    def add_account(self, access_key_id: str, secret: str, security_token: str | None = None) -> None:
        """Add or replace an AccessKey (copy-on-write: verification reads the dict without the lock)."""
        with self._lock:
            self._accounts = {**self._accounts, access_key_id: Account(secret, security_token)}

    def set_faults(self, **changes: Any) -> Faults:
        """Apply a partial update (ValueError when invalid); the fault RNG restarts from the seed."""
        with self._lock:
            self._decider = FaultDecider(self._decider.faults.updated(changes))
            return self._decider.faults

    def reset(self) -> None:
        """Forget calls, nonces, rate windows and pending receipts, and restore the starting fault
        and receipt settings (accounts stay)."""
        with self._lock:
            self._decider = FaultDecider(self._initial_faults)
            self._nonces = NonceCache()
            self._arrivals.clear()
            self.ledger.reset()
            self.receipts.reset()

    def handle(self, request: SignedRequest, received_at: float) -> Outcome:
        """Decide and record one call: gateway checks, nonce, parameters, rate window, injected
        faults, configured template/number failures, then acceptance."""
        call = parse_send_call(request.query)
        try:
            credentials = authenticate(request, self._accounts, received_at)
        except ApiError as error:
            return self._answer(call, claimed_access_key_id(request.headers), received_at, error)
        with self._lock:
            now = time.time()
            if not self._nonces.claim(credentials, now):
                return self._answer(call, credentials.access_key_id, received_at, ApiError(400, "SignatureNonceUsed"))
            if call.error is not None:
                return self._answer(call, credentials.access_key_id, received_at, call.error)
            arrivals = self._recent_arrivals(credentials.access_key_id, now)
            limit = self._decider.rate_limit(credentials.access_key_id)
            if limit and not fits_window(arrivals, received_at, limit):
                return self._answer(call, credentials.access_key_id, received_at, ApiError(400, "System.LimitControl"))
            delay_s = self._decider.latency_s()
            fault = self._decider.injected()
            if fault is not None:
                kind = FAULT_KINDS[fault]
                delay_s += self._decider.faults.timeout_sleep_s if kind.sleeps else 0.0
                injected = None if kind.answer is None else ApiError(*kind.answer)
                return self._answer(call, credentials.access_key_id, received_at, injected, fault, delay_s)
            content = self._decider.content_error(call.template, call.to)
            if content is not None:
                fault, refused = content
                return self._answer(call, credentials.access_key_id, received_at, refused, fault, delay_s)
            bisect.insort(arrivals, received_at)
            return self._accept(call, credentials.access_key_id, received_at, now, delay_s)

    def _recent_arrivals(self, access_key_id: str, now: float) -> list[float]:
        """This key's accepted arrivals that a call handled at ``now`` can share a window with."""
        arrivals = self._arrivals[access_key_id]
        del arrivals[: bisect.bisect_left(arrivals, now - 2 * WINDOW_S)]
        return arrivals

    def _record(self, call: SendCall, access_key_id: str, received_at: float, **outcome: Any) -> None:
        self.ledger.append(
            CallRecord(
                received_at=received_at,
                access_key_id=access_key_id,
                params=call.params,
                to_lines="\n".join(call.to),
                recipients=len(call.to),
                **outcome,
            )
        )

    def _accept(self, call: SendCall, access_key_id: str, received_at: float, now: float, delay_s: float) -> Outcome:
        request_id, group_message_id = str(uuid.uuid4()).upper(), uuid.uuid4().hex
        self._record(
            call, access_key_id, received_at, accepted_at=now, code="OK", http_status=200,
            request_id=request_id, group_message_id=group_message_id, fault=None,
        )  # fmt: skip
        self.receipts.submit(call.params, call.to, now)
        body = {
            "RequestId": request_id,
            "Code": "OK",
            "Message": "OK",
            "GroupMessageId": group_message_id,
            "AccessDeniedDetail": "None",
        }
        return Outcome(200, body, delay_s)

    def _answer(
        self,
        call: SendCall,
        access_key_id: str,
        received_at: float,
        error: ApiError | None,
        fault: str | None = None,
        delay_s: float = 0.0,
    ) -> Outcome:
        """Record and answer a call that is not accepted; ``error`` None drops the connection."""
        request_id = str(uuid.uuid4()).upper()
        self._record(
            call, access_key_id, received_at, accepted_at=None,
            code=DROPPED if error is None else error.code, http_status=None if error is None else error.status,
            request_id=request_id, group_message_id=None, fault=fault,
        )  # fmt: skip
        if error is None:
            return Outcome(None, None, delay_s)
        body = {"RequestId": request_id, "Code": error.code, "Message": error.message}
        return Outcome(error.status, body, delay_s)
