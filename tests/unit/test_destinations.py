"""consumer.destinations: which topics a request's reply-to header may name."""

from __future__ import annotations

from consumer.destinations import ReplyDestinations

FORBIDDEN = ("chatapp.send-requests", "chatapp.send-requests.dlq")


def test_by_default_only_the_configured_reply_topic() -> None:
    destinations = ReplyDestinations("chatapp.send-results", None, FORBIDDEN)
    assert destinations.allowed("chatapp.send-results")
    for topic in ("team-a.results", "chatapp.send-requests", "__consumer_offsets", "", "x" * 300):
        assert not destinations.allowed(topic), topic


def test_a_pattern_allows_legal_names_it_matches_but_never_internal_or_input_topics() -> None:
    destinations = ReplyDestinations("chatapp.send-results", r".*", FORBIDDEN)
    assert destinations.allowed("team-a.results")
    assert destinations.allowed("chatapp.send-results")
    for topic in ("__consumer_offsets", "__transaction_state", *FORBIDDEN, "bad name", "a/b", ".", "..", "t" * 250, "héllo"):
        assert not destinations.allowed(topic), topic
    narrow = ReplyDestinations("chatapp.send-results", r"team-[a-z]+\.results", FORBIDDEN)
    assert narrow.allowed("team-a.results")
    assert not narrow.allowed("team-a.results.x")  # the whole name must match
    assert not narrow.allowed("other.results")
