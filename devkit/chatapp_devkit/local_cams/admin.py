"""The ``/_admin/`` API of the local CAMS endpoint: a route table onto the backend's controls.

GET  /_admin/calls?since=N&limit=M  -> list of call records (``index`` is the n-th call received)
GET  /_admin/stats                  -> counts by code, accepted calls/recipients, duplicates, 1 s peaks
GET  /_admin/faults                 -> the current fault settings
POST /_admin/faults    {...}        -> partial update, answers the new settings
POST /_admin/reset                  -> forget calls, nonces, rate windows; restore starting faults
POST /_admin/accounts  {"access_key_id", "secret", "security_token"?} -> add or replace a key
GET  /_admin/receipts?since=N&limit=M -> receipt push: settings, counts, log of settled reports
POST /_admin/receipts  {...}        -> partial update of the receipt settings, answers them
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatapp_devkit.local_cams.backend import Backend

AdminRoute = Callable[[Backend, Mapping[str, str], Any], Any]


def _since_limit(query: Mapping[str, str]) -> tuple[int, int | None]:
    limit = query.get("limit")
    return int(query.get("since", 0)), None if limit is None else int(limit)


def _calls(backend: Backend, query: Mapping[str, str], _body: Any) -> Any:
    return backend.ledger.calls_json(*_since_limit(query))


def _set_faults(backend: Backend, _query: Mapping[str, str], body: Any) -> Any:
    if not isinstance(body, dict):
        raise TypeError("expected a JSON object of fault settings")
    return backend.set_faults(**body).to_json()


def _reset(backend: Backend, _query: Mapping[str, str], _body: Any) -> Any:
    backend.reset()
    return {"reset": True}


def _add_account(backend: Backend, _query: Mapping[str, str], body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("access_key_id"), str) or not isinstance(body.get("secret"), str):
        raise TypeError('expected {"access_key_id": str, "secret": str, "security_token"?: str}')
    backend.add_account(body["access_key_id"], body["secret"], body.get("security_token"))
    return {"access_key_id": body["access_key_id"]}


def _receipts(backend: Backend, query: Mapping[str, str], _body: Any) -> Any:
    return backend.receipts.snapshot(*_since_limit(query))


def _set_receipts(backend: Backend, _query: Mapping[str, str], body: Any) -> Any:
    if not isinstance(body, dict):
        raise TypeError("expected a JSON object of receipt settings")
    return backend.receipts.set(**body).to_json()


ROUTES: dict[tuple[str, str], AdminRoute] = {
    ("GET", "/_admin/calls"): _calls,
    ("GET", "/_admin/stats"): lambda backend, _query, _body: backend.ledger.stats(),
    ("GET", "/_admin/faults"): lambda backend, _query, _body: backend.faults.to_json(),
    ("POST", "/_admin/faults"): _set_faults,
    ("POST", "/_admin/reset"): _reset,
    ("POST", "/_admin/accounts"): _add_account,
    ("GET", "/_admin/receipts"): _receipts,
    ("POST", "/_admin/receipts"): _set_receipts,
}
