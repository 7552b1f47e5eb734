"""The error answers of the local CAMS endpoint: one exception type and the gateway's messages."""

from __future__ import annotations

# Messages the real gateway and CAMS use for the codes this endpoint answers with.
MESSAGES: dict[str, str] = {
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
    "SignatureDoesNotMatch": "Specified signature does not match our calculation.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "InvalidTimeStamp.Format": "Specified time stamp or date value is not well formatted.",
    "MissingSecurityToken": "SecurityToken is mandatory for this action.",
    "InvalidSecurityToken.MismatchWithAccessKey": "Specified SecurityToken mismatch with the AccessKey.",
    "InvalidAction.NotFound": "Specified api is not found, please check your url and method.",
    "InvalidVersion": "Specified parameter Version is not valid.",
    "InvalidParameter": "The specified parameter is not valid.",
    "MissingParameter": "A required parameter is not specified.",
    "System.LimitControl": "The system is under flow control.",
    "InternalError": "The request processing has failed due to some unknown error.",
    "GatewayTimeout": "The request has timed out.",
    "Product.Unsubscript": "You have not subscribed to the specified product.",
    "Ram.PermissionDeny": "You are not authorized to perform the operation.",
    "Unknown.ResourceOwnerId": "The resource does not belong to the current user.",
    "Template.NotFound": "The specified template does not exist.",
}


def message_for(code: str) -> str:
    """The usual message for ``code`` (a generic one for codes not in the table)."""
    return MESSAGES.get(code, f"Injected error {code}.")


class ApiError(Exception):
    """A call rejected with an HTTP status and a ``{"Code", "Message", "RequestId"}`` body."""

    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message if message is not None else message_for(code)
        super().__init__(f"{status} {code}: {self.message}")
