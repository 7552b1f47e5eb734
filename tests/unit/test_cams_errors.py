"""consumer.cams.errors: the outcome of a call from its HTTP status, Code and x-acs-retry-after."""

from __future__ import annotations

import pytest

from consumer.cams.errors import (
    CODE_BAD_RESPONSE,
    CODE_CONNECTION_ERROR,
    CODE_TIMEOUT,
    Outcome,
    classify,
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        # OK only with Code OK on a 2xx
        (200, "OK", Outcome.OK),
        (200, "Template.NotFound", Outcome.PERMANENT),
        (200, None, Outcome.PERMANENT),
        (400, "OK", Outcome.PERMANENT),
        (500, "OK", Outcome.TRANSIENT),
        # throttling
        (400, "System.LimitControl", Outcome.THROTTLED),
        (400, "Throttling", Outcome.THROTTLED),
        (400, "Throttling.User", Outcome.THROTTLED),
        (503, "Throttling.Api", Outcome.THROTTLED),
        (429, None, Outcome.THROTTLED),
        (429, "Whatever", Outcome.THROTTLED),
        # transient
        (500, "InternalError", Outcome.TRANSIENT),
        (500, "InternalError.Database", Outcome.TRANSIENT),
        (503, "ServiceUnavailable", Outcome.TRANSIENT),
        (200, "ServiceUnavailable", Outcome.TRANSIENT),
        (504, "ServiceTimeout", Outcome.TRANSIENT),
        (400, "SignatureNonceUsed", Outcome.TRANSIENT),
        (502, None, Outcome.TRANSIENT),
        (500, "SomethingNew", Outcome.TRANSIENT),
        (408, None, Outcome.TRANSIENT),
        (None, None, Outcome.TRANSIENT),
        (None, CODE_TIMEOUT, Outcome.TRANSIENT),
        (None, CODE_CONNECTION_ERROR, Outcome.TRANSIENT),
        (200, CODE_BAD_RESPONSE, Outcome.TRANSIENT),
        (403, CODE_BAD_RESPONSE, Outcome.TRANSIENT),
        # permanent: the documented codes, auth and signature errors, unknown 4xx
        (400, "Ram.PermissionDeny", Outcome.PERMANENT),
        (403, "Ram.PermissionDenied", Outcome.PERMANENT),
        (400, "Product.Unsubscript", Outcome.PERMANENT),
        (400, "Unknown.ResourceOwnerId", Outcome.PERMANENT),
        (400, "SignatureDoesNotMatch", Outcome.PERMANENT),
        (404, "InvalidAccessKeyId.NotFound", Outcome.PERMANENT),
        (400, "InvalidAccessKeyId.Inactive", Outcome.PERMANENT),
        (400, "InvalidSecurityToken.Expired", Outcome.PERMANENT),
        (400, "InvalidTimeStamp.Expired", Outcome.PERMANENT),
        (400, "IncompleteSignature", Outcome.PERMANENT),
        (400, "MissingSecurityToken", Outcome.PERMANENT),
        (403, "Forbidden.RAM", Outcome.PERMANENT),
        (403, "Forbidden", Outcome.PERMANENT),
        (404, "InvalidAction.NotFound", Outcome.PERMANENT),
        (400, "NoPermission", Outcome.PERMANENT),
        (400, "Template.NotFound", Outcome.PERMANENT),
        (404, None, Outcome.PERMANENT),
        (302, None, Outcome.PERMANENT),
        # the batch's content was rejected: split it
        (400, "MissingParameter", Outcome.INVALID_REQUEST),
        (400, "MissingSenderList", Outcome.INVALID_REQUEST),
        (400, "InvalidParameter", Outcome.INVALID_REQUEST),
        (400, "InvalidParameter.SenderList", Outcome.INVALID_REQUEST),
        (400, "InvalidParam.Format", Outcome.INVALID_REQUEST),
        (400, "Invalid.Param", Outcome.INVALID_REQUEST),
        (200, "Parameter.Invalid", Outcome.INVALID_REQUEST),
        (400, "IllegalParam", Outcome.INVALID_REQUEST),
        (413, None, Outcome.INVALID_REQUEST),
        (414, CODE_BAD_RESPONSE, Outcome.INVALID_REQUEST),
    ],
)
def test_classify(status: int | None, code: str | None, expected: Outcome) -> None:
    assert classify(status, code) is expected


@pytest.mark.parametrize("code", ["Ram.PermissionDeny", "InvalidParameter", "Template.NotFound", None])
def test_positive_retry_after_means_throttled(code: str | None) -> None:
    assert classify(400, code, retry_after_s=2.0) is Outcome.THROTTLED


@pytest.mark.parametrize("retry_after_s", [None, 0.0, -1.0])
def test_non_positive_retry_after_is_ignored(retry_after_s: float | None) -> None:
    assert classify(400, "Ram.PermissionDeny", retry_after_s=retry_after_s) is Outcome.PERMANENT


def test_ok_wins_over_retry_after() -> None:
    assert classify(200, "OK", retry_after_s=1.0) is Outcome.OK


def test_outcome_values_are_their_names() -> None:
    assert [o.value for o in Outcome] == ["OK", "THROTTLED", "TRANSIENT", "PERMANENT", "INVALID_REQUEST"]
