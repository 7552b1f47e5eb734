"""``CHATAPP_*`` variables the service does not read, each with the settings it may have meant.

A misspelled setting (``CHATAPP_RATE_LIMIT=5``) would otherwise be ignored without a word and
the default used. Not a refusal: a deployment may carry variables of another version; ``run``
logs each at WARNING and ``check-config`` prints them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from .config_checks import KAFKA_OPT_PREFIXES
from .worker_link import ENV_COUNT, ENV_INDEX, ENV_LIMITER, ENV_LIMITER_KEY, ENV_PARENT

PREFIX = "CHATAPP_"
READ_ELSEWHERE = frozenset({"CHATAPP_CONFIG", ENV_INDEX, ENV_COUNT, ENV_PARENT, ENV_LIMITER, ENV_LIMITER_KEY})
"""Variables read besides the settings: the TOML file's path, what a supervisor tells a worker."""
ACCOUNT_VARIABLE_KEYS = ("access_key_secret_env", "security_token_env")
"""Keys of an ``[accounts.NAME]`` table that name a variable to read (it may start with CHATAPP_)."""


def _named_by_accounts(accounts: Mapping[str, Any]) -> set[str]:
    return {str(table[key]) for table in accounts.values() if isinstance(table, Mapping) for key in ACCOUNT_VARIABLE_KEYS if key in table}


def suggestions(name: str, known: Sequence[str]) -> list[str]:
    """Up to two settings ``name`` may have meant: the ones it begins (in the settings' order),
    then the closest spellings."""
    extending = [k for k in known if k.startswith(name + "_")][:2]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.8)
    return list(dict.fromkeys(extending + close))[:2]


def unknown_variables(env: Mapping[str, str], known: Sequence[str], accounts: Mapping[str, Any]) -> list[str]:
    """One line per ``CHATAPP_*`` variable of ``env`` that is no setting (``known``), no
    librdkafka pass-through option and no variable an account names, with a did-you-mean."""
    read = set(known) | READ_ELSEWHERE | _named_by_accounts(accounts)
    prefixes = tuple(KAFKA_OPT_PREFIXES.values())
    lines = []
    for name in sorted(env):
        if not name.startswith(PREFIX) or name in read or any(name.startswith(p) and len(name) > len(p) for p in prefixes):
            continue
        hint = suggestions(name, known)
        meant = f" (did you mean {' or '.join(hint)}?)" if hint else " (every setting: docs/configuration.md)"
        lines.append(f"{name}: not a setting, ignored{meant}")
    return lines
