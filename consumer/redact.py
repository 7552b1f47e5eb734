"""Credentials out of text: the one redaction used by config, check-config, error lines and logs.

A URL's user-info keeps its user name and loses its password (``redis://app:***@host``); a
user-info without a colon is a token and goes whole (``https://***@host``). Everything before
the URL's last ``@`` counts as user-info, so a password holding ``/``, ``?`` or ``#`` is hidden
too (at worst a path or query holding ``@`` is hidden with it). Without an ``@``, a "port" that
is not a number is taken for a password whose host was forgotten (``redis://app:pw/0``). Query
parameters whose names say they hold a secret (``password``, ``token``, ``sig``, ``key``...)
keep their names only. The same names mark the librdkafka options whose values are hidden.
"""

from __future__ import annotations

import re
from typing import overload

SECRET_WORDS = ("secret", "password", "passwd", "token", "signature", "credential", "apikey", "api_key", "sasl.oauthbearer.config")
"""A name containing one of these holds a secret."""
SECRET_PARTS = frozenset({"key", "sig", "pass", "pwd", "pw", "auth"})
"""A name with one of these as a whole part (between dots, dashes, underscores) holds a secret."""
HIDDEN = "***"

_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]*""")
_QUERY_PARAMETER = re.compile(r"([?&;])([^=&#;?]*)=([^&#;]*)")


def is_secret_name(name: str) -> bool:
    """Whether a setting, option or query parameter called ``name`` holds a secret."""
    lower = name.lower()
    return any(word in lower for word in SECRET_WORDS) or not SECRET_PARTS.isdisjoint(re.split(r"[^a-z0-9]+", lower))


def _hidden_query(match: re.Match[str]) -> str:
    sep, name, _ = match.groups()
    return f"{sep}{name}={HIDDEN}" if is_secret_name(name) else match.group(0)


@overload
def redact_url(url: str) -> str: ...
@overload
def redact_url(url: None) -> None: ...
@overload
def redact_url(url: str | None) -> str | None: ...


def redact_url(url: str | None) -> str | None:
    """``url`` without its password, token or secret query parameters (never raises); its
    scheme may be missing (``user:password@host``)."""
    if not url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = (f"{user}:{HIDDEN}" if colon else HIDDEN) + at + after
    else:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        host, colon, port = authority.rpartition(":")
        if colon and port and not port.isdigit() and "]" not in port:
            rest = f"{host}:{HIDDEN}" + rest[len(authority) :]
    return scheme + sep + _QUERY_PARAMETER.sub(_hidden_query, rest)


def redact_text(text: str) -> str:
    """``text`` with every URL in it (``scheme://...``) redacted: an error message, a log line."""
    return _URL.sub(lambda m: redact_url(m.group()), text) if "://" in text else text
