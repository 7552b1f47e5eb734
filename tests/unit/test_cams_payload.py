"""consumer.cams.payload: Avro recipients to SenderList entries, BatchKey to the SDK's query."""

from __future__ import annotations

import json

from consumer.cams.payload import build_query, sender_entry
from tests.fixtures.builders import RICH, avro_recipient, make_key


def test_minimal_recipient_has_only_to() -> None:
    assert sender_entry({"to": "861"}) == {"To": "861"}
    assert sender_entry(avro_recipient("861")) == {"To": "861"}


def test_rich_recipient_maps_every_field_in_sdk_key_order() -> None:
    entry = sender_entry(RICH)
    assert entry == {
        "FlowAction": {"FlowActionData": {"screen": "WELCOME"}, "FlowToken": "tok-1"},
        "Payload": ["p1", "p2"],
        "ProductAction": {
            "Sections": [
                {"ProductItems": [{"ProductRetailerId": "s1"}, {"ProductRetailerId": "s2"}], "Title": "Shoes"},
                {"ProductItems": [], "Title": "Hats"},
            ],
            "ThumbnailProductRetailerId": "thumb-1",
        },
        "RecipientType": "individual",
        "TemplateParams": {"name": "Ann", "code": "42"},
        "To": "8613888888888",
    }
    assert list(entry) == ["FlowAction", "Payload", "ProductAction", "RecipientType", "TemplateParams", "To"]
    assert list(entry["FlowAction"]) == ["FlowActionData", "FlowToken"]
    assert list(entry["ProductAction"]) == ["Sections", "ThumbnailProductRetailerId"]
    assert list(entry["TemplateParams"]) == ["name", "code"]


def test_empty_actions_are_left_out() -> None:
    entry = sender_entry(
        avro_recipient(
            "861",
            product_action={"thumbnail_product_retailer_id": None, "sections": []},
            flow_action={"flow_token": None, "flow_action_data": {}},
            recipient_type="",
        )
    )
    assert entry == {"To": "861"}


def test_partial_actions_keep_only_what_is_set() -> None:
    entry = sender_entry(
        avro_recipient(
            "861",
            product_action={"thumbnail_product_retailer_id": None, "sections": [{"title": "T", "product_items": []}]},
            flow_action={"flow_token": "ft", "flow_action_data": {}},
        )
    )
    assert entry == {
        "FlowAction": {"FlowToken": "ft"},
        "ProductAction": {"Sections": [{"ProductItems": [], "Title": "T"}]},
        "To": "861",
    }
    thumb_only = sender_entry(avro_recipient("861", product_action={"thumbnail_product_retailer_id": "th", "sections": []}))
    assert thumb_only == {"ProductAction": {"Sections": [], "ThumbnailProductRetailerId": "th"}, "To": "861"}


def test_query_leaves_out_none_and_orders_like_the_sdk() -> None:
    query = build_query(make_key(), [avro_recipient("861", template_params={"a": "1"})])
    assert query == {
        "ChannelType": "whatsapp",
        "From": "8613877770000",
        "Language": "en",
        "SenderList": '[{"TemplateParams":{"a":"1"},"To":"861"}]',
        "TemplateCode": "744c4b5c79c9432497a075bdfca36bf5",
    }
    assert list(query) == sorted(query)


def test_query_carries_every_request_level_field() -> None:
    key = make_key(
        channel_type="viber",
        template_code=None,
        template_name="order_update",
        fallback_id="S00001",
        fallback_content="Fallback text",
        fallback_rule="sentFailed",
        fallback_duration_s=120,
        task_id="100000001",
        cust_space_id="cs-1",
        label="pormotion",
        tag="tag-1",
        ttl_s=60,
    )
    query = build_query(key, [avro_recipient("861")])
    assert query == {
        "ChannelType": "viber",
        "CustSpaceId": "cs-1",
        "FallBackContent": "Fallback text",
        "FallBackDuration": "120",
        "FallBackId": "S00001",
        "FallBackRule": "sentFailed",
        "From": "8613877770000",
        "Label": "pormotion",
        "Language": "en",
        "SenderList": '[{"To":"861"}]',
        "Tag": "tag-1",
        "TaskId": "100000001",
        "TemplateName": "order_update",
        "Ttl": "60",
    }
    assert list(query) == sorted(query)


def test_sender_list_is_compact_utf8_json() -> None:
    recipients = [avro_recipient("861", template_params={"名字": "王 小明 *~", "emoji": "🎉", "q": 'a"b\\c'})]
    sender_list = build_query(make_key(), recipients)["SenderList"]
    assert sender_list == '[{"TemplateParams":{"名字":"王 小明 *~","emoji":"🎉","q":"a\\"b\\\\c"},"To":"861"}]'
    assert json.loads(sender_list) == [{"TemplateParams": recipients[0]["template_params"], "To": "861"}]


def test_fast_path_matches_sender_entry_for_mixed_recipients() -> None:
    recipients = []
    for i in range(1000):
        if i % 7 == 0:
            recipients.append(dict(RICH, to=f"86{i:011d}"))
        elif i % 3 == 0:
            recipients.append(avro_recipient(f"86{i:011d}"))
        elif i % 5 == 0:
            recipients.append({"to": f"86{i:011d}", "template_params": {"n": str(i)}})
        else:
            recipients.append(avro_recipient(f"86{i:011d}", template_params={"n": str(i), "x": "y z"}))
    expected = json.dumps([sender_entry(r) for r in recipients], ensure_ascii=False, separators=(",", ":"))
    assert build_query(make_key(), recipients)["SenderList"] == expected


def test_empty_recipient_list_is_an_empty_json_array() -> None:
    assert build_query(make_key(), [])["SenderList"] == "[]"


def test_build_query_does_not_touch_its_input() -> None:
    recipients = [dict(RICH)]
    snapshot = json.dumps(recipients, sort_keys=True)
    build_query(make_key(), recipients)
    assert json.dumps(recipients, sort_keys=True) == snapshot


def test_sender_list_is_what_the_json_module_writes_for_any_text() -> None:
    """orjson writes the SenderList: byte for byte what the SDK's ``json.dumps(ensure_ascii=False,
    separators=(",", ":"))`` would, for every control character, quotes, backslashes, DEL,
    line separators and 2-, 3- and 4-byte UTF-8 characters."""
    import random

    rng = random.Random(11)
    alphabet = [chr(c) for c in range(128)] + ["é", "中", "✓", "🚀", "\u2028", "\u2029", "\ufeff", "\U0010ffff"]
    for _ in range(300):
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 60)))
        recipients = [avro_recipient(text or "1", template_params={text: text}, payload=[text, "x"])]
        expected = json.dumps([sender_entry(r) for r in recipients], ensure_ascii=False, separators=(",", ":"))
        assert build_query(make_key(), recipients)["SenderList"] == expected
