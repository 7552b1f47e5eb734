"""consumer.validate: every rejection rule with its message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from chatapp_devkit.samples import request_record

from consumer.codec import PlainAvroCodec
from consumer.request_reader import from_record
from consumer.validate import Validator

ACCOUNTS = frozenset({"default", "acme"})
PHONE_MSG = "is not a phone number (6-15 digits, optional +)"


def record(numbers: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    rec = request_record("req-1", "order_shipped", "en", numbers or ["8613900000001"])
    assert set(fields) <= set(rec), sorted(set(fields) - set(rec))
    rec.update(fields)
    return rec


def recipient(to: str, **fields: Any) -> dict[str, Any]:
    entry = {"to": to, "recipient_type": None, "template_params": {}, "payload": [], "product_action": None, "flow_action": None}
    entry.update(fields)
    return entry


def check(rec: dict[str, Any]) -> list[str]:
    return Validator(ACCOUNTS).problems(from_record(rec))


def test_valid_record_has_no_problems() -> None:
    assert check(record()) == []


def test_valid_record_survives_an_avro_roundtrip() -> None:
    codec = PlainAvroCodec()
    decoded = codec.decode(codec.encode_request(record(expires_at=datetime(2026, 1, 1, tzinfo=UTC))))
    assert check(decoded) == []


# -- request id / account ---------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["", "x" * 129])
def test_request_id_length(request_id: str) -> None:
    rec = record()
    rec["request_id"] = request_id
    assert check(rec) == ["request_id must be 1-128 characters"]


def test_request_id_of_128_characters_is_fine() -> None:
    rec = record()
    rec["request_id"] = "x" * 128
    assert check(rec) == []


def test_unknown_account() -> None:
    assert check(record(account="nope")) == ["account 'nope' is not configured"]


def test_named_account_is_accepted() -> None:
    assert check(record(account="acme")) == []


def test_null_account_means_default() -> None:
    assert check(record(account=None)) == []
    assert Validator({"acme"}).problems(from_record(record(account=None))) == ["account 'default' is not configured"]


def test_empty_account_means_default() -> None:
    assert check(record(account="")) == []


# -- channel / template / language / sender -------------------------------------------------------


def test_unknown_channel() -> None:
    assert check(record(channel_type="sms")) == ["channel_type must be one of instagram, messenger, viber, whatsapp"]


@pytest.mark.parametrize("channel", ["whatsapp", "viber"])
def test_phone_channels_accept_phone_numbers(channel: str) -> None:
    assert check(record(channel_type=channel)) == []


@pytest.mark.parametrize("channel", ["messenger", "instagram"])
def test_non_phone_channels_accept_any_address(channel: str) -> None:
    assert check(record(["page-scoped-user-1", "psid_2"], channel_type=channel, from_number="page-123")) == []


def test_template_code_or_name_is_required() -> None:
    assert check(record(template_code=None, template_name=None)) == ["template_code or template_name is required"]
    assert check(record(template_code="", template_name="")) == ["template_code or template_name is required"]


def test_template_name_alone_is_enough() -> None:
    assert check(record(template_code=None, template_name="welcome")) == []


def test_language_is_required() -> None:
    assert check(record(language="")) == ["language is required"]


@pytest.mark.parametrize("sender", ["", "12345", "abc", "08613800000000", "86138000000001234", "+", "86 13800000000"])
def test_from_number_must_be_a_phone_on_phone_channels(sender: str) -> None:
    assert check(record(from_number=sender)) == [f"from_number {PHONE_MSG}"]


def test_from_number_is_required_on_other_channels() -> None:
    assert check(record(["user-1"], channel_type="messenger", from_number="")) == ["from_number is required"]


# -- phone formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["123456", "8613800000001", "+8613800000001", "123456789012345", "+123456789012345", "441234567890"],
)
def test_valid_phone_numbers(number: str) -> None:
    assert check(record([number])) == []


@pytest.mark.parametrize(
    "number",
    [
        "",  # empty
        "12345",  # 5 digits
        "1234567890123456",  # 16 digits
        "0123456789",  # leading zero
        "+0123456789",
        "++8613800000001",
        "+",
        "86-138-0000-0001",
        "86 13800000001",
        " 8613800000001",
        "8613800000001 ",
        "8613800000001\n",
        "86138OOOOOO01",  # letters O
        "８６１３８００００００１",  # full-width digits
    ],
)
def test_invalid_phone_numbers(number: str) -> None:
    assert check(record([number])) == [f"recipients[0].to {PHONE_MSG}"]


def test_phone_problem_names_the_recipient_index() -> None:
    assert check(record(["8613800000001", "8613800000002", "bad"])) == [f"recipients[2].to {PHONE_MSG}"]


@pytest.mark.parametrize("address", ["", "x" * 65])
def test_non_phone_address_length(address: str) -> None:
    rec = record(["ok-user", address], channel_type="instagram", from_number="page-1")
    assert check(rec) == ["recipients[1].to must be 1-64 characters"]


def test_non_phone_address_of_64_characters_is_fine() -> None:
    assert check(record(["x" * 64], channel_type="instagram", from_number="page-1")) == []


# -- fallback / viber fields ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["undelivered", "sentFailed", None])
def test_valid_fallback_rules(rule: str | None) -> None:
    assert check(record(fallback_rule=rule)) == []


@pytest.mark.parametrize("rule", ["", "Undelivered", "sent_failed", "always"])
def test_invalid_fallback_rule(rule: str) -> None:
    assert check(record(fallback_rule=rule)) == ["fallback_rule must be undelivered or sentFailed"]


@pytest.mark.parametrize("duration", [60, 61, 3600, 43_199, 43_200, None])
def test_fallback_duration_within_bounds(duration: int | None) -> None:
    assert check(record(fallback_duration_s=duration)) == []


@pytest.mark.parametrize("duration", [-1, 0, 59, 43_201, 86_400])
def test_fallback_duration_out_of_bounds(duration: int) -> None:
    assert check(record(fallback_duration_s=duration)) == [f"fallback_duration_s must be between 60 and 43200 (got {duration})"]


@pytest.mark.parametrize("label", ["pormotion", "transaction", None])
def test_valid_labels(label: str | None) -> None:
    assert check(record(channel_type="viber", label=label)) == []


@pytest.mark.parametrize("label", ["promotion", "", "Transaction"])
def test_invalid_label(label: str) -> None:
    assert check(record(channel_type="viber", label=label)) == ["label must be pormotion or transaction"]


@pytest.mark.parametrize("ttl", [30, 31, 86_400, 1_209_600, None])
def test_valid_ttl(ttl: int | None) -> None:
    assert check(record(channel_type="viber", ttl_s=ttl)) == []


@pytest.mark.parametrize("ttl", [29, 0, -5, 1_209_601, 2**31 - 1, 9223372036854775868, -(2**63)])
def test_ttl_out_of_range(ttl: int) -> None:
    assert check(record(channel_type="viber", ttl_s=ttl)) == [f"ttl_s must be between 30 and 1209600 (got {ttl})"]


# -- recipients -------------------------------------------------------------------------------------


def numbers(count: int) -> list[str]:
    return [f"86139{i:08d}" for i in range(count)]


def test_zero_recipients() -> None:
    rec = record()
    rec["recipients"] = []
    assert check(rec) == ["recipients must hold 1-1000 entries (got 0)"]


@pytest.mark.parametrize("count", [1, 1000])
def test_recipient_count_within_bounds(count: int) -> None:
    assert check(record(numbers(count))) == []


def test_1001_recipients() -> None:
    assert check(record(numbers(1001))) == ["recipients must hold 1-1000 entries (got 1001)"]


def test_duplicate_numbers() -> None:
    rec = record(["8613900000001", "8613900000002", "8613900000001"])
    assert check(rec) == ["recipients[2].to repeats an earlier recipient of this request"]


def test_each_repeat_is_reported() -> None:
    rec = record(["8613900000001"] * 3)
    assert check(rec) == [
        "recipients[1].to repeats an earlier recipient of this request",
        "recipients[2].to repeats an earlier recipient of this request",
    ]


def test_too_many_template_params() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", template_params={f"k{i}": "v" for i in range(101)})]
    assert check(rec) == ["recipients[0].template_params has 101 entries (max 100)"]


def test_100_template_params_are_fine() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", template_params={f"k{i}": "v" for i in range(100)})]
    assert check(rec) == []


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ({"name": "v" * 1025}, "'name'"),
        ({"k" * 129: "v"}, repr("k" * 64)[:63] + "…"),
    ],
)
def test_oversized_template_param(params: dict[str, str], shown: str) -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", template_params=params)]
    assert check(rec) == [f"recipients[0].template_params[{shown}] is too long (key 128, value 1024 characters max)"]


def test_template_param_at_the_limits_is_fine() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", template_params={"k" * 128: "v" * 1024})]
    assert check(rec) == []


def test_only_the_first_oversized_param_of_a_recipient_is_reported() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", template_params={"a": "v" * 2000, "b": "v" * 2000})]
    assert len(check(rec)) == 1


@pytest.mark.parametrize("payload", [["p"] * 11, ["p", "x" * 1025]])
def test_oversized_payload(payload: list[str]) -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", payload=payload)]
    assert check(rec) == ["recipients[0].payload: at most 10 entries of 1024 characters"]


def test_payload_at_the_limits_is_fine() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", payload=["x" * 1024] * 10)]
    assert check(rec) == []


def test_every_problem_is_reported_in_field_order() -> None:
    rec = record(
        ["bad", "bad"],
        account="nope",
        channel_type="whatsapp",
        template_code=None,
        language="",
        from_number="1",
        fallback_rule="x",
        fallback_duration_s=5,
        label="y",
        ttl_s=1,
    )
    rec["request_id"] = ""
    assert check(rec) == [
        "request_id must be 1-128 characters",
        "account 'nope' is not configured",
        "template_code or template_name is required",
        "language is required",
        f"from_number {PHONE_MSG}",
        "fallback_rule must be undelivered or sentFailed",
        "fallback_duration_s must be between 60 and 43200 (got 5)",
        "label must be pormotion or transaction",
        "ttl_s must be between 30 and 1209600 (got 1)",
        f"recipients[0].to {PHONE_MSG}",
        "...",
    ]


def test_recipient_problems_are_capped() -> None:
    out = check(record([f"bad{i}" for i in range(500)]))
    assert out[-1] == "..."
    assert out[:-1] == [f"recipients[{i}].to {PHONE_MSG}" for i in range(10)]


def test_request_level_problems_are_remembered_per_key_and_do_not_leak_between_requests() -> None:
    validator = Validator(ACCOUNTS, max_keys=2)
    bad_key = from_record(record(language=""))
    assert validator.problems(bad_key) == ["language is required"]
    bad_id = record(language="")
    bad_id["request_id"] = ""
    assert validator.problems(from_record(bad_id)) == ["request_id must be 1-128 characters", "language is required"]
    assert validator.problems(bad_key) == ["language is required"]  # the cached list was not extended
    for language in ("de", "fr", "it"):  # more keys than remembered: the cache starts again
        assert validator.problems(from_record(record(language=language))) == []
    assert validator.problems(bad_key) == ["language is required"]


# -- issue 18: canonical numbers, unsafe characters, a limit on every field -------------------------

UNSAFE_CHARACTERS = ["\x00", "\n", "\x1b", "\x7f", "\x85", "\u061c", "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069"]


@pytest.mark.parametrize("channel", ["whatsapp", "viber"])
def test_a_number_with_and_without_plus_is_one_recipient(channel: str) -> None:
    assert check(record(["+8613933330003", "8613933330003"], channel_type=channel)) == ["recipients[1].to repeats an earlier recipient of this request"]


def test_plus_is_part_of_the_address_on_other_channels() -> None:
    assert check(record(["+user-1", "user-1"], channel_type="messenger", from_number="page-1")) == []


@pytest.mark.parametrize("channel", sorted(["whatsapp", "viber", "messenger", "instagram"]))
@pytest.mark.parametrize("char", UNSAFE_CHARACTERS)
def test_control_and_bidirectional_characters_are_refused_in_to_on_every_channel(channel: str, char: str) -> None:
    problems = check(record([f"86139{char}00000001"], channel_type=channel, from_number="8613800000000"))
    assert problems in ([f"recipients[0].to {PHONE_MSG}"], ["recipients[0].to holds a control or bidirectional character"])


@pytest.mark.parametrize("char", UNSAFE_CHARACTERS)
@pytest.mark.parametrize("field", ["request_id", "account", "template_code", "template_name", "language", "fallback_id", "task_id", "cust_space_id", "tag"])
def test_control_and_bidirectional_characters_are_refused_in_ids(field: str, char: str) -> None:
    assert check(record(**{field: f"a{char}b"})) == [f"{field} holds a control or bidirectional character"]


def test_control_characters_are_refused_in_a_non_phone_sender() -> None:
    assert check(record(["user-1"], channel_type="messenger", from_number="page\u202e1")) == ["from_number holds a control or bidirectional character"]


def test_free_text_may_hold_line_breaks() -> None:
    assert check(record(fallback_content="line 1\nline 2")) == []


@pytest.mark.parametrize(
    ("field", "limit"),
    [("account", 128), ("template_code", 128), ("template_name", 512), ("language", 35), ("fallback_id", 128),
     ("fallback_content", 1024), ("task_id", 128), ("cust_space_id", 128), ("tag", 128)],
)  # fmt: skip
def test_every_request_level_string_has_a_limit(field: str, limit: int) -> None:
    at_limit = [f"account {repr('a' * 64)[:63]}… is not configured"] if field == "account" else []
    assert check(record(**{field: "a" * limit})) == at_limit
    assert check(record(**{field: "a" * (limit + 1)})) == [f"{field} is {limit + 1} characters (max {limit})"]


def test_a_huge_unconfigured_account_gives_a_short_message() -> None:
    assert check(record(account="a" * 300_000)) == ["account is 300000 characters (max 128)"]
    assert check(record(account="é" * 100)) == [f"account {repr('é' * 64)[:63]}… is not configured"]


def test_a_non_phone_sender_has_a_limit() -> None:
    assert check(record(["user-1"], channel_type="messenger", from_number="p" * 65)) == ["from_number is 65 characters (max 64)"]


def test_recipient_type_has_a_limit() -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", recipient_type="t" * 129)]
    assert check(rec) == ["recipients[0].recipient_type is 129 characters (max 128)"]


def product(sections: int, items: int, title: str = "S") -> dict[str, Any]:
    return {"thumbnail_product_retailer_id": None,
            "sections": [{"title": title, "product_items": [{"product_retailer_id": f"p{i}"} for i in range(items)]} for _ in range(sections)]}  # fmt: skip


@pytest.mark.parametrize(("action", "ok"), [(product(10, 3), True), (product(11, 0), False), (product(2, 16), False), (product(1, 1, "t" * 129), False)])
def test_product_action_limits(action: dict[str, Any], ok: bool) -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", product_action=action)]
    assert check(rec) == ([] if ok else ["recipients[0].product_action: at most 10 sections and 30 products, titles and ids of 128 characters"])


@pytest.mark.parametrize(
    ("action", "problem"),
    [({"flow_token": "t" * 1024, "flow_action_data": {"k": "v"}}, None),
     ({"flow_token": "t" * 1025, "flow_action_data": {}}, "flow_token is 1025 characters (max 1024)"),
     ({"flow_token": None, "flow_action_data": {f"k{i}": "v" for i in range(101)}}, "flow_action_data has 101 entries (max 100)")],
)  # fmt: skip
def test_flow_action_limits(action: dict[str, Any], problem: str | None) -> None:
    rec = record()
    rec["recipients"] = [recipient("8613900000001", flow_action=action)]
    assert check(rec) == ([] if problem is None else [f"recipients[0].flow_action.{problem}"])


def test_the_whole_request_has_a_byte_limit() -> None:
    validator = Validator(ACCOUNTS)
    assert validator.problems(from_record(record(), 1_048_576)) == []
    assert validator.problems(from_record(record(), 1_048_577)) == ["the request is 1048577 bytes (max 1048576)"]


def test_a_rejected_message_stays_short_whatever_the_fields_hold() -> None:
    huge = "\u202e" * 300_000
    rec = record(
        [huge, huge],
        **{f: huge for f in ("account", "template_code", "template_name", "language", "fallback_id", "fallback_content", "task_id", "cust_space_id", "tag")},
    )
    rec["request_id"] = huge
    rec["recipients"][0]["template_params"] = {huge: huge}
    assert len("; ".join(check(rec))) < 2000
