"""The SendChatappMassMessage query, built exactly as the official SDK (cams20200606 5.3.1) builds it.

Pure functions, no I/O. A decoded Avro ``Recipient`` becomes one ``SenderList`` entry; a BatchKey
plus its recipients become the flat ``name -> value`` query the SDK's default call puts on the wire
and signs. What the SDK does and these functions copy:

- parameters set to None are left out; integers are sent as ``str(value)``;
- ``SenderList`` is one compact UTF-8 JSON string (``ensure_ascii=False``, ``(",", ":")``: what
  orjson writes, at a tenth of the json module's cost);
- entry keys come in the SDK's order (FlowAction, Payload, ProductAction, RecipientType,
  TemplateParams, To); maps (TemplateParams, FlowActionData) keep their own order;
- a ProductAction always carries ``Sections`` and each section ``ProductItems``, even when empty.

Entry fields that are empty or None are left out (the Avro defaults ``[]``/``{}``/null mean
"not set"). Entries share the recipient's TemplateParams/Payload/FlowActionData objects: they are
built to be serialised, not kept.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.models import BatchKey, Recipient

_KEY_PARAMS: tuple[tuple[str, str], ...] = (
    ("ChannelType", "channel_type"),
    ("CustSpaceId", "cust_space_id"),
    ("FallBackContent", "fallback_content"),
    ("FallBackDuration", "fallback_duration_s"),
    ("FallBackId", "fallback_id"),
    ("FallBackRule", "fallback_rule"),
    ("From", "from_number"),
    ("Label", "label"),
    ("Language", "language"),
    ("Tag", "tag"),
    ("TaskId", "task_id"),
    ("TemplateCode", "template_code"),
    ("TemplateName", "template_name"),
    ("Ttl", "ttl_s"),
)
"""API parameter name -> BatchKey field, for every request-level parameter we send."""


def _product_action(action: dict[str, Any] | None) -> dict[str, Any] | None:
    if not action:
        return None
    thumbnail = action.get("thumbnail_product_retailer_id")
    sections = action.get("sections") or []
    if not thumbnail and not sections:
        return None
    out: dict[str, Any] = {
        "Sections": [
            {
                "ProductItems": [{"ProductRetailerId": item["product_retailer_id"]} for item in section.get("product_items") or ()],
                "Title": section["title"],
            }
            for section in sections
        ]
    }
    if thumbnail:
        out["ThumbnailProductRetailerId"] = thumbnail
    return out


def _flow_action(action: dict[str, Any] | None) -> dict[str, Any] | None:
    if not action:
        return None
    out: dict[str, Any] = {}
    if data := action.get("flow_action_data"):
        out["FlowActionData"] = data
    if token := action.get("flow_token"):
        out["FlowToken"] = token
    return out or None


def sender_entry(recipient: Recipient) -> dict[str, Any]:
    """One SenderList entry for a decoded Avro ``Recipient``, keys in the SDK's order."""
    entry: dict[str, Any] = {}
    if flow := _flow_action(recipient.get("flow_action")):
        entry["FlowAction"] = flow
    if payload := recipient.get("payload"):
        entry["Payload"] = payload
    if product := _product_action(recipient.get("product_action")):
        entry["ProductAction"] = product
    if recipient_type := recipient.get("recipient_type"):
        entry["RecipientType"] = recipient_type
    if params := recipient.get("template_params"):
        entry["TemplateParams"] = params
    entry["To"] = recipient["to"]
    return entry


def _sender_list(recipients: list[Recipient]) -> str:
    entries: list[dict[str, Any]] = []
    append = entries.append
    for r in recipients:
        if r.get("payload") or r.get("product_action") or r.get("flow_action") or r.get("recipient_type"):
            append(sender_entry(r))
        elif params := r.get("template_params"):
            append({"TemplateParams": params, "To": r["to"]})
        else:
            append({"To": r["to"]})
    return orjson.dumps(entries).decode("utf-8")


def build_query(key: BatchKey, recipients: list[Recipient]) -> dict[str, str]:
    """Every query parameter the SDK sends for this call, in the SDK's (alphabetical) order."""
    query = {name: str(value) for name, field in _KEY_PARAMS if (value := getattr(key, field)) is not None}
    query["SenderList"] = _sender_list(recipients)
    return dict(sorted(query.items()))
